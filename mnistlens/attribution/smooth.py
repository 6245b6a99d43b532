"""SmoothGrad over any method: the mean map over noisy copies of the image."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from mnistlens.attribution.common import (
    INPUT_RANGE,
    Target,
    check_count,
    chunked,
    placed,
    seeded_per_image,
)
from mnistlens.attribution.registry import get_spec, register_method
from mnistlens.device import Device, cpu_randn
from mnistlens.errors import MnistlensError
from mnistlens.graph import prepare_for_explanation

# A smoothed IG runs n_samples integrals: fewer steps each keep it affordable.
_BASE_DEFAULTS = {"integrated_gradients": {"n_steps": 16}}


@register_method(
    "smoothgrad",
    "the mean of another method's maps over noisy copies of the image (less speckle)",
    aliases=("sg",),
    random=True,
)
def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    base: str = "saliency",
    noise: float = 0.15,
    n_samples: int = 25,
    base_options: dict | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of `base` over noisy copies of the image.

    The same as Captum's NoiseTunnel(nt_type="smoothgrad"), written once for every
    method: each base runs through its own mnistlens function (so Grad-CAM keeps its
    layer choice and upsampling, IG its folded fast copy, occlusion its window), on
    all n_samples noisy copies of a chunk at once. Noise is seeded per image and drawn
    on the CPU, so a GPU smooths with the same noise.

    Args:
        base: any other method's name or alias.
        noise: Gaussian noise std as a fraction of the input range (0.15 = 15%).
        n_samples: noisy copies per image.
        base_options: options for the base method (default for IG: n_steps=16).
    (N, 1, 28, 28) -> (N, 1, 28, 28).
    """
    spec = get_spec(base)
    if spec.name == "smoothgrad":
        raise MnistlensError("smoothgrad cannot smooth itself; choose another base method")
    check_count("smoothgrad n_samples", n_samples)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise MnistlensError(f"smoothgrad noise must be a number >= 0, got {noise!r}")
    options = {**_BASE_DEFAULTS.get(spec.name, {}), **(base_options or {})}
    # n_samples gradients per image: on the fast copy (batch norm folded, channels-last;
    # the same function) they cost a third less. Made once, for every image.
    model, device = placed(model, device)
    fast = prepare_for_explanation(model)

    def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        noisy = x.repeat(n_samples, 1, 1, 1)  # (S * n, 1, 28, 28), sample-major
        noisy = noisy + cpu_randn(noisy) * noise * INPUT_RANGE
        maps = spec.function(fast, noisy, t.repeat(n_samples), device=device, **options)
        return maps.view(n_samples, *x.shape).mean(dim=0)  # (n, 1, 28, 28), on the CPU

    return chunked(
        seeded_per_image(compute, seed),
        model,
        images,
        target,
        batch_size,
        progress,
        "smoothgrad",
        device=device,
    )
