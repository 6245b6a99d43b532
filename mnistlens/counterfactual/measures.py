"""How good are the counterfactuals? Valid, small, plausible, believed by other models.

`measure(model, images, others)` runs each mode on the same digits, each to its
runner-up class (a pertinent positive: its own), and sums them up: the share the model
now calls the target, the median L1 and L0 change, the median plausibility (the
autoencoder's reconstruction error), how often each of `others` calls a valid
counterfactual the target too (a change only the explained model reads explains
nothing to a person), and seconds per digit. What `mnistlens measure --counterfactuals`
prints and benchmarks/bench_counterfactual.py records.

    >>> table = measure(cnn, images[::100], {"mlp": mlp, "lenet": lenet})
    >>> table["proto"]["agreement"]["mlp"], table["plain"]["agreement"]["mlp"]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mnistlens.counterfactual.search import counterfactuals
from mnistlens.device import Device

DEFAULT_MODES = ("proto", "plain")  # what the prototype buys: the two side by side


EPS = 1e-8


@torch.no_grad()
def _rebuilt_error(images: torch.Tensor, classes: torch.Tensor, by_class: dict) -> torch.Tensor:
    """(N,) squared error of each image rebuilt by the autoencoder of its class in
    `classes` (N,)."""
    error = torch.empty(len(images))
    for digit in classes.unique().tolist():
        rows = (classes == digit).nonzero().squeeze(1)
        x = images[rows]
        error[rows] = (x - by_class[digit](x)).pow(2).flatten(1).sum(dim=1)
    return error


@torch.no_grad()
def im1(found, by_class: dict[int, nn.Module]) -> torch.Tensor:
    """IM1 (Van Looveren & Klaise 2019) of each counterfactual: its reconstruction error
    by the target class's autoencoder over that by the original class's, (N,); below 1
    the counterfactual looks more like a digit of the target class than of its own."""
    target = _rebuilt_error(found.images, found.target, by_class)
    original = _rebuilt_error(found.images, found.before, by_class)
    return target / (original + EPS)


@torch.no_grad()
def im2(found, by_class: dict[int, nn.Module], autoencoder: nn.Module) -> torch.Tensor:
    """IM2 of each counterfactual: how far apart the target class's autoencoder and the
    all-digit autoencoder rebuild it, over its ink, (N,); small when the counterfactual
    is a typical digit of the target class."""
    x = found.images
    rebuilt = torch.empty_like(x)
    for digit in found.target.unique().tolist():
        rows = (found.target == digit).nonzero().squeeze(1)
        rebuilt[rows] = by_class[digit](x[rows])
    apart = (rebuilt - autoencoder(x)).pow(2).flatten(1).sum(dim=1)
    return apart / (x.abs().flatten(1).sum(dim=1) + EPS)


def agreement(found, model: nn.Module, device: Device = "auto") -> float | None:
    """Share of the valid counterfactuals that `model` also calls the target (None if
    none is valid)."""
    from mnistlens.metrics import predict_logits

    if not bool(found.valid.any()):
        return None
    said = predict_logits(model, found.images, device=device).argmax(dim=1)
    return float((said == found.target)[found.valid].float().mean())


def measure(
    model: nn.Module,
    images: torch.Tensor,
    others: dict[str, nn.Module] | None = None,
    modes: Sequence[str] = DEFAULT_MODES,
    *,
    autoencoder: nn.Module | None = None,
    class_autoencoders: dict[int, nn.Module] | None = None,
    device: Device = "auto",
    **options,
) -> dict:
    """mode -> {"valid", "l1_median", "l0_median", "plausibility_median", "im1_median",
    "im2_median" (over the valid ones; None without `class_autoencoders`, default the
    shipped ones if present), "agreement": {name: share}, "seconds_per_digit"} on
    (N, 1, 28, 28) images, JSON-ready; options go to `counterfactuals` (e.g. kappa)."""
    from mnistlens.counterfactual.prototypes import load_autoencoder, load_class_autoencoders
    from mnistlens.errors import MnistlensError

    autoencoder = autoencoder or load_autoencoder()
    if class_autoencoders is None:
        try:
            class_autoencoders = load_class_autoencoders()
        except MnistlensError:  # not trained here: IM1 and IM2 are left out
            class_autoencoders = {}
    table = {}
    for mode in modes:
        found = counterfactuals(
            model, images, mode=mode, autoencoder=autoencoder, device=device, **options
        )
        plausibility = found.plausibility
        table[mode] = {
            "valid": float(found.valid.float().mean()),
            "l1_median": float(found.l1.median()),
            "l0_median": int(found.l0.median()),
            "plausibility_median": None if plausibility is None else float(plausibility.median()),
            **_interpretability(found, class_autoencoders, autoencoder),
            "agreement": {
                name: agreement(found, other, device) for name, other in (others or {}).items()
            },
            "seconds_per_digit": found.seconds / len(images),
        }
    return table


def _interpretability(found, by_class: dict, autoencoder: nn.Module) -> dict:
    """Median IM1 and IM2 over the valid counterfactuals (None if none is, or without
    the class autoencoders)."""
    if not by_class or not bool(found.valid.any()):
        return {"im1_median": None, "im2_median": None}
    valid = found.valid
    return {
        "im1_median": float(im1(found, by_class)[valid].median()),
        "im2_median": float(im2(found, by_class, autoencoder)[valid].median()),
    }
