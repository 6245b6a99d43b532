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
    device: Device = "auto",
) -> dict:
    """mode -> {"valid", "l1_median", "l0_median", "plausibility_median", "agreement":
    {name: share}, "seconds_per_digit"} on (N, 1, 28, 28) images, JSON-ready."""
    table = {}
    for mode in modes:
        found = counterfactuals(model, images, mode=mode, autoencoder=autoencoder, device=device)
        plausibility = found.plausibility
        table[mode] = {
            "valid": float(found.valid.float().mean()),
            "l1_median": float(found.l1.median()),
            "l0_median": int(found.l0.median()),
            "plausibility_median": None if plausibility is None else float(plausibility.median()),
            "agreement": {
                name: agreement(found, other, device) for name, other in (others or {}).items()
            },
            "seconds_per_digit": found.seconds / len(images),
        }
    return table
