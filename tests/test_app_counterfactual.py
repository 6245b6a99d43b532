"""The explorer's counterfactuals (`mnistlens.counterfactual`): what would make the digit
another one on Explain a digit, and how much ink changes each model's mind on Compare
models.

Each test checks the page's numbers against the library called here on the same digit.
"""

import re

import pytest

from mnistlens import series
from mnistlens.counterfactual import counterfactuals
from mnistlens.metrics import predict_logits

pytest.importorskip("streamlit")
from test_app import apps_module, open_app, section  # noqa: E402

# The Explain page reads the sanity verdicts from the run's cache.
pytestmark = pytest.mark.usefixtures("explorer_cache")

INK = "How much ink changes each model's mind?"
SUMMARY = re.compile(
    r"says (?P<prediction>\d) \((?:(?P<target>\d) at )?(?P<probability>[\d.]+%)\); "
    r"(?P<change>change|ink added|ink removed): L1 (?P<l1>[\d.]+), L0 (?P<l0>\d+) pixels; "
    r"plausibility (?P<plausibility>[\d.]+) .*; (?P<seconds>[\d.]+) s\.$"
)


def shown(at, heading: str) -> tuple[str, dict]:
    """The panel under `heading`: its one figure, and its summary caption's numbers."""
    (figure,) = section(at, heading, "image")
    assert figure.proto.imgs  # the library's figure, as one PNG
    (line,) = [c.value for c in section(at, heading, "caption") if " L1 " in c.value]
    found = SUMMARY.search(line)
    assert found, line
    return line, found.groupdict()


def expected(record: dict) -> dict:
    """A `Counterfactuals.record` as the caption rounds it."""
    return {
        "prediction": str(record["prediction"]),
        "target": None if record["valid"] else str(record["target"]),
        "probability": f"{record['probability']:.1%}",
        "change": {"pertinent-negative": "ink added", "pertinent-positive": "ink removed"}.get(
            record["mode"], "change"
        ),
        "l1": f"{record['l1']:.1f}",
        "l0": str(record["l0"]),
        "plausibility": f"{record['plausibility']:.4f}",
    }


def without_seconds(numbers: dict) -> dict:
    return {k: v for k, v in numbers.items() if k != "seconds"}


def open_searching():
    """The Explain page with its counterfactual search switched on (off until asked)."""
    at = open_app()
    assert not section(at, "What would make it a 9?", "image")  # nothing searched yet
    at.toggle(key="cf_on").set_value(True).run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_explain_panel_shows_the_librarys_counterfactual(test_set, cnn):
    """Explain a digit, test image 42 (a 4): the counterfactual to the model's runner-up
    (9) in proto mode, its figure and a caption whose numbers are `counterfactuals`'
    for that digit; another class and mode show theirs; a new digit starts again from
    its own runner-up."""
    images = test_set[0]
    image = images[42][None]  # (1, 1, 28, 28)
    at = open_searching()
    picker = at.selectbox(key="cf_target")
    assert picker.value == 9 and not picker.disabled
    assert "4" not in picker.options and len(picker.options) == 9
    assert at.selectbox(key="cf_mode").value == "proto"
    line, numbers = shown(at, "What would make it a 9?")
    record = counterfactuals(cnn, image, 9, mode="proto").record(0)
    assert record["valid"] and line.startswith("Reached: cnn.pt now says 9 (")
    assert without_seconds(numbers) == expected(record)

    at.selectbox(key="cf_target").set_value(7)
    at.selectbox(key="cf_mode").set_value("plain").run()
    assert not at.exception
    _, numbers = shown(at, "What would make it a 7?")
    other = counterfactuals(cnn, image, 7, mode="plain").record(0)
    assert without_seconds(numbers) == expected(other)
    assert numbers["l1"] != expected(record)["l1"]

    at.selectbox(key="cf_mode").set_value("pertinent-negative").run()
    assert not at.exception
    _, numbers = shown(at, "What would make it a 7?")
    added = counterfactuals(cnn, image, 7, mode="pertinent-negative").record(0)
    assert numbers["change"] == "ink added"
    assert without_seconds(numbers) == expected(added)

    at.selectbox(key="cf_mode").set_value("proto")
    at.number_input(key="index").set_value(0).run()  # a 7
    assert not at.exception
    runner_up = int(predict_logits(cnn, images[:1]).topk(2, dim=1).indices[0, 1])
    assert at.selectbox(key="cf_target").value == runner_up
    _, numbers = shown(at, f"What would make it a {runner_up}?")
    first = counterfactuals(cnn, images[:1], runner_up, mode="proto").record(0)
    assert without_seconds(numbers) == expected(first)


@pytest.mark.slow
def test_explain_panel_pertinent_positive_has_no_class_to_reach(test_set, cnn):
    """In pertinent-positive mode the class picker is disabled and the panel says why;
    its caption tells the ink removed and that the model still says 4, as
    `counterfactuals(mode="pertinent-positive")` finds for test image 42."""
    at = open_searching()
    at.selectbox(key="cf_mode").set_value("pertinent-positive").run()
    assert not at.exception
    assert at.selectbox(key="cf_target").disabled
    heading = "What does it need to stay a 4?"
    captions = [c.value for c in section(at, heading, "caption")]
    assert any("there is no class to choose" in c for c in captions)
    line, numbers = shown(at, heading)
    record = counterfactuals(cnn, test_set[0][42][None], mode="pertinent-positive").record(0)
    assert record["valid"] and line.startswith("Pertinent positive: cnn.pt still says 4 (")
    assert numbers["change"] == "ink removed"
    assert without_seconds(numbers) == expected(record)


def ink_captions(at) -> tuple[int, list[str]]:
    """The Compare section's picture: -> (test index, the captions after the digit's)."""
    (strip,) = section(at, INK, "image")  # one list of pictures
    captions = [image.caption for image in strip.proto.imgs]
    index = int(captions[0].removeprefix("test image "))
    return index, captions[1:]


@pytest.mark.slow
def test_compare_page_shows_the_ink_each_model_needs(test_set):
    """Compare models: the disagreement shown, then each chosen model's proto
    counterfactual of it to one class, with the L1 change each needed, which is
    `counterfactuals(model, image, target)`'s. The class starts at the first model's
    runner-up (or its next class no model says); a model that already says the class
    chosen needs no change."""
    names = ["linear", "mlp", "lenet"]
    at = open_app("compare", models=names)
    models = {n: m for n, (m, _) in series.load_series(only=names).items()}
    index, captions = ink_captions(at)
    assert at.selectbox(key="compare_image").value.startswith(f"#{index} ")
    image = test_set[0][index][None]  # (1, 1, 28, 28)
    probs = {n: predict_logits(m, image).softmax(dim=1)[0] for n, m in models.items()}
    said = {int(p.argmax()) for p in probs.values()}
    ranked = probs["linear"].argsort(descending=True).tolist()
    target = next(d for d in ranked[1:] if d not in said)
    assert at.selectbox(key="compare_cf_target").value == target
    assert len(captions) == len(names)

    def assert_shows(target: int) -> None:
        _, captions = ink_captions(at)
        for name, caption in zip(names, captions, strict=True):
            if int(probs[name].argmax()) == target:
                assert caption == f"{name} already says {target}"
                continue
            record = counterfactuals(models[name], image, target).record(0)
            assert caption.startswith(f"{name}: L1 {record['l1']:.1f}, "), caption
            assert (f"says {target} (" in caption) == record["valid"]

    assert_shows(target)
    own = int(probs["linear"].argmax())  # the first model's answer: it needs no change
    at.selectbox(key="compare_cf_target").set_value(own).run()
    assert not at.exception
    assert_shows(own)


@pytest.mark.slow
def test_the_warm_up_computes_the_explain_pages_counterfactual(apps_on_path, monkeypatch):
    """A fresh server computes the Explain page's default counterfactual (test image
    42 to its runner-up, proto) before anyone asks (apps/warm.py), as the page's own
    cache entry: the page's first view then searches nothing."""
    cache, warm = apps_module("cache"), apps_module("warm")
    cache.counterfactual.clear()
    step = next(step for name, step in warm.steps() if name.startswith("counterfactual"))
    step()
    searched = []
    real = cache.counterfactuals
    monkeypatch.setattr(
        cache, "counterfactuals", lambda *a, **k: searched.append(1) or real(*a, **k)
    )
    at = open_searching()
    assert section(at, "What would make it a 9?", "image") and searched == []
