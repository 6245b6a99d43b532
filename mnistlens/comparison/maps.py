"""Explaining several models on the same digits, and where one beats another."""

from __future__ import annotations

import torch
from torch import nn

from mnistlens import attribution as A
from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.explain import Explanation, explain
from mnistlens.metrics import predict_logits


def explain_models(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    methods: list[str] | tuple[str, ...] = ("saliency", "integrated_gradients"),
    target: A.Target = None,
    *,
    device: Device = "auto",
    **options: dict,
) -> dict[str, Explanation]:
    """The same images and methods through several models: -> model name -> Explanation.

    A method a model cannot run (Grad-CAM without a conv layer) is left out for that
    model only; `figures.plot_model_grid` draws the result with one scale per method.
    `device` as for `explain.explain`.
    """
    results = {}
    for name, model in models.items():
        usable = [m for m in methods if A.why_not(m, model) is None]
        opts = {
            m: o for m, o in options.items() if A.resolve_method(m) in map(A.resolve_method, usable)
        }
        results[name] = explain(model, images, usable, target, measure=True, device=device, **opts)
    return results


def where_b_beats_a(
    model_a: nn.Module,
    model_b: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str = "integrated_gradients",
    examples: int = 6,
    indices: torch.Tensor | list[int] | None = None,
    *,
    device: Device = "auto",
    **options,
) -> dict:
    """What B looks at that A misses: on the images B gets right and A gets wrong, both
    models' maps for the true class.

    `indices`: those images, if already known (`stats.only_right(report, b, a)` reads
    them from a comparison, saving two passes over the images); else found here.

    -> {"indices": (K,) the images, "mean_a", "mean_b": (28, 28) mean maps over all K,
    "digits": (D,) the true digits present among them, sorted, "digit_counts": (D,) how
    many images of each, "digit_means_a", "digit_means_b": (D, 28, 28) mean map per
    digit, "examples_a", "examples_b": (min(K, examples), 28, 28) maps of the first
    images}. `device`: where the models run (see `mnistlens.device`); maps on the CPU.
    """
    images = A.check_images(images)
    if indices is None:
        right_a = predict_logits(model_a, images, device=device).argmax(dim=1) == labels
        right_b = predict_logits(model_b, images, device=device).argmax(dim=1) == labels
        indices = (right_b & ~right_a).nonzero()[:, 0]
    indices = torch.as_tensor(indices, dtype=torch.int64)
    if len(indices) == 0:
        raise MnistlensError("model B gets no image right that model A gets wrong here")
    x, y = images[indices], labels[indices]
    maps_a = A.attribute(method, model_a, x, y, device=device, **options)[:, 0]  # (K, 28, 28)
    maps_b = A.attribute(method, model_b, x, y, device=device, **options)[:, 0]
    # The images are of mixed digits, so the mean over all of them averages unrelated
    # strokes away; a mean per true digit keeps each digit's shape. `which` (K,) is each
    # image's position in `digits`, so one index_add sums every digit's maps at once.
    digits, which, counts = torch.unique(y, sorted=True, return_inverse=True, return_counts=True)

    def per_digit(maps: torch.Tensor) -> torch.Tensor:
        """(K, 28, 28) -> (D, 28, 28): the mean map of each digit's images."""
        sums = maps.new_zeros(len(digits), *maps.shape[1:]).index_add_(0, which, maps)
        return sums / counts[:, None, None]

    return {
        "indices": indices,
        "mean_a": maps_a.mean(dim=0),
        "mean_b": maps_b.mean(dim=0),
        "digits": digits,
        "digit_counts": counts,
        "digit_means_a": per_digit(maps_a),
        "digit_means_b": per_digit(maps_b),
        "examples_a": maps_a[:examples],
        "examples_b": maps_b[:examples],
    }
