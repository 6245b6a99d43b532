"""The explorer's stress tests (`mnistlens.perturb`): what each model tolerates on Compare
models, and whether the answer survives small changes on Explain a digit.

Each test checks the page's numbers against the library called here on the same digits.
"""

import re

import pytest

from mnistlens import series
from mnistlens.metrics import predict_logits
from mnistlens.perturb import get_transform
from mnistlens.perturb.invariance import invariance

pytest.importorskip("streamlit")
from test_app import apps_module, open_app, section  # noqa: E402

# App pages, seconds each; the Explain page reads the sanity verdicts from the run's cache.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("explorer_cache")]

TOLERATES = "What each model tolerates"
STRIP = "Does the answer survive small changes?"
ANSWER = re.compile(r":(green|red)\[(✓|✗) (\S+): (\d)\]")


def shown_answers(at) -> dict[str, list[int]]:
    """model -> its answer on each example digit, as the page marks them; checks that a
    green ✓ marks exactly the right answers."""
    labels = [int(image.captions[0].removeprefix("a ")) for image in examples(at)]
    found: dict[str, list[int]] = {}
    for k, markdown in enumerate(section(at, TOLERATES, "markdown")):
        for colour, mark, model, answer in ANSWER.findall(markdown.value):
            right = int(answer) == labels[k]
            assert (colour, mark) == (("green", "✓") if right else ("red", "✗"))
            found.setdefault(model, []).append(int(answer))
    return found


def examples(at) -> list:
    """The example digits' images: the section's images after its two figures."""
    return section(at, TOLERATES, "image")[2:]


def accuracies(caption: str) -> dict[str, float]:
    """'... Accuracy on all 1,000: linear 12.3%, mlp 95.0%.' -> {'linear': 0.123, ...}"""
    listed = caption.rsplit(": ", 1)[1].rstrip(".")
    return {m: float(p.rstrip("%")) / 100 for m, p in (a.split() for a in listed.split(", "))}


def test_the_warm_up_computes_the_compare_pages_stress_test(apps_on_path, monkeypatch):
    """A fresh server computes the default models' stress test, its figures and its first
    examples before anyone asks (apps/warm.py), as the page's own cache entries: the
    Compare page's first view then changes no digit and draws no stress figure. (The
    steps read the results shipped in checkpoints/cache, as a fresh server does: computing
    them is 30 s here, and tests/test_results.py checks them against the code.)"""
    monkeypatch.delenv("MNISTLENS_SHIPPED_CACHE")  # the default: checkpoints/cache
    compare_cache, warm = apps_module("compare_cache"), apps_module("warm")
    entries = (
        compare_cache.model_stress,
        compare_cache.stress_figures,
        compare_cache.stress_examples,
    )
    for entry in entries:
        entry.clear()  # as on a fresh server, whatever ran before in this process
    for name, step in warm.steps():
        if name.startswith("compare stress"):
            step()
    done = []
    for module, name in (
        (compare_cache.stress, "evaluate"),
        (compare_cache.stress_figures_of, "plot_severity_curves"),
        (compare_cache, "get_transform"),
    ):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, real=real, name=name, **k: done.append(name) or real(*a, **k)
        )
    at = open_app("compare")
    assert section(at, TOLERATES, "image") and done == []


def test_compare_page_shows_what_each_model_tolerates(test_set):
    """Compare models, default models: the stress curves and MNIST-C heatmap of the first
    1,000 test images, then the first 8 of them changed by the chosen transform at the
    chosen severity (translate 4 px first), each model's answer marked right or wrong.
    The answers and the accuracies are the models' own on those changed digits; at 0 px
    (unchanged) the answers differ; another transform starts at its hardest severity."""
    images, labels = test_set
    compare_cache = apps_module("compare_cache")
    n_images, n_shown = compare_cache.STRESS_IMAGES, compare_cache.STRESS_EXAMPLES
    at = open_app("compare")
    names = at.multiselect(key="compare_models").value
    assert names == ["linear", "mlp", "lenet", "cnn"]
    models = {n: m for n, (m, _) in series.load_series(only=names).items()}
    captions = [c.value for c in section(at, TOLERATES, "caption")]
    assert "first 1,000 test images" in captions[0]
    assert len(section(at, TOLERATES, "image")) == 2 + n_shown  # curves, heatmap, digits
    assert [i.captions[0] for i in examples(at)] == [f"a {y}" for y in labels[:n_shown]]

    def expected(transform: str, severity: float):
        """model -> (answers on the first 8 changed digits, accuracy on all 1,000)."""
        changed = get_transform(transform)(images[:n_images], severity, 0)
        found = {}
        for name, model in models.items():
            predicted = predict_logits(model, changed).argmax(dim=1)
            right = (predicted == labels[:n_images]).float().mean()
            found[name] = (predicted[:n_shown].tolist(), float(right))
        return found

    def assert_shows(transform: str, severity: float, label: str) -> dict:
        caption = section(at, TOLERATES, "caption")[-1].value
        assert caption.startswith(f"{transform} (") and f"), {label}: " in caption
        answers, shown = shown_answers(at), accuracies(caption)
        for name, (predicted, accuracy) in expected(transform, severity).items():
            assert answers[name] == predicted, name
            assert abs(shown[name] - accuracy) < 0.0006, name  # shown to 0.1%
        return answers

    assert at.selectbox(key="compare_transform").value == "translate"
    assert at.select_slider(key="compare_severity").value == 4
    shifted = assert_shows("translate", 4, "4 px")
    at.select_slider(key="compare_severity").set_value(0).run()
    assert not at.exception
    clean = assert_shows("translate", 0, "unchanged")
    assert clean != shifted

    at.select_slider(key="compare_severity").set_value(4).run()
    at.selectbox(key="compare_transform").set_value("rotate").run()  # no 4 degrees: its 45
    assert not at.exception
    assert at.select_slider(key="compare_severity").value == 45
    assert_shows("rotate", 45, "45 degrees")


def kept_line(strip) -> str:
    """The caption's count: the changed copies (all but the first, the digit itself) on
    which the strip says the answer was kept."""
    changed = strip.changes[1:]
    return f"on {sum(c['kept'] for c in changed)} of {len(changed)} changed copies"


def test_explain_page_counts_the_changed_copies_that_keep_the_answer(test_set, cnn):
    """Explain a digit: the invariance strip of the chosen digit, and a caption whose
    count is `invariance(model, image).kept` for that digit: on test image 42, then on
    the first test image whose answer some change moves (another count), also with no
    method chosen (no maps)."""
    images = test_set[0]
    at = open_app()
    assert len(section(at, STRIP, "image")) == 1  # the copies in one picture
    answers, caption = (c.value for c in section(at, STRIP, "caption"))
    first = invariance(cnn, images[42])
    assert caption.startswith(f"cnn.pt kept its answer ({first.changes[0]['prediction']}) ")
    assert kept_line(first) in caption and caption.endswith(
        "of test image 42 (✗: a changed answer)."
    )
    listed = answers.split(" · ")
    assert len(listed) == len(first.changes) and listed[0].startswith("original: 4")
    assert sum(a.endswith("✗") for a in listed) == len(first.changes) - 1 - first.n_kept

    index = next(i for i in range(1000) if invariance(cnn, images[i]).kept < first.kept)
    at.number_input(key="index").set_value(index).run()
    assert not at.exception
    caption = section(at, STRIP, "caption")[1].value
    assert kept_line(invariance(cnn, images[index])) in caption
    assert f"of test image {index} " in caption

    at.multiselect(key="methods").set_value([]).run()  # no maps: the strip stays
    assert not at.exception and any("Choose at least one method" in w.value for w in at.warning)
    assert section(at, STRIP, "caption")[1].value == caption
