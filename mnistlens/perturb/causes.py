"""Naming the cause of a gap: which factor of the digit makes B right where A is wrong.

A cause is something you can change and watch the answer move. Take the test images
the better model B gets right and the worse model A gets wrong (the gap), normalize
each for one factor (`normalize.FACTORS`: position, slant, size, stroke width) and count
how many A then gets right. "Of the 41 images the CNN gets right and the MLP wrong,
re-centring fixes 2, deslanting 9": the share of the gap each factor accounts for.

Two controls keep the count honest: how many of the images both models get wrong the
same normalization fixes for A (a factor that fixes A's errors everywhere at that rate
is no more about the gap than about A), and how many images A got right it breaks.

    >>> found = gap_causes(mlp, cnn, images, labels, names=("mlp", "cnn"))
    >>> found["largest"], found["factors"][0]["fixed"], found["n_gap"]
    ('slant', 2, 41)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.perturb.normalize import FACTORS

EXAMPLES = 6  # fixed images listed per factor (indices, and the figure's columns)

# what a factor's normalization is called in a sentence
VERBS = {
    "position": "re-centring",
    "slant": "deslanting",
    "size": "rescaling",
    "stroke width": "normalizing the stroke width",
    "all": "all four together",
}


def _all_factors(images: torch.Tensor) -> torch.Tensor:
    """Every factor of FACTORS, in order: (N, 1, 28, 28) -> same."""
    for normalize in FACTORS.values():
        images = normalize(images)
    return images


def normalize_for(factor: str, images: torch.Tensor) -> torch.Tensor:
    """Normalize images for a factor of FACTORS by name, or "all" of them in turn:
    (N, 1, 28, 28) -> same. Each image is normalized on its own, so a subset gives the
    same images as the whole set."""
    if factor == "all":
        return _all_factors(images)
    if factor not in FACTORS:
        raise MnistlensError(f"unknown factor {factor!r}; choose from {', '.join(FACTORS)}, all")
    return FACTORS[factor](images)


def normalized_correct(
    models: dict,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    factors: dict[str, Callable] | None = None,
    device: Device = "auto",
) -> dict[str, dict[str, torch.Tensor]]:
    """Which images each model gets right, unchanged and normalized for each factor:
    model -> {"clean": (N,) bool, factor: (N,) bool, ...}. Each normalized set is made
    once for every model.

    models: name -> model or (model, metadata); factors: name -> normalization
    (default `normalize.FACTORS`, plus "all": every one of them in turn). For each of
    `normalize.FACTORS`, also the opposite change of the same size (strength -1), under
    the key (factor, "opposite"): the control `count_causes` sets beside it.
    """
    from mnistlens.data import check_images
    from mnistlens.metrics import check_labels, predict_logits
    from mnistlens.models import modules_of

    images, labels = check_images(images), check_labels(labels)
    if len(images) != len(labels):
        raise MnistlensError(f"{len(images)} images but {len(labels)} labels; give one each")
    modules = modules_of(models)
    factors = factors or {**FACTORS, "all": _all_factors}
    sets = {"clean": images, **{f: normalize(images) for f, normalize in factors.items()}}
    for f in factors:
        if f in FACTORS:
            sets[f, "opposite"] = FACTORS[f](images, strength=-1.0)
    return {
        name: {
            f: predict_logits(model, x, device=device).argmax(dim=1) == labels
            for f, x in sets.items()
        }
        for name, model in modules.items()
    }


def count_causes(correct: dict[str, dict[str, torch.Tensor]], a: str, b: str) -> dict:
    """Per factor, how much of B's lead over A normalizing the digit takes away, from
    `normalized_correct`'s answer.

    -> JSON-ready: {"a", "b", "n_images", "n_gap" (B right, A wrong), "gap_indices",
    "n_both_wrong", "n_a_right", "a_accuracy", "factors": [{"factor", "fixed" (of the
    gap, A right after), "share" (fixed / n_gap), "fixed_indices" (up to EXAMPLES),
    "b_kept" (of the gap, B still right after), "fixed_both_wrong" (of the images both
    get wrong, A right after), "opposite_fixed" (of the gap, A right after the opposite
    change of the same size; None for "all"), "net" (fixed - opposite_fixed), "broken"
    (of the images A gets right, A wrong after), "a_accuracy_after" (A on every
    normalized image)}], "largest" (the factor with the
    largest net count; None if for none taking it away fixes more than the opposite)}.
    """
    a_right, b_right = correct[a]["clean"], correct[b]["clean"]
    gap = b_right & ~a_right
    both_wrong = ~a_right & ~b_right
    rows = []
    for factor in correct[a]:
        if factor == "clean" or isinstance(factor, tuple):
            continue
        a_after, b_after = correct[a][factor], correct[b][factor]
        fixed = gap & a_after
        control = correct[a].get((factor, "opposite"))
        opposite = None if control is None else int((gap & control).sum())
        rows.append(
            {
                "factor": factor,
                "fixed": int(fixed.sum()),
                "share": float(fixed.sum() / gap.sum()) if gap.any() else 0.0,
                "fixed_indices": fixed.nonzero().squeeze(1)[:EXAMPLES].tolist(),
                "b_kept": int((gap & b_after).sum()),
                # the same-sized change the other way: if it fixes as many, the factor
                # is not what matters, any change of the digit is
                "opposite_fixed": opposite,
                "net": None if opposite is None else int(fixed.sum()) - opposite,
                "fixed_both_wrong": int((both_wrong & a_after).sum()),
                "broken": int((a_right & ~a_after).sum()),
                "a_accuracy_after": float(a_after.float().mean()),
            }
        )
    # a factor explains the gap as far as taking it away fixes more than the opposite
    # change of the same size does (which any change of the digit might)
    single = [r for r in rows if r["opposite_fixed"] is not None and r["net"] > 0]
    return {
        "a": a,
        "b": b,
        "n_images": len(a_right),
        "n_gap": int(gap.sum()),
        "gap_indices": gap.nonzero().squeeze(1).tolist(),
        "n_both_wrong": int(both_wrong.sum()),
        "n_a_right": int(a_right.sum()),
        "a_accuracy": float(a_right.float().mean()),
        "factors": rows,
        "largest": max(single, key=lambda r: r["net"])["factor"] if single else None,
    }


def gap_causes(
    model_a: nn.Module,
    model_b: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    names: tuple[str, str] = ("A", "B"),
    factors: dict[str, Callable] | None = None,
    device: Device = "auto",
) -> dict:
    """`count_causes` for one pair: A (expected to be worse) and B on (N, 1, 28, 28)
    images in [0, 1] with (N,) labels, normally the 10k test set."""
    models = {names[0]: model_a, names[1]: model_b}
    correct = normalized_correct(models, images, labels, factors=factors, device=device)
    return count_causes(correct, *names)


def sentence(found: dict) -> str:
    """The result in one sentence, with its controls, from the numbers alone."""
    a, b, n = f"`{found['a']}`", f"`{found['b']}`", found["n_gap"]
    if n == 0:
        return f"{b} gets no test image right that {a} gets wrong: there is no gap to explain."
    parts = [
        f"{VERBS.get(r['factor'], r['factor'])} {r['fixed']}"
        + ("" if r.get("opposite_fixed") is None else f" (the opposite: {r['opposite_fixed']})")
        for r in found["factors"]
    ]
    text = (
        f"Of the {n} images {b} gets right and {a} wrong, normalizing the digit fixes "
        f"{a}'s answer as follows: {', '.join(parts)}."
    )
    if found["largest"] is None:
        return text + (
            " For no factor does taking it away fix more than the opposite change of the "
            "same size: none of them explains the gap."
        )
    top = next(r for r in found["factors"] if r["factor"] == found["largest"])
    alike = [
        r["factor"]
        for r in found["factors"]
        if r["net"] is not None and r["net"] <= 0 and r["fixed"] > 0
    ]
    text += (
        f" The factor that explains most is {top['factor']}: taking it away fixes "
        f"{top['fixed']} ({top['share']:.0%} of the gap), {top['net']} more than the opposite "
        f"change of the same size; it also fixes {top['fixed_both_wrong']} of the "
        f"{found['n_both_wrong']} images both get wrong and breaks {top['broken']} of the "
        f"{found['n_a_right']:,} {a} got right."
    )
    if alike:
        text += (
            f" For {', '.join(alike)} the opposite change fixes as many: any change of the "
            "digit would, so it is not a cause."
        )
    return text
