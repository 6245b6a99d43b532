"""Methods read off one backward pass: saliency, input x gradient, guided backprop."""

from __future__ import annotations

import torch
from torch import nn

from mnistlens.attribution.common import Target, chunked, placed
from mnistlens.attribution.registry import register_method
from mnistlens.device import Device
from mnistlens.graph import prepare_for_explanation, with_relu_modules

# Captum is imported inside each method, not here: see the package docstring.
#
# Each method runs on `prepare_for_explanation(model)`: the same function with batch norm
# folded into the convolutions and a channels-last layout, faster per gradient for a CNN
# and cheap to make. The targets are still resolved on the model as given (on `device`:
# the model itself on the CPU, a copy on a GPU).


@register_method("saliency", "|d score / d pixel|: where a small change moves the score most")
def saliency(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """|d score_target / d pixel| (Simonyan et al. 2013): (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    from captum.attr import Saliency  # local: see the note on Captum at the top

    model, device = placed(model, device)
    method = Saliency(prepare_for_explanation(model, keep=True))  # hooks nothing
    return chunked(
        lambda x, t: method.attribute(x, target=t, abs=True),
        model,
        images,
        target,
        batch_size,
        progress,
        "saliency",
        device=device,
    )


@register_method(
    "input_x_gradient",
    "pixel x gradient, signed: a first-order estimate of each pixel's contribution",
    aliases=("ixg",),
    signed=True,
)
def input_x_gradient(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """Pixel x gradient, signed (Shrikumar et al. 2016): (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    from captum.attr import InputXGradient  # local: see the note on Captum at the top

    model, device = placed(model, device)
    method = InputXGradient(prepare_for_explanation(model, keep=True))  # hooks nothing
    return chunked(
        lambda x, t: method.attribute(x, target=t),
        model,
        images,
        target,
        batch_size,
        progress,
        "input x gradient",
        device=device,
    )


@register_method(
    "guided_backprop",
    "only positive gradients pass back through each ReLU: sharp, but blind to upper layers",
    aliases=("gbp",),
    signed=True,  # positive through the ReLUs, but the first layer's weights are signed
    needs_relu_modules=True,
)
def guided_backprop(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2014): only positive gradients pass
    back through each ReLU. Sharp pictures, but known to ignore the model's upper
    layers (Adebayo et al. 2018): see the sanity checks. Functional ReLUs are first
    rewritten into modules (`graph.with_relu_modules`), as Captum needs."""
    from captum.attr import GuidedBackprop  # local: see the note on Captum at the top

    model, device = placed(with_relu_modules(model), device)
    method = GuidedBackprop(prepare_for_explanation(model))
    return chunked(
        lambda x, t: method.attribute(x, target=t),
        model,
        images,
        target,
        batch_size,
        progress,
        "guided backprop",
        device=device,
    )
