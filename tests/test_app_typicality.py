"""The explorer's Explain page gives every digit its verdict, and warns above the maps of
one that does not look like a digit (the maps still shown, each marked)."""

import pytest

pytest.importorskip("streamlit")

from test_app import main_images, open_app  # noqa: E402

pytestmark = pytest.mark.slow  # whole pages, a second or more each


def verdict_captions(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Digit-like:")]


def test_a_typical_digit_gets_its_verdict_and_no_warning():
    """Test image 42 (a 4) is digit-like: the verdict under the probabilities, no warning."""
    at = open_app()
    (caption,) = verdict_captions(at)
    assert caption.startswith("Digit-like: yes") and "mahalanobis@relu3" in caption
    assert not any("Not digit-like" in w.value for w in at.warning)
    assert not any("not a digit?" in m.value for m in at.markdown)


def test_an_atypical_input_is_warned_about_above_its_maps():
    """Test image 18 is among the 5% least typical digits the CNN sees (percentile 100):
    a warning above the maps, which are still all shown and each marked."""
    at = open_app(index="18")
    assert not at.exception
    (caption,) = verdict_captions(at)
    assert caption.startswith("Digit-like: **no**")
    (warning,) = [w for w in at.warning if "Not digit-like" in w.value]
    assert "outside what it was trained on" in warning.value
    marked = [m for m in at.markdown if "not a digit?" in m.value]
    assert len(marked) == 3  # saliency, IG, Grad-CAM: the default maps, all shown
    assert len(main_images(at)) == 5
