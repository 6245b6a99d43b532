"""Methods that change the input and watch the score: occlusion."""

from __future__ import annotations

import torch
from captum.attr import Occlusion
from torch import nn

from ..errors import MnistlensError
from .common import Target, chunked
from .registry import register_method


@register_method(
    "occlusion",
    "score drop when a patch is blacked out, averaged over the patches covering a pixel",
    signed=True,
)
def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    window: int = 4,
    stride: int = 2,
    baseline: float = 0.0,
    batch_size: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): score drop when a window x window patch is
    replaced by `baseline`, averaged over the patches covering each pixel.
    (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    if not 1 <= window <= 28 or not 1 <= stride <= 28:
        raise MnistlensError(f"occlusion window and stride must be 1-28, got {window}, {stride}")
    method = Occlusion(model)
    return chunked(
        lambda x, t: method.attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=baseline,
            target=t,
            perturbations_per_eval=8,
        ),
        model,
        images,
        target,
        batch_size,
        progress,
        "occlusion",
    )
