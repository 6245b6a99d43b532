"""The Compare models page's results: one entry per set of models (or per model), keyed
by the models' names and looked up by name (this session's copies, session.py says why a
model is never shared), never hashed. Library calls behind Streamlit's caches, as in
cache.py, which has the digit's and the model's; warm.py calls these at server start."""

from __future__ import annotations

import streamlit as st

from mnistlens import attribution
from mnistlens.comparison import figures, maps, stats
from mnistlens.counterfactual import counterfactuals
from mnistlens.errors import MnistlensError
from mnistlens.metrics import predict_logits
from mnistlens.perturb import figures as stress_figures_of
from mnistlens.perturb import get_transform, stress

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import charts
from catalog import get_test_set
from kept import kept
from session import get_model

COMPARE_STEPS = 32  # integrated gradients' steps in the Compare page's maps
COMPARE_METHODS = ("saliency", "integrated_gradients", "grad_cam")  # its disagreement grid
# Test images behind the Compare page's stress test. Every transform at every severity is
# some forty passes of each model over them, which its user waits for on choosing a new
# model (about 4 s for the CNN on 1,000): a tenth of the test set, a tenth of the wait.
# `mnistlens stress` measures all 10,000.
STRESS_IMAGES = 1000
STRESS_EXAMPLES = 8  # of those, shown changed with every model's answer
STRESS_SEED = 0  # draws the transforms' directions and noise, the same for the examples


def compared_models(names: tuple[str, ...]) -> dict:
    """name -> (model, meta): series members by name, shipped files by file name; this
    session's own copies (session.py says why a model is never shared)."""
    return {n: get_model(n) for n in names}


@st.cache_data(show_spinner="Comparing on the 10,000 test images ...", max_entries=16)
@kept("names")
def compare_report(names: tuple[str, ...]) -> dict:
    """`stats.compare_models` of the models on the whole test set (top 40 disagreements)."""
    images, labels = get_test_set()
    return stats.compare_models(compared_models(names), images, labels, top=40)


@st.cache_data(show_spinner=False, max_entries=16)
@kept("names")
def compare_figures(names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """Accuracy against parameters, and per digit: PNG at the explorer's 110 dpi
    (`charts.png_bytes`), as on the other pages (st.pyplot's 200 dpi is three times the
    pixels to draw and send)."""
    result = compare_report(names)
    return (
        charts.png_bytes(figures.plot_accuracy_vs_parameters(result)),
        charts.png_bytes(figures.plot_digit_accuracy(result)),
    )


@st.cache_data(
    show_spinner="Explaining the images B gets right and A gets wrong ...", max_entries=32
)
@kept("names")
def pair_maps(names: tuple[str, ...], a: str, b: str) -> tuple[bytes, list[int]] | None:
    """`maps.where_b_beats_a` for models a and b (integrated gradients), drawn:
    -> (PNG, the test images' indices); None if B gets no image right that A gets wrong."""
    images, labels = get_test_set()
    loaded = compared_models(names)
    indices = stats.only_right(compare_report(names), b, a)  # known from the comparison
    try:
        found = maps.where_b_beats_a(
            loaded[a][0], loaded[b][0], images, labels, n_steps=COMPARE_STEPS, indices=indices
        )
    except MnistlensError:
        return None
    png = charts.png_bytes(figures.plot_pair_maps(found, images, a, b))
    return png, found["indices"].tolist()


@st.cache_data(show_spinner="Explaining the image with every model ...", max_entries=64)
@kept("names")
def disagreement_grid(names: tuple[str, ...], index: int) -> bytes:
    """Test image `index` explained by every model (`maps.explain_models`), the methods
    every model supports, as a PNG grid (`figures.plot_model_grid`). Keyed by the model
    names and the index: the models and the image are looked up, not hashed."""
    image = get_test_set()[0][index].clone()
    loaded = {n: m for n, (m, _) in compared_models(names).items()}
    options = {m: attribution.method_options(m, n_steps=COMPARE_STEPS) for m in COMPARE_METHODS}
    results = maps.explain_models(loaded, image[None], list(COMPARE_METHODS), **options)
    shown = [m for m in COMPARE_METHODS if all(m in r.maps for r in results.values())]
    titles = {
        n: f"{n}\npredicts {int(r.predictions[0])} ({float(r.probabilities[0].max()):.0%})"
        for n, r in results.items()
    }
    grid = {n: {m: r.maps[m][0] for m in shown} for n, r in results.items()}
    return charts.png_bytes(figures.plot_model_grid(image, grid, titles, f"test image {index}"))


@st.cache_data(show_spinner=False, max_entries=64)
def test_probabilities(names: tuple[str, ...], index: int) -> dict[str, list[float]]:
    """Each model's probabilities for test image `index`: name -> [10]."""
    image = get_test_set()[0][index : index + 1]  # (1, 1, 28, 28); nothing of it is kept
    return {
        name: predict_logits(model, image).softmax(dim=1)[0].tolist()
        for name, (model, _) in compared_models(names).items()
    }


@st.cache_data(
    show_spinner="Searching each model's smallest change that changes its answer ...",
    max_entries=256,
)
@kept("name")
def model_counterfactual(name: str, index: int, target: int) -> dict:
    """One model's proto counterfactual of test image `index` to `target`: ->
    {"image": (1, 28, 28) the counterfactual, "record": `Counterfactuals.record(0)`},
    or, where the model already says `target`, the image itself and record None (there
    is nothing to change). One entry per model, so a model added to the comparison
    computes that model alone."""
    # A copy: the entry keeps the image, and a view would pickle the whole test set.
    image = get_test_set()[0][index].clone()  # (1, 28, 28)
    model, _ = get_model(name)
    if int(predict_logits(model, image[None]).argmax()) == target:
        return {"image": image, "record": None}
    found = counterfactuals(model, image[None], target, mode="proto")
    return {"image": found.images[0], "record": found.record(0)}


@st.cache_data(show_spinner="Stress-testing on changed test images ...", max_entries=32)
@kept("name")
def model_stress(name: str) -> dict:
    """`stress.evaluate` of one model on the first STRESS_IMAGES test images, every
    transform at every severity: -> `StressResult.to_json()` (the result itself holds the
    transforms' functions, which do not pickle). One entry per model, so a new set of
    models computes only the models it adds."""
    images, labels = get_test_set()
    result = stress.evaluate(
        {name: get_model(name)[0]},
        None,
        images[:STRESS_IMAGES],
        labels[:STRESS_IMAGES],
        seed=STRESS_SEED,
        progress=False,
    )
    return result.to_json()


def stress_table(names: tuple[str, ...]) -> dict:
    """The models' stress tables side by side (`stress.combine`)."""
    return stress.combine([model_stress(name) for name in names])


@st.cache_data(show_spinner=False, max_entries=16)
@kept("names")
def stress_figures(names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The stress test's accuracy-against-severity curves and MNIST-C heatmap, as PNG."""
    table = stress_table(names)
    return (
        charts.png_bytes(stress_figures_of.plot_severity_curves(table)),
        charts.png_bytes(stress_figures_of.plot_corruption_heatmap(table)),
    )


@st.cache_data(show_spinner=False, max_entries=128)
@kept("names")
def stress_examples(names: tuple[str, ...], transform: str, severity: float) -> dict:
    """The first STRESS_EXAMPLES test images changed as `stress_table` changed them, and
    each model's answer: -> {"images": (K, 1, 28, 28), "labels": [K], "predictions":
    {model: [K]}}. The whole STRESS_IMAGES are changed and the first K kept, so these
    are the very images the stress test counted, however a transform draws its
    directions and noise from the seed."""
    images, labels = get_test_set()
    changed = get_transform(transform)(images[:STRESS_IMAGES], severity, STRESS_SEED)
    # A copy: at the identity severity `changed` is a view of the test set, and a view
    # would pickle all 10,000 images into the cache entry.
    shown = changed[:STRESS_EXAMPLES].clone()  # (K, 1, 28, 28)
    return {
        "images": shown,
        "labels": labels[:STRESS_EXAMPLES].tolist(),
        "predictions": {
            name: predict_logits(model, shown).argmax(dim=1).tolist()
            for name, (model, _) in compared_models(names).items()
        },
    }
