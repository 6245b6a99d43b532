"""What the weights have learned, read directly from the parameters.

- softmax regression: one 28 x 28 template per digit (the weight row of its logit);
- MLP: each first-layer unit is a 28 x 28 pattern; its outgoing weights say which
  digits it votes for;
- CNN: first-layer filters, and each conv layer's feature maps for a given image.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import capture
from .errors import MnistlensError
from .models import conv_layer_names, evaluating


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def linear_templates(model: nn.Module) -> torch.Tensor:
    """Class templates of a softmax regression: weight rows as images -> (10, 28, 28).

    Positive weight = ink there raises the digit's logit. (The model normalizes its
    input first, which scales all templates by the same 1/std.)
    """
    layers = _linears(model)
    if len(layers) != 1 or layers[0].in_features != 28 * 28:
        raise MnistlensError(
            "class templates need a single linear layer on the 784 pixels (the `linear` "
            f"model); this model has {len(layers)} linear layers"
        )
    return layers[0].weight.detach().reshape(-1, 28, 28).clone()  # (10, 28, 28)


def first_layer_units(model: nn.Module) -> torch.Tensor:
    """The input weights of each first-layer unit of an MLP as images: -> (units, 28, 28)."""
    layers = _linears(model)
    if not layers or layers[0].in_features != 28 * 28:
        raise MnistlensError("this model has no fully connected first layer on the pixels")
    return layers[0].weight.detach().reshape(-1, 28, 28).clone()


def unit_class_influence(model: nn.Module) -> torch.Tensor:
    """How strongly each first-layer unit drives each class through the outgoing weights.

    The product of the weight matrices after the first layer (head @ ... @ fc2),
    i.e. the linear part of the path from a unit to the logits, ignoring the ReLUs
    in between: (10, units). For a one-hidden-layer MLP it is exactly the head.
    """
    layers = _linears(model)
    if len(layers) < 2 or layers[0].in_features != 28 * 28:
        raise MnistlensError("unit influence needs an MLP (two or more linear layers)")
    influence = layers[-1].weight.detach()
    for layer in reversed(layers[1:-1]):
        influence = influence @ layer.weight.detach()  # (10, width of the earlier layer)
    return influence  # (10, units)


def units_by_class(model: nn.Module, per_class: int = 4) -> list[tuple[int, list[int]]]:
    """For each digit, the first-layer units that drive it most: [(digit, [unit, ...])]."""
    influence = unit_class_influence(model)
    return [(d, influence[d].topk(per_class).indices.tolist()) for d in range(10)]


def conv_filters(model: nn.Module, layer: str | None = None) -> torch.Tensor:
    """Weights of a conv layer (default: the first) summed over input channels: -> (C, k, k)."""
    convs = {name: model.get_submodule(name) for name in conv_layer_names(model)}
    if not convs:
        raise MnistlensError("this model has no convolutional layer")
    name = layer or next(iter(convs))
    if name not in convs:
        raise MnistlensError(f"no conv layer {name!r}; conv layers: {', '.join(convs)}")
    return convs[name].weight.detach().sum(dim=1).clone()  # (C_out, k, k)


@torch.no_grad()
def feature_maps(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each conv layer's output for one image: (1, 28, 28) -> {name: (C, H, W)}."""
    names = conv_layer_names(model)
    if not names:
        raise MnistlensError("this model has no convolutional layer")
    with evaluating(model), capture(model, names) as acts:
        model(image.reshape(1, 1, 28, 28))
    return {name: acts[name][0] for name in names}
