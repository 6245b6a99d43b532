"""Sanity checks (Adebayo et al. 2018): do the maps change when the model or the data does?"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mnistlens import attribution as A
from mnistlens.device import Device, fork_rng, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.metrics import predict_logits


def _ranks(row: torch.Tensor) -> torch.Tensor:
    """Ranks of a 1-D tensor, ties sharing their average rank (as Spearman needs:
    the many exact zeros of a map's background must not be ordered by position)."""
    values, order = row.sort()
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = (ends - counts + ends - 1) / 2  # mean 0-based rank of each tie group
    ranks = torch.empty_like(row, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def _spearman(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation per row, ties averaged, over the entries where `mask`
    is True (all by default): (N, D), (N, D), (N, D) bool -> (N,)."""
    out = torch.empty(len(a))
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if mask is not None:
            x, y = x[mask[i]], y[mask[i]]
        rx, ry = _ranks(x), _ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        out[i] = float((rx * ry).sum() / (rx.norm() * ry.norm()).clamp(min=1e-12))
    return out


INK = 0.1  # a pixel brighter than this is part of the digit


SANITY_THRESHOLD = 0.7


SANITY_RULE = (
    f"pass if the mean Spearman rank correlation of |map| over the digit's pixels "
    f"(input > {INK}) stays below {SANITY_THRESHOLD} once the top layer is re-initialized"
)


def randomization_check(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor | None = None,
    seed: int = 0,
    region: str = "ink",
    layers: int | None = None,
    *,
    device: Device = "auto",
    **options,
) -> dict[str, float]:
    """Cascading model randomization: re-initialize layers from the output down and
    compare each map with the trained model's (Adebayo et al. 2018).

    Returns {layer: mean Spearman rank correlation of |map| with the original}, in
    the order layers were randomized (top first: the reverse of execution order, from
    `graph.analyze`). Near 1 all the way down = the map does not depend on what the
    model learned. The model is not modified (a copy is randomized).

    region: "ink" correlates over the digit's pixels only (input > 0.1), "all" over
    all 784. Methods that multiply by the input (input x gradient, IG, DeepLIFT) are
    zero on the background of both maps, and that shared background alone keeps an
    all-pixel correlation near 1 (0.99 on the shipped CNN after randomizing the head,
    against 0.38 over the ink), so "ink" is what tells the methods apart.

    layers: stop after re-initializing this many layers from the top (None: all).
    `sanity_verdict` reads only the first, so `layers=1` gives the verdict for two
    attribution passes instead of one per layer plus one (~5x less on the CNN).

    device: where the maps are computed ("auto": CUDA if available, else the CPU). The
    layers are re-initialized on a copy of `model` where it is, then explained on
    `device`, so a CPU model gets the same random weights whatever the device.
    """
    if region not in ("ink", "all"):
        raise MnistlensError(f"region must be ink or all, got {region!r}")
    if layers is not None and (
        isinstance(layers, bool) or not isinstance(layers, int) or layers < 1
    ):
        raise MnistlensError(
            f"layers must be a whole number >= 1 (or None for all), got {layers!r}"
        )
    images = A.check_images(images).cpu()
    device = resolve_device(device)
    if target is None:
        target = predict_logits(model, images, device=device).argmax(dim=1)
    mask = (images > INK).flatten(1) if region == "ink" else None
    original = A.attribute(method, model, images, target, device=device, **options)
    original = original.abs().flatten(1)
    randomized = copy.deepcopy(model)
    names = analyze(randomized).parameter_layers
    if not names:
        raise MnistlensError(
            "model randomization re-initializes conv and linear modules, and this model has "
            "none (a torch.export program keeps its weights as plain tensors)"
        )
    result = {}
    with fork_rng(device):
        torch.manual_seed(seed)
        for name in list(reversed(names))[:layers]:
            randomized.get_submodule(name).reset_parameters()
            maps = A.attribute(method, randomized, images, target, device=device, **options)
            maps = maps.abs().flatten(1)
            result[name] = float(_spearman(original, maps, mask).mean())
    return result


def sanity_verdict(randomization: dict[str, float]) -> str:
    """ "pass" or "fail" from `randomization_check(..., region="ink")`, by SANITY_RULE.

    The threshold separates the known cases on the shipped CNN (20 test images):
    guided backprop keeps 0.96 after the head is re-initialized (Adebayo et al.'s
    finding), while saliency (0.21), IG (0.38), DeepLIFT (0.44), occlusion (0.42),
    Grad-CAM (0.07) all fall well below 0.7.
    """
    top = next(iter(randomization.values()))
    return "pass" if top < SANITY_THRESHOLD else "fail"


def data_randomization_check(
    model: nn.Module,
    shuffled: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor | None = None,
    *,
    device: Device = "auto",
    **options,
) -> torch.Tensor:
    """Adebayo et al.'s second sanity check: the same method on a model trained on the
    true labels and on the same architecture trained on permuted labels.

    -> (N,) Spearman rank correlation of |map| over the digit's pixels (input > INK),
    both maps explaining `target` (default: `model`'s prediction). A method that explains
    what the model learned gives maps far apart (low correlation); one that mostly
    redraws the input (guided backprop) keeps them close. Maps are computed on `device`
    ("auto": CUDA if available, else the CPU).
    """
    images = A.check_images(images).cpu()
    device = resolve_device(device)
    if target is None:
        target = predict_logits(model, images, device=device).argmax(dim=1)
    mask = (images > INK).flatten(1)
    real = A.attribute(method, model, images, target, device=device, **options)
    fake = A.attribute(method, shuffled, images, target, device=device, **options)
    real, fake = real.abs().flatten(1), fake.abs().flatten(1)
    return _spearman(real, fake, mask)
