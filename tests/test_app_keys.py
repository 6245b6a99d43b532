"""The explorer's caches keep digits apart: results are cached by the digit's name
(`sidebar.Choice.digit`), so two different drawings must never share one."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")

# Importing the explorer's modules imports Streamlit: seconds the quick core does without.
pytestmark = pytest.mark.slow

APPS = Path(__file__).resolve().parent.parent / "apps"


@pytest.fixture(scope="module")
def sidebar():
    sys.path.insert(0, str(APPS))
    try:
        return importlib.import_module("sidebar")
    finally:
        sys.path.remove(str(APPS))


def choice(sidebar, image, index=None):
    return sidebar.Choice("cnn.pt", None, {}, image, None, index, "")


def test_two_drawings_never_share_a_cache_key(sidebar, test_set):
    """A drawing's key is its pixels': one pixel more ink is another key, the same
    pixels drawn again are the same key, and neither is a test digit's."""
    drawing = test_set[0][7].clone()
    other = drawing.clone()
    other[0, 0, 0] += 1 / 255  # one grey level on one pixel
    key = choice(sidebar, drawing).digit
    assert key != choice(sidebar, other).digit
    assert key == choice(sidebar, drawing.clone()).digit
    assert key.startswith("drawn ") and choice(sidebar, drawing, index=7).digit == "test 7"
    assert choice(sidebar, None).digit == "nothing drawn"


def test_many_drawings_get_as_many_keys(sidebar, test_set):
    images = test_set[0][:500]
    keys = {choice(sidebar, image).digit for image in images}
    assert len(keys) == len(torch.unique(images.flatten(1), dim=0))
