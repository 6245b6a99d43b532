"""apps/explore.py under Streamlit's AppTest: the page runs and reacts to its widgets."""

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "apps" / "explore.py")


@pytest.fixture(scope="module")
def app():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


def test_page_runs_and_explains_test_digit_42(app):
    """The default page explains test image 42 (a 4) with the CNN, without exceptions."""
    assert not app.exception
    metric = app.metric[0]
    assert metric.label == "True label 4" and metric.value == "predicted 4"
    assert len(app.get("image")) == 4  # explanation, class maps, filters, unit profile
    assert any("deletion area" in c.value for c in app.caption)


def test_changing_the_index_changes_the_digit(app):
    """Index 0 is a 7: the metric follows the number input."""
    app.number_input(key="index").set_value(0).run()
    assert not app.exception
    assert app.metric[0].label == "True label 7" and app.metric[0].value == "predicted 7"


def test_other_model_and_target(app):
    """The linear model has no conv layer: Grad-CAM is skipped with the registry's
    reason, not an error."""
    app.selectbox(key="model").set_value("linear.pt").run()
    app.selectbox(key="target").set_value(3).run()
    assert not app.exception
    assert any("Grad_cam needs a convolutional layer" in i.value for i in app.info)
    assert any("linear model" in c.value for c in app.caption)


def test_contrast_adds_a_why_this_rather_than_that_figure():
    """Choosing a contrast class adds one figure to the explanation tab."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    before = len(at.get("image"))
    at.selectbox(key="contrast").set_value(9).run()
    assert not at.exception
    assert len(at.get("image")) == before + 1
