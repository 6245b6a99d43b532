"""The explorer's Concepts page (`mnistlens.concepts.run`): its verdicts are the
library's for the same concepts, layers and CAVs."""

import pytest

from mnistlens.concepts import run

pytest.importorskip("streamlit")
from test_app import apps_module, main_images, open_app  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def smaller_tcav(monkeypatch):
    """The page's TCAV (and the library's beside it) on 5 runs of 50-image sets and 50
    images per class: the explorer passes no sizes, so both read these; the same code
    and comparisons at a third of the work."""
    from mnistlens.concepts import pipeline

    monkeypatch.setattr(pipeline, "RUNS", 5)
    monkeypatch.setattr(pipeline, "SET_SIZE", 50)
    monkeypatch.setattr(pipeline, "PER_CLASS", 50)


def summary(at) -> dict:
    """(concept, layer) -> (towards, against) as the page's first table shows them."""
    table = at.dataframe[0].value
    return {(row.concept, row.layer): (row.towards, row.against) for row in table.itertuples()}


def same_scores(at, result) -> bool:
    """The page's table of every score holds the library's mean TCAV score for each
    concept, layer and digit (a verdict alone is often "-" on both sides)."""
    shown = {(r["concept"], r["layer"], r["class"]): r["score"]
             for r in at.dataframe[1].value.to_dict("records")}  # fmt: skip
    expected = {(r["concept"], r["layer"], r["class"]): r["score"] for r in result.table()}
    return shown.keys() >= expected.keys() and all(
        abs(shown[key] - score) < 1e-6 for key, score in expected.items()
    )


def digits(classes: list[int]) -> str:
    return ", ".join(map(str, classes)) or "-"


def test_the_warm_up_computes_the_concepts_pages_first_view(apps_on_path, monkeypatch):
    """A fresh server computes the Concepts page's default concepts and layers before
    anyone asks (apps/warm.py), as the page's own cache entry: the page's first view
    then runs no TCAV and shows the scores."""
    from mnistlens import concepts

    concept_cache, warm = apps_module("concept_cache"), apps_module("warm")
    concept_cache.concept_scores.clear()  # as on a fresh server, whatever ran before here
    step = next(step for name, step in warm.steps() if name == "concepts")
    step()
    done = []
    real = concepts.run
    monkeypatch.setattr(concepts, "run", lambda *a, **k: done.append(1) or real(*a, **k))
    at = open_app("concepts")
    assert len(summary(at)) == 6 and done == []  # 3 concepts x 2 layers, none computed


def test_concepts_page_shows_the_librarys_verdicts(cnn):
    """On the shipped CNN: the default concepts at relu3 and relu_fc1, each concept's
    significant digits as `concepts.run` finds them, the heat map and the concept images;
    switching to fast CAVs and one concept shows that run's verdicts."""
    at = open_app("concepts")
    assert at.multiselect(key="concepts").value == [
        "closed_loop", "vertical_stroke", "horizontal_bar"
    ]  # fmt: skip
    assert at.multiselect(key="concept_layers").value == ["relu3", "relu_fc1"]
    shown = summary(at)
    result, _ = run(cnn, ["closed_loop", "vertical_stroke", "horizontal_bar"],
                    layers=["relu3", "relu_fc1"], device="cpu")  # fmt: skip
    for concept in result.concepts:
        for layer in result.layers:
            assert shown[concept, layer] == (
                digits(result.significant_classes(concept, layer)),
                digits(result.significant_classes(concept, layer, "against")),
            )
    assert same_scores(at, result)
    assert len(main_images(at)) == 2  # scores, concept images

    at.multiselect(key="concepts").set_value(["closed_loop"])
    at.toggle(key="concept_fast").set_value(True).run()
    assert not at.exception
    fast, _ = run(cnn, ["closed_loop"], layers=["relu3", "relu_fc1"], fast=True, device="cpu")
    assert summary(at)["closed_loop", "relu3"] == (
        digits(fast.significant_classes("closed_loop", "relu3")),
        digits(fast.significant_classes("closed_loop", "relu3", "against")),
    )
    assert same_scores(at, fast)


def test_concepts_page_explains_why_a_linear_model_has_none():
    """The linear model has no hidden layer: the page says so and computes nothing."""
    at = open_app("concepts", model="linear.pt")
    assert any("no hidden layer" in w.value for w in at.warning)
    assert not at.dataframe


def test_concepts_page_tests_your_uploaded_pictures(cnn):
    """A concept of your own: fewer than 5 pictures are not enough; 6 uploaded loop
    pictures named "rings" are tested beside the built-in concept, with the library's
    verdicts for the same pictures."""
    from test_concepts import png

    from mnistlens.concepts import concept_set, picture_set

    pictures = [(f"{i}.png", png(x)) for i, x in enumerate(concept_set("closed_loop", 6, 5))]
    at = open_app("concepts")
    at.multiselect(key="concepts").set_value(["vertical_stroke"])
    at.multiselect(key="concept_layers").set_value(["relu3"])
    at.file_uploader(key="concept_pictures").set_value(
        [(name, data, "image/png") for name, data in pictures[:3]]
    )
    at.run()
    assert any("3 pictures uploaded" in w.value for w in at.warning)
    assert set(summary(at)) == {("vertical_stroke", "relu3")}

    at.file_uploader(key="concept_pictures").set_value(
        [(name, data, "image/png") for name, data in pictures]
    )
    at.text_input(key="concept_name").set_value("rings")
    at.run()
    assert not at.exception
    shown = summary(at)
    mine = {"rings": picture_set(pictures)}
    result, _ = run(cnn, ["vertical_stroke"], layers=["relu3"], yours=mine, device="cpu")
    assert shown["rings", "relu3"] == (
        digits(result.significant_classes("rings", "relu3")),
        digits(result.significant_classes("rings", "relu3", "against")),
    )
    assert same_scores(at, result)
