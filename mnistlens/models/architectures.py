"""Reference MNIST classifiers, registered by name.

Every model takes images in the library's input convention, (N, 1, 28, 28) float32
in [0, 1], and returns logits (N, 10). Normalization is the first layer (`norm`), so
explanations live in plain pixel space.

Models are `nn.Sequential` with named children, so every layer has a stable name
(`conv1`, `relu1`, `fc1`, `head`, ...) that hooks, Grad-CAM and the CLI can address;
each ReLU is its own module (not `F.relu`) because Captum's DeepLIFT and guided
backprop override the gradient of ReLU *modules*.

    >>> from mnistlens import models
    >>> models.list_models()
    ['cnn', 'linear', 'mlp']
    >>> net = models.build("mlp", hidden=(256,))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from mnistlens.data import MEAN, STD
from mnistlens.errors import MnistlensError
from mnistlens.models.registry import register


class Normalize(nn.Module):
    """(x - mean) / std with MNIST's training statistics: (N, 1, 28, 28) -> same shape."""

    def __init__(self, mean: float = MEAN, std: float = STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@register("linear")
def linear(*, normalize: bool = True) -> nn.Module:
    """Softmax regression: one weight template per digit, `fc.weight` is (10, 784).

    Args:
        normalize: standardize the pixels first (`norm` = `Normalize`). With False,
            `norm` is `nn.Identity()` and the model works on the raw [0, 1] pixels: a
            pixel that is blank in every training image then gets no gradient at all, so
            trained from zeros with SGD its weight stays zero and the class templates
            look like digits (docs/architectures.md). True is the default: older checkpoints hold
            `norm` buffers.
    """
    return nn.Sequential(
        OrderedDict(
            norm=Normalize() if normalize else nn.Identity(),
            flatten=nn.Flatten(),  # (N, 784)
            fc=nn.Linear(28 * 28, 10),
        )
    )


@register("mlp")
def mlp(
    *, hidden: Sequence[int] = (512, 256), dropout: float = 0.1, normalize: bool = True
) -> nn.Module:
    """Multi-layer perceptron: fc1/relu1, fc2/relu2, ... then `head` (hidden[-1] -> 10).

    Args:
        hidden: width of each hidden layer; its length is the depth.
        dropout: dropout probability after each hidden layer (0 disables it).
        normalize: standardize the pixels first (`norm`). With False a pixel that is
            never inked gives its first-layer weights no gradient, so with SGD the unit
            pictures keep little weight on the empty border.
    """
    hidden = [int(h) for h in hidden]
    if not hidden or min(hidden) < 1:
        raise MnistlensError(f"mlp needs at least one hidden layer of width >= 1, got {hidden}")
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        norm=Normalize() if normalize else nn.Identity(), flatten=nn.Flatten()
    )
    width = 28 * 28
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)
        layers[f"relu{i}"] = nn.ReLU()
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["head"] = nn.Linear(width, 10)
    return nn.Sequential(layers)


@register("cnn")
def cnn(
    *,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    hidden: int = 128,
    dropout: float = 0.25,
    batch_norm: bool = True,
) -> nn.Module:
    """Convolutional net: per stage conv{i} -> bn{i} -> relu{i} -> pool{i}, then fc1 -> head.

    Each stage halves the resolution (28 -> 14 -> 7 ...). Batch norm makes the
    one-cycle schedule stable at high learning rates (and can be folded into the
    convolutions for fast explanation, since it is affine at eval time).

    Args:
        channels: output channels of each conv stage; its length is the depth (<= 4).
        kernel_size: odd conv kernel size, padded to keep the resolution.
        hidden: width of the fully connected layer `fc1`.
        dropout: dropout before `head`.
        batch_norm: add `bn{i}` after each conv.
    """
    channels = [int(c) for c in channels]
    if not 1 <= len(channels) <= 4 or min(channels) < 1:
        raise MnistlensError(f"cnn needs 1 to 4 conv stages of >= 1 channel, got {channels}")
    if kernel_size % 2 != 1:
        raise MnistlensError(f"cnn kernel_size must be odd, got {kernel_size}")
    layers: OrderedDict[str, nn.Module] = OrderedDict(norm=Normalize())
    in_ch, size = 1, 28
    for i, out_ch in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(
            in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=not batch_norm
        )
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(out_ch)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        in_ch, size = out_ch, size // 2
    layers["flatten"] = nn.Flatten()  # (N, C * size * size)
    layers["fc1"] = nn.Linear(in_ch * size * size, hidden)
    layers["relu_fc1"] = nn.ReLU()
    if dropout > 0:
        layers["drop_fc1"] = nn.Dropout(dropout)
    layers["head"] = nn.Linear(hidden, 10)
    return nn.Sequential(layers)
