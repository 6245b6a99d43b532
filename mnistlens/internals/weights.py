"""What the weights have learned, read directly from the parameters.

- softmax regression: one 28 x 28 template per digit (the weight row of its logit);
- MLP: each first-layer unit is a 28 x 28 pattern; its outgoing weights say which
  digits it votes for;
- CNN: first-layer filters, and each conv layer's feature maps for a given image.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.internals.activations import capture
from mnistlens.models import evaluating


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
    convs = {name: model.get_submodule(name) for name in analyze(model).conv_layers}
    if not convs:
        raise MnistlensError("this model has no convolutional layer")
    name = layer or next(iter(convs))
    if name not in convs:
        raise MnistlensError(f"no conv layer {name!r}; conv layers: {', '.join(convs)}")
    return convs[name].weight.detach().sum(dim=1).clone()  # (C_out, k, k)


@torch.no_grad()
def feature_maps(
    model: nn.Module, image: torch.Tensor, rectified: bool = True
) -> dict[str, torch.Tensor]:
    """Each conv stage's feature maps for one image: (1, 28, 28) -> {layer: (C, H, W)}.

    rectified: take each stage after its ReLU (keyed by the ReLU's name, e.g. relu1),
    the maps the next stage reads: what a unit detected, >= 0. False: the raw conv
    outputs (keyed conv1, ...), whose negative half the ReLU throws away and whose
    scale batch norm has not yet fixed, so they read worse.
    """
    stages = analyze(model).stage_outputs()
    if not stages:
        raise MnistlensError("this model has no convolutional layer")
    names = list(stages.values()) if rectified else list(stages)
    with evaluating(model), capture(model, names) as acts:
        model(image.reshape(1, 1, 28, 28))
    return {name: acts[name][0] for name in names}


def _border_mask(border: int) -> torch.Tensor:
    """True on the pixels within `border` of the image's edge: -> (28, 28) bool."""
    mask = torch.ones(28, 28, dtype=torch.bool)
    mask[border : 28 - border, border : 28 - border] = False
    return mask


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation: (K, D), (K, D) -> (K,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)


def template_quality(
    model: nn.Module,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    border: int = 4,
) -> dict:
    """Do the class templates of a softmax regression look like digits?

    Two numbers, on the raw weight rows that `linear_templates` returns and the
    pictures show:
    - `border_energy`: the share of the templates' squared weights (all ten together)
      on the outer `border` pixels, where MNIST has almost no ink (the digits sit in a
      20 x 20 box): a template that spends its weight there shows background, not a digit;
    - `correlation`: the mean over digits of the Pearson correlation (over the 784
      pixels) between the digit's template and its class-mean image minus the mean
      image of all digits, i.e. "where this digit has more ink than the others".
      `per_digit_correlation` holds the ten values.

    Args:
        model: a single-linear-layer model (the `linear` architecture).
        images: (N, 1, 28, 28) in [0, 1]; default: the 60k MNIST training images.
        labels: (N,) digits for `images`.
        border: width of the edge band in pixels (4).

    Returns a JSON-ready dict: `border_energy`, `correlation`, `per_digit_correlation`.

        >>> quality = template_quality(mnistlens.load_model("linear.pt")[0])
    """
    if (images is None) != (labels is None):
        raise MnistlensError("give both images and labels, or neither (the training set)")
    if not 0 < border < 14:
        raise MnistlensError(f"border must be between 1 and 13 pixels, got {border}")
    templates = linear_templates(model).double()  # (10, 28, 28)
    if images is None:
        from mnistlens.data import load_mnist

        images, labels = load_mnist("train")
    flat = images.reshape(len(images), -1).double()  # (N, 784)
    sums = torch.zeros(10, flat.shape[1], dtype=torch.float64).index_add_(0, labels, flat)
    counts = torch.bincount(labels, minlength=10).double()  # (10,)
    if (counts == 0).any():
        raise MnistlensError("template_quality needs images of every digit 0-9")
    contrast = sums / counts[:, None] - flat.mean(dim=0)  # (10, 784) class mean - overall mean

    energy = templates.square()  # (10, 28, 28)
    border_energy = energy[:, _border_mask(border)].sum() / energy.sum().clamp(min=1e-30)
    per_digit = _pearson(templates.flatten(1), contrast)  # (10,)
    return {
        "border_energy": float(border_energy),
        "correlation": float(per_digit.mean()),
        "per_digit_correlation": per_digit.tolist(),
    }


def unit_border_energy(model: nn.Module, border: int = 4) -> torch.Tensor:
    """For each first-layer unit of an MLP, the share of its squared input weights on the
    outer `border` pixels (where MNIST has almost no ink): -> (units,) in [0, 1].

    The same check as `template_quality`'s border energy, unit by unit: a unit whose
    picture is mostly border shows a training artifact (weights that never met ink and
    kept their random init), not a stroke detector.
    """
    if not 0 < border < 14:
        raise MnistlensError(f"border must be between 1 and 13 pixels, got {border}")
    energy = first_layer_units(model).double().square()  # (units, 28, 28)
    return (energy[:, _border_mask(border)].sum(dim=1) / energy.flatten(1).sum(dim=1)).float()
