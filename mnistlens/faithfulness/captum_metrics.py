"""Captum's own measures of a map: infidelity and max-sensitivity."""

from __future__ import annotations

import torch
from torch import nn

from mnistlens import attribution as A
from mnistlens.device import Device, OnDevice, fork_rng, model_on, resolve_device


def infidelity(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    noise: float = 0.03,
    n_samples: int = 10,
    seed: int = 0,
    *,
    device: Device = "auto",
) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019, arXiv:1901.09392) by `captum.metrics.infidelity`:
    how badly map . I predicts the score drop f(x) - f(x - I) for Gaussian noise I
    (std `noise` per pixel), with each map optimally rescaled (normalize=True) so that
    methods in different units compare. Lower = more faithful. -> (N,).

    Measured on the shipped CNN (20 test images, noise 0.03): saliency 0.36, IG 0.36,
    Grad-CAM 0.40 against 0.37 for a random ranking. Noise on every pixel at once asks
    whether the map predicts the score's response to all pixels moving together,
    which none of these maps is made for; `compare_methods` therefore reports the
    random ranking's infidelity too, and deletion/insertion remain the main measure.

    The noise is drawn on the CPU and only the model's forward passes run on `device`
    ("auto": CUDA if available, else the CPU), so a GPU gives the CPU's numbers up to
    rounding.
    """
    from captum.metrics import infidelity as captum_infidelity

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise_sample = torch.randn_like(inputs) * noise
        return noise_sample, inputs - noise_sample

    device = resolve_device(device)
    forward = OnDevice(model_on(model, device), device)  # CPU tensors in and out
    images, maps, target = images.cpu(), maps.cpu(), target.cpu()
    with fork_rng(device), A.explaining(forward):
        torch.manual_seed(seed)
        return captum_infidelity(
            forward,
            perturb,
            images,
            maps,
            target=target,
            n_perturb_samples=n_samples,
            normalize=True,
        ).detach()


def sensitivity_max(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    *,
    device: Device = "auto",
    **options,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019) by `captum.metrics.sensitivity_max`: the
    largest change of the map (Frobenius norm) when the image moves by at most `radius`
    per pixel. Lower = more stable; it says nothing about faithfulness alone. -> (N,).

    The perturbations are drawn on the CPU; the maps are computed on `device` ("auto":
    CUDA if available, else the CPU)."""
    from captum.metrics import sensitivity_max as captum_sensitivity_max

    device = resolve_device(device)

    def explanation(inputs, target: torch.Tensor):
        if isinstance(inputs, tuple):  # Captum passes perturbed inputs as a 1-tuple
            return (A.attribute(method, model, inputs[0], target, device=device, **options),)
        return A.attribute(method, model, inputs, target, device=device, **options)

    images, target = images.cpu(), target.cpu()
    with fork_rng(device):
        torch.manual_seed(seed)
        return captum_sensitivity_max(
            explanation, images, perturb_radius=radius, n_perturb_samples=n_samples, target=target
        ).detach()
