"""Does a map explain the model? Measures of an explanation, not of the classifier.

A heatmap can look convincing and still say nothing about the model. These tests
ask the model itself:

- completeness: do the attributions add up to the score change they claim to explain?
- deletion / insertion (Petsiuk et al. 2018, RISE, arXiv:1806.07421): remove the pixels
  a map ranks highest first and watch the class probability fall (fast fall = low area
  under the curve = faithful map); or insert them into a blank image and watch it rise
  (high area = faithful). A random ranking is the reference to beat.
- model-randomization sanity check (Adebayo et al. 2018, arXiv:1810.03292): re-initialize
  the layers from the top down; a map that barely changes while the model is destroyed
  is not explaining the model (guided backprop is the known offender).

All functions take tensors and return tensors; `plots.py` draws them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import attribution as A
from .models import evaluating


def completeness_error(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """|sum(map) - (f(x) - f(baseline))| / |f(x) - f(baseline)| per image: -> (N,).

    Meaningful for methods that claim completeness (integrated gradients, DeepLIFT,
    GradientSHAP in expectation); baseline defaults to black.
    """
    baseline = torch.zeros_like(images) if baseline is None else baseline.expand_as(images)
    scores = A.predict(model, images).gather(1, target[:, None])[:, 0]
    base = A.predict(model, baseline).gather(1, target[:, None])[:, 0]
    gap = scores - base
    return (maps.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs().clamp(min=1e-8)


def _pixel_order(maps: torch.Tensor) -> torch.Tensor:
    """Pixels from most to least important: (N, 1, 28, 28) -> (N, 784) indices."""
    return maps.flatten(1).argsort(dim=1, descending=True, stable=True)


@torch.no_grad()
def perturbation_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    mode: str = "deletion",
    steps: int = 28,
    baseline: float = 0.0,
) -> torch.Tensor:
    """Target-class probability as the top-ranked pixels are deleted or inserted.

    deletion: start from the image, set the top k pixels to `baseline`.
    insertion: start from a `baseline` image, copy in the top k pixels.
    k goes from 0 to 784 in `steps` equal strides.

    images, maps (N, 1, 28, 28); target (N,) -> probabilities (N, steps + 1).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be deletion or insertion, got {mode!r}")
    n = images.shape[0]
    order = _pixel_order(maps)  # (N, 784)
    flat = images.flatten(1)  # (N, 784)
    counts = torch.linspace(0, 784, steps + 1).round().long()
    curve = torch.empty(n, steps + 1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(784).expand(n, 784))  # rank of each pixel
    with evaluating(model):
        for j, k in enumerate(counts.tolist()):
            top = rank < k  # (N, 784): pixels among the k most important
            if mode == "deletion":
                x = torch.where(top, torch.full_like(flat, baseline), flat)
            else:
                x = torch.where(top, flat, torch.full_like(flat, baseline))
            probs = model(x.view(n, 1, 28, 28)).softmax(dim=1)
            curve[:, j] = probs.gather(1, target[:, None])[:, 0]
    return curve


def area_under_curve(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves sampled at equal strides on [0, 1]: (N, S + 1) -> (N,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def random_maps(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random pixel ranking, the reference any map must beat: -> (N, 1, 28, 28)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(images.shape, generator=gen)


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


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row, ties averaged: (N, D), (N, D) -> (N,)."""
    ra = torch.stack([_ranks(r) for r in a])
    rb = torch.stack([_ranks(r) for r in b])
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    return ((ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp(min=1e-12)).float()


def randomization_check(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor | None = None,
    seed: int = 0,
    **options,
) -> dict[str, float]:
    """Cascading model randomization: re-initialize layers from the output down and
    compare each map with the trained model's (Adebayo et al. 2018).

    Returns {layer: mean Spearman rank correlation of |map| with the original}, in
    the order layers were randomized (top first). Near 1 all the way down = the
    map does not depend on what the model learned. The model is not modified (a
    copy is randomized). Methods that multiply by the input (input x gradient,
    integrated gradients) keep a high correlation from the shared zero background
    alone: compare them with each other, not with saliency.
    """
    images = A.check_images(images)
    if target is None:
        target = A.predict(model, images).argmax(dim=1)
    original = A.attribute(method, model, images, target, **options).abs().flatten(1)
    randomized = copy.deepcopy(model)
    layers = [
        (name, m) for name, m in randomized.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    result = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, layer in reversed(layers):
            layer.reset_parameters()
            maps = A.attribute(method, randomized, images, target, **options).abs().flatten(1)
            result[name] = float(_spearman(original, maps).mean())
    return result


def compare_methods(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str],
    randomization: bool = False,
    randomization_images: int = 20,
) -> tuple[dict[str, dict], dict[str, dict[str, torch.Tensor]]]:
    """Every measure for several methods on the same images, explaining the prediction.

    Returns (report, curves): report[method] holds `deletion_auc`, `insertion_auc`
    (means), `completeness_error_median` and, with randomization=True,
    `randomization` (see `randomization_check`, on the first images only: it
    re-runs the method once per layer); curves[method][mode] is (N, S + 1). A
    "random" ranking comes first as the reference.
    """
    images = A.check_images(images)
    target = A.predict(model, images).argmax(dim=1)
    report: dict[str, dict] = {}
    curves: dict[str, dict[str, torch.Tensor]] = {}
    for name in ["random", *methods]:
        maps = random_maps(images) if name == "random" else A.attribute(name, model, images, target)
        curves[name] = {
            mode: perturbation_curve(model, images, maps, target, mode)
            for mode in ("deletion", "insertion")
        }
        entry = {
            f"{mode}_auc": float(area_under_curve(c).mean()) for mode, c in curves[name].items()
        }
        if name != "random":
            entry["completeness_error_median"] = float(
                completeness_error(model, images, maps, target).median()
            )
            if randomization:
                k = randomization_images
                entry["randomization"] = randomization_check(model, images[:k], name, target[:k])
        report[name] = entry
    return report, curves
