"""What a fresh server computes before anyone asks: each page's first view.

`start` runs `warm_up` in a thread of its own, once per process: from the router's
first run (runtime.configure), or earlier, as soon as the server starts, when it is
served by `mnistlens app` or `serve_app` (mnistlens/app_server.py, which also imports
the first page's modules while Streamlit starts: `preload`). The thread calls the same cached
functions as the pages, with the pages' defaults (defaults.py): first the first page's
view (test image 42: its sanity verdicts, maps and invariance strip), then the other
pages' first views, the cheapest first (Inside the network, Per-digit maps, Trust,
Compare models with its counterfactuals and stress test), and last what a first visit
rarely meets (the Explain page's counterfactual, off until asked; Concepts). A first
visit then finds its results in the caches (benchmarks/README.md, "Many users at
once", has the times). The model-level ones (kept.py) of the shipped models are read
from the results shipped beside the checkpoints, made by running these same steps at
release time (`mnistlens app --precompute`): what is left to compute here is the
first digit's maps, verdict and invariance strip, and its counterfactual.

It never makes a user wait for it: it holds no lock of its own, and before each step it
waits until no session's script has run for a moment (`runtime.wait_until_idle`), at
the lowest CPU priority. A user asking for the very entry it is computing waits for
that entry instead of computing it a second time (Streamlit's lock per cache entry),
which is never longer. It works on its own copies of the models (session.py), so it
changes no session's model; it skips the Training examples page, whose first pass over
the 60,000 training images per model is too much to spend on a guess.

MNISTLENS_APP_WARM=0 in the server's environment turns it off.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

# Imported by `preload` before Streamlit runs any script: what the first page (Explain a
# digit) imports, torch first, and nothing else, so that the first page's run, which
# waits for these, waits for no more. No Streamlit module here (its configuration is
# read when it starts the script).
PRELOAD = (
    "torch",
    "captum.attr",
    "matplotlib.figure",
    "mnistlens.attribution",
    "mnistlens.counterfactual",
    "mnistlens.counterfactual.figures",
    "mnistlens.explain",
    "mnistlens.faithfulness",
    "mnistlens.graph",
    "mnistlens.influence",
    "mnistlens.internals.activations",
    "mnistlens.internals.featureviz",
    "mnistlens.metrics",
    "mnistlens.perturb.invariance",
    "mnistlens.plots",
    "mnistlens.series",
    "mnistlens.typicality",
)
# What the other pages import besides: the warm-up's first step after the first page's
# view (pandas for their tables, 0.3-0.6 s).
LATER = (
    "pandas",
    "mnistlens.comparison.figures",
    "mnistlens.comparison.maps",
    "mnistlens.comparison.stats",
    "mnistlens.concepts",
    "mnistlens.concepts.figures",
    "mnistlens.internals.weights",
    "mnistlens.perturb.corruptions",
    "mnistlens.perturb.figures",
)
THREAD = "mnistlens-warm-up"

_started = False
_start_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("MNISTLENS_APP_WARM", "1") != "0"


def preload(names: tuple[str, ...] = PRELOAD) -> None:
    """Import what the first page will import (a few seconds, torch most of it), or
    `names`."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional piece: the page that needs it will say so
            pass


def start() -> bool:
    """Start the warm-up thread unless it was started before (or is turned off);
    -> whether this call started it."""
    global _started
    with _start_lock:
        if _started or not enabled():
            return False
        _started = True
    threading.Thread(target=warm_up, name=THREAD, daemon=True).start()
    return True


def _lowest_priority() -> None:
    """This thread at nice 19 (Linux schedules threads on their own), so that the
    sessions' threads and the browsers on the same machine go first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: as it is
        pass


class _NotThisThread(logging.Filter):
    """Streamlit warns about every call made outside a session ("missing
    ScriptRunContext"): expected from this thread, so not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD


def warm_up() -> None:
    """Compute every step of `steps()`, waiting before each until the server is idle.
    A step that fails is logged and skipped: the page will compute it, and say why."""
    from streamlit.logger import get_logger  # Streamlit's format and level (--logger.level)

    # isort: split
    import runtime

    log = get_logger("mnistlens.warm")
    runtime.configure()
    _lowest_priority()
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        _NotThisThread()
    )
    begun = time.perf_counter()
    for name, step in steps():
        runtime.wait_until_idle()
        started = time.perf_counter()
        try:
            step()
        except Exception:  # noqa: BLE001 - the page itself will compute it, or show why
            log.warning("warm-up: %s failed", name, exc_info=True)
        log.debug("warm-up: %s %.2f s", name, time.perf_counter() - started)
    log.info("warm-up done in %.1f s", time.perf_counter() - begun)


def steps() -> Iterator[tuple[str, Callable[[], object]]]:
    """(what, a call) for each cache entry of the pages' first views, in visiting
    order. Each call is one entry, so the warm-up can let users go first between them.
    The other pages' modules are imported once the first page's view is computed."""
    from mnistlens.metrics import predict_logits

    # isort: split
    import cache
    import catalog
    import defaults
    import session
    import sidebar

    name, index = defaults.MODEL, defaults.INDEX
    if name not in catalog.shipped_models():
        return
    yield "test set", catalog.get_test_set
    model, meta = session.get_model(name)
    images, labels = catalog.get_test_set()
    digit = sidebar.Choice(name, model, meta, images[index].clone(), int(labels[index]), index, "")

    # Explain a digit: the verdicts that choose the methods, their maps, the invariance
    # strip (its counterfactual panel searches only when switched on: near the end).
    usable = [m for m in cache.all_methods() if cache.why_not(name, m) is None]
    candidates = [m for m in defaults.EXPLAIN_CANDIDATES if m in usable]
    # is it a digit at all? (the model's first verdict fits its detector: ~1 s)
    yield f"digit-like {digit.digit}", lambda: cache.digit_like(name, digit.digit, digit.image)
    for method in candidates:
        yield f"verdict {method}", lambda m=method: cache.sanity(name, m, layers=1)
    target = None if defaults.EXPLAIN_TARGET == "predicted" else int(defaults.EXPLAIN_TARGET)
    for method in candidates:
        yield (
            f"explain {digit.digit} {method}",
            lambda m=method: cache.explanation(
                name,
                digit.digit,
                digit.image,
                m,
                target,
                defaults.EXPLAIN_BASELINE,
                defaults.EXPLAIN_STEPS,
            ),
        )
    yield (
        f"invariance {digit.digit}",
        lambda: cache.invariance_strip(name, digit.digit, digit.image),
    )
    probs = predict_logits(model, digit.image[None]).softmax(dim=1)[0]
    yield "imports", lambda: preload(LATER)

    # The other first views by cost, the cheap ones first, so that a visitor of one of
    # them waits for the least: Inside the network (the last hidden layer's profile,
    # the predicted class drawn) and Per-digit maps take a second together, Trust some
    # ten, Compare models several times that (its stress test most of it).
    _, hidden = cache.layers(name)
    if hidden:
        yield f"profile {hidden[-1]}", lambda: cache.unit_activations(name, hidden[-1])
    predicted = int(probs.argmax())
    yield f"dream {predicted}", lambda: cache.dream(name, predicted)

    method, n_maps = defaults.CLASS_METHODS[0], defaults.CLASS_IMAGES
    if cache.why_not(name, method) is None:
        yield f"per-digit {method}", lambda: cache.class_maps(name, method, n_maps)

    # Trust: each method measured, its whole randomization cascade, the figures.
    chosen = cache.in_order([m for m in defaults.TRUST_METHODS if m in usable], usable)
    n = defaults.TRUST_IMAGES
    yield "trust reference", lambda: cache.random_reference(name, n)
    for method in chosen:
        yield f"trust {method}", lambda m=method: cache.measured(name, n, m)
        yield f"cascade {method}", lambda m=method: cache.sanity(name, m)
    yield "trust figures", lambda: cache.comparison_figures(name, n, chosen)

    # Compare models: the report, its figures, the default pair and first disagreement.
    from mnistlens.comparison import stats
    from mnistlens.perturb import get_transform

    # isort: split
    import compare_cache

    choices = catalog.compare_choices()
    names = tuple(m for m in defaults.COMPARE_MODELS if m in choices)
    if len(names) >= 2:
        yield "compare report", lambda: compare_cache.compare_report(names)
        yield "compare figures", lambda: compare_cache.compare_figures(names)
        result = compare_cache.compare_report(names)
        a, b = stats.default_pair(result) or (names[0], names[-1])
        if a != b:
            yield f"compare {a} vs {b}", lambda: compare_cache.pair_maps(names, a, b)
        first = result["disagreements"][0]["index"] if result["disagreements"] else 0
        if result["disagreements"]:
            yield f"compare grid {first}", lambda: compare_cache.disagreement_grid(names, first)
        common = defaults.compare_cf_target(compare_cache.test_probabilities(names, first))
        for member in names:
            yield (
                f"compare counterfactual {member} {first} to {common}",
                lambda m=member: compare_cache.model_counterfactual(m, first, common),
            )
        # What each model tolerates: the stress table (the page's slowest entry: some
        # forty changed sets through every model), its figures, the first examples.
        for member in names:
            yield f"compare stress test {member}", lambda m=member: compare_cache.model_stress(m)
        yield "compare stress figures", lambda: compare_cache.stress_figures(names)
        shown = defaults.COMPARE_TRANSFORM
        severity = get_transform(shown).hardest  # the page's first severity
        yield (
            f"compare stress {shown} {severity:g}",
            lambda: compare_cache.stress_examples(names, shown, severity),
        )

    # Last, what a first visit rarely meets: the Explain page's counterfactual (its
    # search is off until switched on; the first in the process also encodes the
    # training digits for the prototypes, Compare's above did already), and the
    # Concepts page, the default concepts at the model's default layers, called with the
    # page's arguments (no upload, no drawing).
    reach, mode = defaults.explain_cf_target(probs), defaults.EXPLAIN_CF_MODE
    yield (
        f"counterfactual {digit.digit} to {reach}",
        lambda: cache.counterfactual(name, digit.digit, digit.image, reach, mode),
    )
    from mnistlens.concepts import list_concepts

    # isort: split
    import concept_cache

    layers, _ = concept_cache.concept_layers(name)
    if layers:
        ordered = tuple(c for c in list_concepts() if c in defaults.CONCEPTS)
        layers = tuple(h for h in cache.layers(name)[1] if h in layers)
        yield (
            "concepts",
            lambda: concept_cache.concept_scores(
                name, ordered, layers, defaults.CONCEPT_FAST, (), defaults.CONCEPT_NAME, None
            ),
        )
