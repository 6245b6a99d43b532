"""A concept of your own drawn on the Concepts page's canvas (apps/your_concept.py): each
drawing prepared as the sidebar's drawn digit is, tested as "your concept" once there
are 5 with the library's verdicts, cleared on request, and cached per set drawn."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_app_concepts import digits, same_scores, smaller_tcav, summary  # noqa: F401

from mnistlens.concepts import concept_set, run
from mnistlens.pictures import prepare_digit

pytest.importorskip("streamlit")
from test_app import apps_module, open_app  # noqa: E402

pytestmark = pytest.mark.slow
DRAWINGS = apps_module("keys").CONCEPT_DRAWINGS  # where the session keeps them


def canvas_of(image: torch.Tensor) -> np.ndarray:
    """What the canvas returns for a (1, 28, 28) picture drawn white on its black
    background: (252, 252, 4) RGBA."""
    gray = Image.fromarray((image[0].numpy() * 255).astype("uint8"))
    return np.asarray(gray.resize((252, 252), Image.Resampling.BILINEAR).convert("RGBA"))


def prepared(canvas: np.ndarray) -> torch.Tensor:
    """The canvas's picture as an MNIST-style (1, 28, 28) image, as the sidebar reads its
    own canvas: the RGB channels' mean, `prepare_digit`."""
    return prepare_digit(torch.from_numpy(canvas[..., :3].astype("float32")).mean(dim=-1) / 255)


def test_five_drawings_are_your_concept_until_cleared(cnn, canvas):
    """Adding with nothing drawn adds nothing; 4 drawn loops are not enough (the page
    says so and tests the built-in concept alone); the 5th makes the page test "your
    concept" beside it, with `concepts.run`'s verdicts for the same prepared images
    (each the sidebar's preparation of the canvas). Clear empties the set: the page is
    back to the built-in concept alone."""
    loops = [canvas_of(x) for x in concept_set("closed_loop", 5, seed=3)]
    at = open_app("concepts")
    at.multiselect(key="concepts").set_value(["vertical_stroke"])
    at.multiselect(key="concept_layers").set_value(["relu3"]).run()
    at.button(key="concept_add").click().run()
    assert any("Nothing drawn yet" in i.value for i in at.info)
    assert at.session_state[DRAWINGS] == []

    for drawn in loops[:4]:
        canvas["drawn"] = drawn
        at.button(key="concept_add").click().run()
    assert not at.exception
    assert any("0 pictures uploaded, 4 drawn" in w.value for w in at.warning)
    assert set(summary(at)) == {("vertical_stroke", "relu3")}

    canvas["drawn"] = loops[4]
    at.button(key="concept_add").click().run()
    assert not at.exception
    kept = at.session_state[DRAWINGS]
    expected = torch.stack([prepared(drawn) for drawn in loops])  # (5, 1, 28, 28)
    assert torch.equal(torch.stack(kept), expected)
    result, _ = run(cnn, ["vertical_stroke"], layers=["relu3"], yours={"yours": expected},
                    device="cpu")  # fmt: skip
    shown = summary(at)
    assert set(shown) == {("vertical_stroke", "relu3"), ("yours", "relu3")}
    assert shown["yours", "relu3"] == (
        digits(result.significant_classes("yours", "relu3")),
        digits(result.significant_classes("yours", "relu3", "against")),
    )
    assert same_scores(at, result)

    at.button(key="concept_clear").click().run()
    assert not at.exception
    assert at.session_state[DRAWINGS] == []
    assert set(summary(at)) == {("vertical_stroke", "relu3")}
    assert not at.warning  # no set begun: nothing to warn about


def test_uploads_and_drawings_together_make_your_concept(cnn, canvas):
    """3 uploaded loop pictures and 2 drawn ones are 5: your concept ("rings") is the
    uploads read as `picture_set` reads them, then the drawings, with the library's
    verdicts for those 5 images."""
    from test_concepts import png

    from mnistlens.concepts import picture_set

    loops = concept_set("closed_loop", 5, seed=5)
    pictures = [(f"{i}.png", png(x)) for i, x in enumerate(loops)]
    at = open_app("concepts")
    at.multiselect(key="concepts").set_value(["vertical_stroke"])
    at.multiselect(key="concept_layers").set_value(["relu3"])
    at.file_uploader(key="concept_pictures").set_value(
        [(name, data, "image/png") for name, data in pictures[:3]]
    )
    at.text_input(key="concept_name").set_value("rings").run()
    for x in loops[3:]:
        canvas["drawn"] = canvas_of(x)
        at.button(key="concept_add").click().run()
    assert not at.exception and not at.warning
    images = torch.cat(
        [picture_set(pictures)[:3], torch.stack([prepared(canvas_of(x)) for x in loops[3:]])]
    )
    result, _ = run(cnn, ["vertical_stroke"], layers=["relu3"], yours={"rings": images},
                    device="cpu")  # fmt: skip
    assert summary(at)["rings", "relu3"] == (
        digits(result.significant_classes("rings", "relu3")),
        digits(result.significant_classes("rings", "relu3", "against")),
    )
    assert same_scores(at, result)


def test_two_drawn_sets_are_two_cache_entries(apps_on_path, monkeypatch):
    """`concept_cache.concept_scores` keys on the drawings' bytes: a second set of 5 drawings
    (bars, not loops) is computed anew and scores differently; the first set again is
    the cached result, computed once."""
    from mnistlens import concepts

    concept_cache = apps_module("concept_cache")
    concept_cache.concept_scores.clear()  # whatever ran before in this process
    called = []
    real = concepts.run
    monkeypatch.setattr(concepts, "run", lambda *a, **k: called.append(1) or real(*a, **k))

    def drawn(name: str) -> bytes:
        pictures = concept_set(name, 5, seed=4)
        return b"".join(prepared(canvas_of(x)).numpy().tobytes() for x in pictures)

    def scores(drawings: bytes) -> list[float]:
        found = concept_cache.concept_scores(
            "cnn.pt", ("vertical_stroke",), ("relu3",), True, (), "drawn", drawings
        )
        return [row["score"] for row in found["rows"] if row["concept"] == "drawn"]

    loops, bars = drawn("closed_loop"), drawn("horizontal_bar")
    assert loops != bars
    first = scores(loops)
    assert len(first) == 10 and len(called) == 1  # one per digit
    assert scores(bars) != first and len(called) == 2
    assert scores(loops) == first and len(called) == 2  # cached
