"""A small convolutional autoencoder of MNIST digits: what a plausible digit looks like.

Counterfactuals need a sense of "still a digit": an image the autoencoder rebuilds
well lies near the digits it was trained on, and its code (the `latent` numbers in the
middle) places it among them, so that a change can be pulled towards the codes of real
digits of the target class (Van Looveren & Klaise 2019). Images in the input
convention, (N, 1, 28, 28) in [0, 1], in and out:

    encode: (N, 1, 28, 28) -> (N, latent)     decode: (N, latent) -> (N, 1, 28, 28)

    >>> ae = models.build("autoencoder", latent=16)
    >>> ae(images).shape == images.shape
    True
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlens.errors import MnistlensError
from mnistlens.models.registry import register


class Autoencoder(nn.Module):
    """Two stride-2 convolutions down to 7x7, a linear map to the code, and back.

    The decoder ends in a sigmoid: pixels in [0, 1], as the input's."""

    def __init__(self, latent: int = 16, channels: int = 32) -> None:
        super().__init__()
        half = channels // 2
        self.encoder = nn.Sequential(
            nn.Conv2d(1, half, 3, stride=2, padding=1),  # 28 -> 14
            nn.ReLU(),
            nn.Conv2d(half, channels, 3, stride=2, padding=1),  # 14 -> 7
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(channels * 7 * 7, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, channels * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (channels, 7, 7)),
            nn.ConvTranspose2d(channels, half, 4, stride=2, padding=1),  # 7 -> 14
            nn.ReLU(),
            nn.ConvTranspose2d(half, 1, 4, stride=2, padding=1),  # 14 -> 28
            nn.Sigmoid(),
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> (N, latent)."""
        return self.encoder(images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, 1, 28, 28) in [0, 1]."""
        return self.decoder(codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


@register("autoencoder", task="reconstruct")
def autoencoder(*, latent: int = 16, channels: int = 32) -> nn.Module:
    """The MNIST autoencoder: `latent` numbers per digit, `channels` in its wider conv."""
    if latent < 1 or channels < 2:
        raise MnistlensError(
            f"autoencoder needs latent >= 1 and channels >= 2, got {latent}, {channels}"
        )
    return Autoencoder(int(latent), int(channels))
