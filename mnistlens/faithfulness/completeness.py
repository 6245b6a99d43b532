"""Completeness: does a map sum to the score it explains?"""

from __future__ import annotations

import torch
from torch import nn

from mnistlens import attribution as A
from mnistlens.device import Device, model_on, resolve_device
from mnistlens.metrics import predict_logits


def _target_scores(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor, device: torch.device
) -> torch.Tensor:
    return predict_logits(model, images, device=device).gather(1, target[:, None])[:, 0]  # (N,)


def completeness_error(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | None = None,
    reference_scores: torch.Tensor | None = None,
    *,
    device: Device = "auto",
) -> torch.Tensor:
    """|sum(map) - (f(x) - f(baseline))| / |f(x) - f(baseline)| per image: -> (N,).

    Meaningful for methods that claim completeness (integrated gradients, DeepLIFT,
    GradientSHAP in expectation). The reference is `reference_scores` (N,) if given,
    else f(baseline) with baseline default black. The scores are computed on `device`
    ("auto": CUDA if available, else the CPU); the errors come back on the CPU.
    """
    device = resolve_device(device)
    model = model_on(model, device)  # once for both passes
    if reference_scores is None:
        baseline = torch.zeros_like(images) if baseline is None else baseline.expand_as(images)
        reference_scores = _target_scores(model, baseline, target, device)
    gap = _target_scores(model, images, target, device) - reference_scores
    return (maps.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs().clamp(min=1e-8)


def method_completeness_error(
    method: str,
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    *,
    device: Device = "auto",
    **options,
) -> torch.Tensor | None:
    """completeness_error against the reference `method` used with these `options`
    (its baseline, or GradientSHAP's expected baseline), computed on `device`; None if
    the method does not claim completeness: -> (N,) or None."""
    spec = A.get_spec(method)
    if not spec.claims_completeness:
        return None
    device = resolve_device(device)
    model = model_on(model, device)
    reference = spec.reference(model, images, target, device=device, **options)
    return completeness_error(
        model, images, maps, target, reference_scores=reference, device=device
    )
