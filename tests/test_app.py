"""The explorer (apps/explore.py and its pages) under Streamlit's AppTest.

Each test opens the router as a user would (AppTest.from_file on apps/explore.py,
then switch_page), reaches widgets by key, and states the behaviour it checks.
Streamlit's caches live in this process, so later tests reuse what earlier ones
computed (the maps of test digit 42, sanity verdicts, activation profiles).
"""

import importlib
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APPS = Path(__file__).resolve().parent.parent / "apps"
APP = str(APPS / "explore.py")

# Every test runs whole pages, a second or more each: not in the quick core.
pytestmark = pytest.mark.slow


def apps_module(name: str):
    """One of the explorer's modules: the same object its runs import (Streamlit puts
    apps/ on sys.path while a run imports them; sys.modules keeps them)."""
    sys.path.insert(0, str(APPS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(APPS))


def open_app(page: str | None = None, **query) -> AppTest:
    """The app after its first run (with these query parameters), on `page`."""
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception
    return at


def main_images(at: AppTest) -> list:
    return list(at.main.get("image"))


def section(at: AppTest, heading: str, kind: str) -> list:
    """The main area's elements of one kind ("image", "caption", ...) under the subheader
    `heading`, up to the next subheader, in page order."""
    found, inside = [], False
    for node in at.main:  # every block and element, depth first
        if node.type == "subheader":
            inside = node.value == heading
        elif inside and node.type == kind:
            found.append(node)
    return found


@pytest.fixture(scope="module")
def app():
    return open_app()


def map_notes(at) -> list:
    """The text under each map of the Explain page (one markdown element per map)."""
    return [m for m in at.markdown if "sanity: " in m.value]


def test_explain_page_explains_test_digit_42(app):
    """The default page explains test image 42 (a 4): three maps, numbers, sanity verdicts."""
    metric = app.metric[0]
    assert metric.label == "True label 4" and metric.value == "predicted 4"
    # the digit, three maps, the invariance strip (no counterfactual until asked for)
    assert len(main_images(app)) == 5
    assert any("deletion area" in c.value for c in app.caption)
    notes = map_notes(app)  # under each map: its name, scale, numbers and sanity verdict
    assert len(notes) == 3 and all("sanity: **pass**" in m.value for m in notes)
    assert all("deletion " in m.value and "(random " in m.value for m in notes)
    assert all("re-initialized" in m.proto.help for m in notes)  # the rule as tooltip
    # the probabilities: a bar per digit, the tallest the model's answer
    (chart,) = [h.proto.body for h in app.main.get("html") if "class probabilities" in h.proto.body]
    shares = [float(s) for s in re.findall(r'title="\d: ([\d.]+)%"', chart)]
    assert len(shares) == 10 and max(range(10), key=shares.__getitem__) == 4
    assert sum(shares) == pytest.approx(100, abs=0.5)


def test_default_methods_are_those_that_pass_the_sanity_check(app):
    """On the CNN the default methods are the three that pass: saliency, IG, Grad-CAM."""
    assert app.multiselect(key="methods").value == [
        "saliency",
        "integrated_gradients",
        "grad_cam",
    ]


def test_each_figure_can_be_saved_with_its_numbers(app):
    """The explanation offers its figure as PNG and its numbers as JSON."""
    keys = {button.proto.id.rsplit("-", 1)[-1] for button in app.get("download_button")}
    assert {"explain_png", "explain_json"} <= keys


def test_changing_the_index_changes_the_digit(app):
    """Index 0 is a 7: the verdict follows the number input, and so does the URL."""
    app.number_input(key="index").set_value(0).run()
    assert not app.exception
    assert app.metric[0].label == "True label 7" and app.metric[0].value == "predicted 7"
    assert app.query_params["index"] == "0"


def test_the_linear_model_skips_grad_cam_with_a_note():
    """The linear model skips Grad-CAM with the registry's reason and explains class 3."""
    at = open_app()
    at.selectbox(key="model").set_value("linear.pt").run()
    at.selectbox(key="target").set_value(3).run()
    assert not at.exception
    assert any("Grad_cam needs a convolutional layer" in i.value for i in at.info)
    assert any("linear model" in c.value for c in at.caption)
    assert any("explaining class 3" in s.value for s in at.subheader)


def test_contrast_adds_a_why_this_rather_than_that_map():
    """Choosing a contrast class adds one map to the explanation."""
    at = open_app()
    before = len(main_images(at))
    at.selectbox(key="contrast").set_value(9).run()
    assert not at.exception
    assert len(main_images(at)) == before + 1
    assert any("logit 4 - logit 9" in m.value for m in at.markdown)


def test_a_link_reopens_the_same_view():
    """?model=&index=&methods=&models=&page= reopens that view; the methods and the
    compared models survive page switches; names a link cannot mean are dropped."""
    at = open_app(
        model="mlp.pt",
        index="7",
        methods=["saliency", "ig"],
        models=["linear", "no-such-model", "mlp-32"],
        page="inside",
    )
    assert [h.value for h in at.header] == ["Inside the network"]
    assert at.selectbox(key="model").value == "mlp.pt"
    assert at.number_input(key="index").value == 7
    at.switch_page("views/explain.py").run()
    assert at.multiselect(key="methods").value == ["saliency", "integrated_gradients"]
    assert at.metric[0].label == "True label 9"  # test image 7
    # The Compare page reads its models from here (its own test sets them the same way;
    # the browser test follows such a link to it).
    assert at.session_state["compare_models"] == ["linear", "mlp-32"]
    assert at.query_params == {
        "model": "mlp.pt",
        "index": "7",
        "methods": ["saliency", "integrated_gradients"],
        "models": ["linear", "mlp-32"],
    }


def test_drawing_mode_waits_for_a_drawing():
    """Choosing to draw shows the canvas's hint instead of an explanation."""
    at = open_app()
    at.radio(key="source").set_value("draw your own").run()
    assert not at.exception
    assert any("Nothing drawn yet" in i.value for i in at.info)
    assert not at.metric


def test_inside_page_looks_at_the_chosen_digit(app):
    """Inside shows this digit's feature maps, top units, their top images and dreams."""
    at = open_app("inside", index="42")
    assert "test image 42, predicted **4**" in at.markdown[0].value
    captions = [c for image in main_images(at) for c in image.captions]
    assert any(c.startswith("relu1: 32 maps of 28 x 28, after the ReLU") for c in captions)
    assert any(c.startswith("#") and ": a " in c for c in captions)  # top images, labelled
    assert "class 4" in captions and sum("relu_fc1 unit" in c for c in captions) == 4
    table = at.dataframe[0].value
    assert len(table) == 16 and table["this digit"].is_monotonic_decreasing


def test_inside_page_shows_the_weights_of_a_model_without_conv_layers():
    """Inside, for the linear model: its ten class templates, and no hidden layer."""
    at = open_app("inside", model="linear.pt")
    assert any("Class templates" in s.value for s in at.subheader)
    assert main_images(at)[0].captions == [f"digit {d}" for d in range(10)]
    assert any("no hidden layer" in c.value for c in at.caption)


def test_per_digit_page_shows_a_map_per_digit():
    """Per-digit maps shows ten mean maps, one per digit, and follows the method."""
    at = open_app("class_maps")
    assert main_images(at)[0].captions == [f"digit {d}" for d in range(10)]
    at.selectbox(key="class_method").set_value("grad_cam").run()
    assert not at.exception and "grad cam" in at.caption[0].value


def test_training_page_shows_similar_and_influential_training_images():
    """Training examples shows 8 nearest, 8 proponent and 8 opponent images, labelled."""
    # The MLP's index takes about a second to build, into the test run's temporary
    # cache (conftest), where the browser tests' server finds it (or built it).
    at = open_app("training", model="mlp.pt", index="42")
    rows = [image.captions for image in main_images(at)[1:]]
    assert len(rows) == 3 and all(len(row) == 8 for row in rows)
    assert all(": a " in caption for row in rows for caption in row)
    assert sum(": a 4 " in caption for caption in rows[0]) >= 6  # a 4 looks like 4s


def test_trust_page_ranks_methods_and_flags_guided_backprop():
    """Trust ranks methods against random and flags guided backprop as failing on the CNN."""
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["trust_methods"] = ["saliency", "guided_backprop"]  # quicker than all
    at.session_state["trust_n"] = 50
    at.run()
    at.switch_page("views/trust.py").run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["guided_backprop", "sanity"] == "fail"
    assert table.loc["saliency", "sanity"] == "pass"
    assert "random ranking" in table.index
    assert len(main_images(at)) == 2  # curves, randomization per layer
    assert any("guided backprop: fail" in c.value for c in at.caption)


def test_compare_page_tests_significance_and_shows_a_disagreement_in_every_model(monkeypatch):
    """Compare models: the table, McNemar's test per pair, and one disagreement image
    explained by every chosen model (one colour scale per method), computed once per
    models and image: a rerun that changes neither explains nothing again. LeNet as
    the convolutional model: the page does the same for it as for the CNN, quicker."""
    from mnistlens import series
    from mnistlens.comparison import maps

    lenet_accuracy = series.load_series(only=["lenet"])["lenet"][1]["test_accuracy"]
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["compare_models"] = ["linear", "mlp", "lenet"]
    at.run()
    at.switch_page("views/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("model")
    assert list(table.index) == ["linear", "mlp", "lenet"]
    assert table.loc["lenet", "accuracy"] == f"{lenet_accuracy:.2%}"
    pairs = at.dataframe[1].value
    assert len(pairs) == 3 and set(pairs["significant"]) <= {"yes", "no"}
    assert at.selectbox(key="compare_image").value.startswith("#")
    # Two comparison plots, the pair's maps, the grid, then the stress test's two figures
    # and its examples (test_app_stress.py).
    assert len(main_images(at)) >= 6
    # The pair defaults to the best MLP (A) and the best convolutional model (B); its
    # maps cover exactly the images LeNet gets right and the MLP wrong.
    assert (at.selectbox(key="compare_a").value, at.selectbox(key="compare_b").value) == (
        "mlp",
        "lenet",
    )
    only_b = int(pairs.set_index(["A", "B"]).loc[("mlp", "lenet"), "only B right"])
    assert any(f"The {only_b} test images lenet gets right" in c.value for c in at.caption)

    explained = []
    explain_models = maps.explain_models
    monkeypatch.setattr(
        maps, "explain_models", lambda *a, **k: explained.append(1) or explain_models(*a, **k)
    )
    grid = section(at, "Where they disagree", "image")[0].value
    at.run()  # a rerun: same models, same image
    assert not at.exception and explained == []
    assert section(at, "Where they disagree", "image")[0].value == grid  # the same PNG
    disagreements = at.selectbox(key="compare_image")
    first, second = disagreements.options[:2]
    disagreements.set_value(second).run()  # another image: explained, once
    assert not at.exception and len(explained) == 1
    at.selectbox(key="compare_image").set_value(first).run()  # back: kept from before
    assert not at.exception and len(explained) == 1


def upload(at: AppTest, filename: str, data: bytes) -> None:
    """On the Your model page: choose the file, press Load."""
    at.file_uploader(key="yours_file").set_value((filename, data, "application/octet-stream"))
    at.run()
    at.button(key="yours_load").click().run()
    assert not at.exception


def test_your_model_page_explains_an_uploaded_program(mlp_program):
    """Your model: a .pt2 uploaded and loaded joins this session's model choices and is
    chosen; the page says what was detected and the Explain page explains it."""
    at = open_app("your_model")
    assert any("Upload a file" in i.value for i in at.info)
    upload(at, "mine.pt2", mlp_program.read_bytes())
    name = at.selectbox(key="model").value
    assert name.startswith("yours: mine.pt2 (") and name in at.selectbox(key="model").options
    assert any(name in s.value for s in at.success)
    assert any("torch-export" in m.value for m in at.markdown)
    at.switch_page("views/explain.py").run()
    assert not at.exception
    assert at.metric[0].label == "True label 4" and at.metric[0].value == "predicted 4"
    assert at.query_params["model"] == name


def test_a_session_keeps_only_its_newest_uploads(monkeypatch):
    """Uploads belong to the session that made them, at most session.MAX_UPLOADS of
    them: a further upload drops the oldest (from the sidebar and from memory), and
    another session never sees them."""
    monkeypatch.setattr(apps_module("session"), "MAX_UPLOADS", 2)
    keys = apps_module("keys")
    data = (APPS.parent / "checkpoints" / "linear.pt").read_bytes()  # quick to load
    at = open_app("your_model")
    shipped = at.selectbox(key="model").options
    for filename in ("a.pt", "b.pt", "c.pt"):
        upload(at, filename, data)
    kept = list(at.session_state[keys.UPLOADS])
    assert [n.split(" (")[0] for n in kept] == ["yours: b.pt", "yours: c.pt"]
    assert at.selectbox(key="model").options == shipped + kept
    assert at.selectbox(key="model").value == kept[-1]  # the newest is chosen
    assert open_app().selectbox(key="model").options == shipped


def test_your_model_page_says_which_constructor_argument_is_wrong():
    """A state_dict's constructor arguments are read as `mnistlens train --arch-kwargs`
    reads them; a value it cannot read is named before anything is loaded."""
    at = open_app("your_model")
    at.radio(key="yours_kind").set_value("state_dict of a registered architecture").run()
    at.text_input(key="yours_kwargs").input("hidden=256, dropout=high").run()
    assert not at.exception
    assert any(e.value.startswith("dropout: bad value 'high'") for e in at.error)


def test_two_sessions_never_share_a_model_object():
    """Each session explains with its own copy of the model: a hook set on session A's
    model does not record session B's forward passes (on one shared object, a session's
    activations could come from another session's digit)."""
    choice = apps_module("keys").CHOICE
    a, b = open_app(), open_app()
    model_a, model_b = a.session_state[choice].model, b.session_state[choice].model
    assert model_a is not model_b
    calls = {"a": 0, "b": 0}
    handles = [
        model.register_forward_hook(lambda *_, s=s: calls.__setitem__(s, calls[s] + 1))
        for s, model in (("a", model_a), ("b", model_b))
    ]
    try:
        b.number_input(key="index").set_value(7).run()
    finally:
        for handle in handles:
            handle.remove()
    assert not b.exception and b.metric[0].label == "True label 9"
    assert calls["b"] > 0 and calls["a"] == 0
    a.run()  # A's own view is unchanged by B's choice
    assert a.number_input(key="index").value == 42 and a.metric[0].value == "predicted 4"


def test_sanity_verdicts_are_kept_on_disk_between_server_runs(tmp_path, monkeypatch):
    """The Explain page's verdicts are kept under the user's cache (mnistlens.results),
    and a new process (here: Streamlit's caches cleared) reads them instead of
    recomputing: with one verdict doctored to "fail" on disk, that method is no longer
    a default one."""
    import streamlit as st
    import torch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    st.cache_data.clear()
    open_app()
    files = sorted((tmp_path / "mnistlens" / "results").glob("sanity-*.pt"))
    kept = [torch.load(f, weights_only=True) for f in files]
    assert len(kept) >= 3 and {k["value"]["verdict"] for k in kept} == {"pass"}
    for path, payload in zip(files, kept, strict=True):
        verdict = payload["value"]
        if verdict["correlation"] < 0.3:  # doctor one (saliency's or Grad-CAM's)
            doctored = {**verdict, "verdict": "fail", "correlation": 0.99}
            torch.save({**payload, "value": doctored}, path)
            break
    st.cache_data.clear()
    at = open_app()
    assert len(at.multiselect(key="methods").value) == 2  # was 3: the "fail" is read
    shown = [m.value for m in map_notes(at)]
    assert len(shown) == 2 and all("sanity: **pass**" in m for m in shown), shown
    st.cache_data.clear()  # later tests compute their own verdicts again
