"""One input convention for every model: the wrapper that feeds it mnistlens images."""

from __future__ import annotations

import torch
from torch import nn

from mnistlens import models


class InputAdapter(nn.Module):
    """Feeds mnistlens images, (N, 1, 28, 28) in [0, 1], to a model that wants them otherwise.

    The pixels are multiplied by `scale` (255 for a model trained on raw bytes), `norm`
    standardizes them (for a model trained on normalized input), the images are reshaped
    to `shape` per image, and with `per_image` the model sees one image at a time (a
    program exported for a batch of 1). The wrapped model is the submodule `net`.
    """

    def __init__(
        self,
        net: nn.Module,
        shape: tuple,
        normalize: bool = False,
        per_image: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm = models.Normalize() if normalize else nn.Identity()
        self.net = net
        self.shape = tuple(shape)
        self.per_image = per_image
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x * self.scale).reshape(x.shape[0], *self.shape)  # (N, *shape)
        if self.per_image:
            return torch.cat([self.net(x[i : i + 1]) for i in range(x.shape[0])])  # (N, 10)
        return self.net(x)
