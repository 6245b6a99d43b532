"""Results the explorer computes once and reuses: per model, per digit, per method.

Every function is a library call behind a Streamlit cache, keyed by the model's name
(the model itself comes from `session.get_model`, this session's own), so a click
pays only for what it changes: a new test index re-explains that digit, a new
method computes that method alone, and the model-level results (per-digit maps,
activation profiles, sanity verdicts, method comparisons, the training-set index)
are computed on the first page that needs them and never again in this process.
The Compare and Concepts pages' own are in compare_cache.py and concept_cache.py.

`st.cache_data` returns a copy of its value (pickled), fine for small results;
`st.cache_resource` shares one object, used for the 60,000-row training index.

Sessions run in threads of one process, so two of them may compute here at once. Two
asking for the same entry do not both compute it (Streamlit holds a lock per entry while
one computes); seeded computations (SmoothGrad's and GradientSHAP's noise, the
randomization check) run one at a time in the library (`mnistlens.device.fork_rng`),
since the random generators are the process's. warm.py calls these same functions when
the server starts, so the pages' first views are here before anyone asks.
"""

from __future__ import annotations

import streamlit as st
import torch

from mnistlens import attribution, explain, faithfulness
from mnistlens.counterfactual import Counterfactuals, counterfactuals
from mnistlens.counterfactual.figures import plot_counterfactual
from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.internals import activations, featureviz
from mnistlens.metrics import predict_logits
from mnistlens.perturb.invariance import Strip, invariance

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import charts
from catalog import get_test_set
from kept import kept
from session import get_model

SANITY_IMAGES = 20  # test images in each method's randomization check (the library's rule)
PROFILE_IMAGES = 2000  # test images behind the activation profiles and top images
# A third of `featureviz.maximize`'s 300 steps: the Inside page draws five pictures per
# digit and should answer within a second; the full run is one notebook line away.
FEATUREVIZ_STEPS = 100
CHUNK = 500  # images per forward pass when averaging conv maps (bounded memory)


@st.cache_data(show_spinner=False)
def layers(model_name: str) -> tuple[list[str], list[str]]:
    """The model's conv layers and hidden (activation) layers, in execution order."""
    model, _ = get_model(model_name)
    info = analyze(model)
    return info.conv_layers, info.hidden_layers


def all_methods() -> list[str]:
    """Every registered attribution method, in the registry's order."""
    return attribution.list_methods()


def in_order(methods: list[str], usable: list[str]) -> tuple[str, ...]:
    """The chosen methods in the order `usable` lists them: one cache entry for a set
    of methods, whatever the order they were clicked in."""
    return tuple(sorted(methods, key=usable.index))


@st.cache_data(show_spinner=False)
def why_not(model_name: str, method: str) -> str | None:
    """`attribution.why_not`, once per model and method (it traces the model)."""
    model, _ = get_model(model_name)
    return attribution.why_not(method, model)


@st.cache_data(show_spinner=False, max_entries=512)
def explanation(
    model_name: str,
    digit: str,
    _image: torch.Tensor,
    method: str,
    target: int | None,
    baseline: str,
    steps: int,
) -> explain.Explanation:
    """One method's map of one digit, with its scores (`explain.explain(measure=True)`).

    Cached per method, so adding a method to the page computes that method alone.
    `digit` names the image for the cache ("test 42", or a hash of a drawing); the
    image itself is not hashed (leading underscore)."""
    model, _ = get_model(model_name)
    options = attribution.method_options(method, n_steps=steps, baseline=baseline)
    reference = random_ranking(model_name, digit, _image, target)
    return explain.explain(
        model,
        _image[None],
        [method],
        target,
        measure=True,
        reference=reference,
        **{method: options},
    )


@st.cache_data(show_spinner=False, max_entries=512)
def random_ranking(model_name: str, digit: str, _image: torch.Tensor, target: int | None):
    """The random ranking every method's maps of this digit are scored against: the same
    for all of them, so computed once (`faithfulness.random_reference`)."""
    model, _ = get_model(model_name)
    images = _image[None]  # (1, 1, 28, 28)
    return faithfulness.random_reference(
        model, images, attribution.resolve_target(model, images, target)
    )


@st.cache_data(show_spinner=False, max_entries=256)
def contrast(model_name: str, digit: str, _image: torch.Tensor, target: int, other: int):
    """Why `target` rather than `other` for one digit: (1, 28, 28) -> (1, 28, 28)."""
    model, _ = get_model(model_name)
    return explain.contrast_maps(model, _image[None], target, other)[0]


@st.cache_data(show_spinner="Checking that it is a digit at all ...", max_entries=512)
def digit_like(model_name: str, digit: str, _image: torch.Tensor) -> dict:
    """Is this (1, 28, 28) image a digit at all? `typicality.digit_like`'s verdict as its
    JSON dict. Keyed by `digit` as `explanation` is; the detector's fit is kept by the
    library per set of weights (in memory behind a lock, and on disk)."""
    from mnistlens import typicality

    model, _ = get_model(model_name)
    return typicality.digit_like(model, _image).to_json(0)


@st.cache_data(show_spinner=False, max_entries=256)
def invariance_strip(model_name: str, digit: str, _image: torch.Tensor) -> tuple[Strip, bytes]:
    """One digit (1, 28, 28) moved, turned, resized, thinned and thickened, with the
    model's answer on each copy (`invariance`), and the copies side by side as one PNG:
    one picture for the browser to load with every new digit, not fourteen (with eight
    users at once, each picture's encoding and loading counted). Keyed by `digit` as
    `explanation` is; the strip's images are its own (made by the library from the
    digit), so the cached value holds no view of the test set."""
    model, _ = get_model(model_name)
    strip = invariance(model, _image)
    sheet = charts.mosaic(strip.images[:, 0], len(strip.images), signed=False, scale=2, gap=3)
    return strip, charts.png_bytes(sheet)


@st.cache_data(
    show_spinner="Searching for the smallest change that changes the answer ...", max_entries=256
)
def counterfactual(
    model_name: str, digit: str, _image: torch.Tensor, target: int | None, mode: str
) -> tuple[Counterfactuals, bytes]:
    """One digit's counterfactual (`counterfactuals(model, image[None], target,
    mode=mode)`; target None in pertinent-positive mode) and the library's figure of it
    as PNG: -> (Counterfactuals of one image, PNG). Keyed by `digit` as `explanation`
    is. The figure is drawn here, once per entry: drawing it takes about as long as the
    search, and the download sends the same PNG; it carries the digit's warning when it
    is not digit-like (`digit_like`). The first call in a process also encodes the
    60,000 training digits for the prototypes (the library keeps them)."""
    from mnistlens.typicality import warning_text

    model, _ = get_model(model_name)
    warning = warning_text(digit_like(model_name, digit, _image))
    found = counterfactuals(model, _image[None], target, mode=mode)
    record = found.record(0)
    if mode == "pertinent-positive":
        title = f"{model_name}: the least of its ink that keeps it a {record['before']}"
    else:
        title = f"{model_name}: what would make it a {record['target']}? ({mode})"
    return found, charts.png_bytes(plot_counterfactual(found, 0, title, warning=warning))


def sanity_options(method: str) -> dict:
    """Integrated gradients in the sanity check with 16 steps, not 50: the check compares
    rankings, which fewer steps hardly move (on the shipped CNN the top-layer correlation
    goes from 0.359 to 0.357, MLP 0.312 -> 0.307), and it runs on a fresh server's first
    page (time saved: benchmarks/README.md)."""
    return {"n_steps": 16} if method == "integrated_gradients" else {}


@st.cache_data(show_spinner="Sanity check: re-initializing the layers ...")
@kept("model_name")
def sanity(model_name: str, method: str, layers: int | None = None) -> dict:
    """The model-randomization check of one method on the first test images, and its
    verdict by `faithfulness.SANITY_RULE`: {"verdict", "layer", "correlation", "cascade"}.
    layers=1 stops after the top layer, all the verdict needs (the Explain page); the
    Trust page shows the whole cascade (layers=None).

    Also kept on disk (kept.py): the checks are most of a fresh server's first page,
    and the answer depends only on the weights."""
    model, _ = get_model(model_name)
    images, _ = get_test_set()
    try:
        cascade = faithfulness.randomization_check(
            model, images[:SANITY_IMAGES], method, layers=layers, **sanity_options(method)
        )
    except MnistlensError as err:  # e.g. a torch.export program: no modules to re-initialize
        return {
            "verdict": "n/a",
            "layer": None,
            "correlation": None,
            "cascade": {},
            "why": str(err),
        }
    top = next(iter(cascade))
    return {
        "verdict": faithfulness.sanity_verdict(cascade),
        "layer": top,
        "correlation": cascade[top],
        "cascade": cascade,
    }


@st.cache_data(show_spinner="Averaging maps over the test set ...", max_entries=64)
@kept("model_name")
def class_maps(model_name: str, method: str, n_images: int) -> torch.Tensor:
    """Per-digit mean maps (`explain.class_mean_maps`): -> (10, 28, 28)."""
    model, _ = get_model(model_name)
    images, labels = get_test_set()
    # IG to a 1% completeness tolerance: far fewer passes than 50 fixed steps, for maps
    # that are averaged anyway (benchmarks/README.md).
    options = {"tol": 0.01} if method == "integrated_gradients" else {}
    return explain.class_mean_maps(model, images[:n_images], labels[:n_images], method, **options)


@st.cache_data(show_spinner="Recording the layer's activations on the test set ...", max_entries=32)
@kept("model_name")
def unit_activations(model_name: str, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One number per unit for the first PROFILE_IMAGES test images, and the per-digit
    profile: -> units (N, U), profile (10, U). Conv layers are averaged over positions
    chunk by chunk, so a 32 x 28 x 28 layer never holds 2,000 full maps at once."""
    model, _ = get_model(model_name)
    images, labels = get_test_set()
    units = torch.cat(
        [
            activations.unit_activations(
                activations.layer_activations(model, images[start : start + CHUNK], layer)
            )
            for start in range(0, PROFILE_IMAGES, CHUNK)
        ]
    )  # (N, U)
    return units, activations.class_profile(units, labels[:PROFILE_IMAGES])


@st.cache_data(show_spinner=False, max_entries=256)
@kept("model_name")
def dream(model_name: str, target: int, layer: str | None = None) -> torch.Tensor:
    """Feature visualization of a class (layer None) or a unit: -> (1, 28, 28)."""
    model, _ = get_model(model_name)
    image, _ = featureviz.maximize(model, target, layer, steps=FEATUREVIZ_STEPS)
    return image


@st.cache_data(show_spinner="Scoring a random ranking of the test images ...", max_entries=16)
@kept("model_name")
def random_reference(model_name: str, n_images: int) -> dict[str, torch.Tensor]:
    """`faithfulness.random_reference` (curves kept) of the first n test images, for the
    predicted class: what every method on the Trust page is scored against, computed
    once per model and number of images, not once per method."""
    model, _ = get_model(model_name)
    images = get_test_set()[0][:n_images]
    target = predict_logits(model, images).argmax(dim=1)
    return faithfulness.random_reference(model, images, target, keep_curves=True)


@st.cache_data(show_spinner="Measuring the method on the test images ...", max_entries=64)
@kept("model_name")
def measured(model_name: str, n_images: int, method: str):
    """`faithfulness.compare_methods(model, images[:n], [method])` for one method:
    -> (report, curves), with the "random" reference. One method per entry, so adding a
    method to the Trust page measures that method alone."""
    model, _ = get_model(model_name)
    images, _ = get_test_set()
    reference = random_reference(model_name, n_images)
    return faithfulness.compare_methods(model, images[:n_images], [method], reference=reference)


def comparison(model_name: str, n_images: int, methods: tuple[str, ...]):
    """What `compare_methods(..., randomization=True)` returns, from the per-method
    entries above and `sanity` (the same `randomization_check` on the first
    SANITY_IMAGES images, predicted class, as compare_methods runs, IG with 16 steps
    by `sanity_options`; shared with the Explain page's verdicts): -> (report, curves)."""
    report, curves = {}, {}
    for method in methods:
        one_report, one_curves = measured(model_name, n_images, method)
        check = sanity(model_name, method)
        report[method] = {
            **one_report[method],
            "randomization": check["cascade"],
            "sanity": check["verdict"],
            "sanity_rule": faithfulness.SANITY_RULE,
        }
        curves[method] = one_curves[method]
        report["random"], curves["random"] = one_report["random"], one_curves["random"]
    return report, dict(random=curves.pop("random"), **curves)


@st.cache_data(show_spinner=False, max_entries=32)
@kept("model_name")
def comparison_figures(model_name: str, n_images: int, methods: tuple[str, ...]) -> dict:
    """The Trust page's two figures as PNG bytes, drawn once per comparison."""
    from mnistlens import plots

    report, curves = comparison(model_name, n_images, methods)
    where = f"{model_name}, first {n_images} test images"
    return {
        "curves": charts.png_bytes(plots.plot_perturbation_curves(curves, where)),
        "randomization": charts.png_bytes(
            charts.plot_randomization(report, f"model randomization ({where})")
        ),
    }


@st.cache_resource(
    show_spinner="Indexing the 60,000 training images (once per model, then cached on disk) ...",
    max_entries=4,
)
def training_index(model_name: str):
    """`influence.training_index(model)`, held once per process for the last few models
    (an index is tens of MB; one dropped comes back from the library's disk cache)."""
    from mnistlens import influence

    model, _ = get_model(model_name)
    return influence.training_index(model)
