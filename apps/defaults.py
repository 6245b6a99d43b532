"""What each page shows before its user chooses anything: the first view of the explorer.

The sidebar and the pages start from these values; warm.py computes exactly these views
when the server starts, so the first visit of a page finds them in the caches. A value
changed here changes both.
"""

from __future__ import annotations

MODEL = "cnn.pt"  # the sidebar's model
INDEX = 42  # the sidebar's test image (a 4)

# Explain a digit: these methods, where they can explain the model and pass its sanity
# check (all three do on the shipped CNN; guided backprop fails it), with these options.
EXPLAIN_CANDIDATES = ("saliency", "integrated_gradients", "grad_cam")
EXPLAIN_TARGET = "predicted"
EXPLAIN_BASELINE = "black"
EXPLAIN_STEPS = 50
# Its counterfactual panel: this mode, to the model's runner-up (`explain_cf_target`).
EXPLAIN_CF_MODE = "proto"

# Concepts: these built-in concepts at the model's default layers, linear-SVM CAVs (not
# fast), and no concept of your own yet (named this once it has pictures).
CONCEPTS = ("closed_loop", "vertical_stroke", "horizontal_bar")
CONCEPT_FAST = False
CONCEPT_NAME = "yours"

# Per-digit maps.
CLASS_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "grad_cam")
CLASS_IMAGES = 500

# Trust. Guided backprop is in because it fails: the page shows what failing looks like.
TRUST_METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "guided_backprop",
    "grad_cam",
)
TRUST_IMAGES = 100

# Compare models: these, where their checkpoints exist (else the first two offered).
COMPARE_MODELS = ("linear", "mlp", "lenet", "cnn")
# Its stress examples: this transform, at its hardest severity.
COMPARE_TRANSFORM = "translate"
# Its counterfactuals start from `compare_cf_target` below (proto mode, the only one there).


def explain_cf_target(probs) -> int:
    """The class the Explain page's counterfactual starts from, for a digit: the model's
    runner-up, from its (10,) probabilities (the library's default target)."""
    from mnistlens.counterfactual import runner_up

    return int(runner_up(probs[None])[0])


def compare_cf_target(probabilities: dict[str, list[float]]) -> int:
    """The class the Compare page's counterfactuals start from, from each model's (10,)
    probabilities (the first model first): the first model's runner-up, unless a chosen
    model already says it, then the first model's next class that none says: on a
    disagreement the first model's runner-up is often what another model says (test
    image 2044: the linear model says 7, its runner-up 2 is the other three's answer),
    and a model that says it already needs no change to compare."""
    first = next(iter(probabilities.values()))
    said = {max(range(10), key=p.__getitem__) for p in probabilities.values()}
    ranked = sorted(range(10), key=lambda d: -first[d])  # the first model's own answer first
    return next((d for d in ranked[1:] if d not in said), ranked[1])
