"""Methods that change the input and watch the score: occlusion."""

from __future__ import annotations

import torch
from torch import nn

from mnistlens.attribution.common import Target, check_count, chunked, placed
from mnistlens.attribution.registry import register_method
from mnistlens.device import Device, rows_per_pass
from mnistlens.graph import prepare_for_explanation
from mnistlens.models import FAST_ROWS

# Captum is imported inside each method, not here: see the package docstring.


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
    device: Device = "auto",
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): score drop when a window x window patch is
    replaced by `baseline`, averaged over the patches covering each pixel.
    (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    check_count("occlusion window", window, 1, 28)
    check_count("occlusion stride", stride, 1, 28)
    from captum.attr import Occlusion  # local: see the note on Captum at the top

    # Occlusion is all forward passes: run them on the fast copy (batch norm folded,
    # channels-last), about 64 rows at a time, the cache-sized batch CPUs run fastest
    # (benchmarks/bench_attribution.py); on a GPU, rows_per_pass's more.
    model, device = placed(model, device)
    rows = rows_per_pass(device, FAST_ROWS)
    method = Occlusion(prepare_for_explanation(model, keep=True))  # hooks nothing
    return chunked(
        lambda x, t: method.attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=baseline,
            target=t,
            perturbations_per_eval=max(1, rows // len(x)),
        ),
        model,
        images,
        target,
        batch_size,
        progress,
        "occlusion",
        device=device,
    )
