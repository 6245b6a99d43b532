"""The explorer's own pictures (apps/charts.py) that `mnistlens.plots` does not draw."""

import importlib
import re

import pytest
import torch


@pytest.fixture
def charts(apps_on_path):
    return importlib.import_module("charts")


def test_the_probability_bars_are_as_tall_as_the_probabilities(charts):
    """One bar per digit, in digit order, its height proportional to its probability,
    its exact share in its tooltip; the shares of 5% or more written above their bars."""
    probs = torch.tensor([0.02, 0.0, 0.6, 0.0, 0.3, 0.0, 0.0, 0.08, 0.0, 0.0])
    html = charts.probability_bars(probs, height=150)
    titles = re.findall(r'title="(\d): ([\d.]+)%"', html)
    assert [int(d) for d, _ in titles] == list(range(10))
    assert [float(s) for _, s in titles] == pytest.approx((probs * 100).tolist(), abs=0.05)
    heights = torch.tensor([float(h) for h in re.findall(r"height:([\d.]+)px;background", html)])
    assert heights.shape == (10,) and heights.max() <= 150
    assert heights.tolist() == pytest.approx((probs / probs[2] * heights[2]).tolist(), abs=0.1)
    above = re.findall(r'<span style="font-size:0.75em">([^<]*)</span>', html)
    assert above == ["", "", "60.0%", "", "30.0%", "", "", "8.0%", "", ""]
    assert "2: 60.0%" in html.split('aria-label="', 1)[1].split('"', 1)[0]
