"""Seeded, chunked application of a random image corruption: the machinery every
corruption in corruptions.py shares.

Each image draws its random numbers from a CPU `torch.Generator` seeded from (the
corruption's name, seed, its index in the batch) alone (`Stream`), so the same call
gives the same bits, the global RNG is untouched, and corrupting `images[:k]` gives the
first k results of corrupting `images`, whatever the chunking. `apply` checks the
arguments and runs a corruption's kernel over chunks of the batch.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable

import torch

from mnistlens.data import check_images
from mnistlens.errors import MnistlensError

CHUNK = 512  # images per pass: a chunk's arrays stay in the CPU's cache


class Stream:
    """The random numbers of images first..first+n-1 of a batch: image i's from a CPU
    generator seeded from (corruption, seed) and i alone, so they depend neither on the
    rest of the batch nor on the chunking."""

    def __init__(self, salt: str, seed: int, first: int, n: int):
        self.first, self.n = first, n
        # torch's CPU generator (mt19937) keeps 32 bits of its seed: hash (salt, seed)
        # into them and add the index, so no two images of a batch share a stream
        digest = hashlib.blake2b(f"{salt}:{seed}".encode(), digest_size=4).digest()
        self.base = int.from_bytes(digest, "little")

    def each(self, draw: Callable[[torch.Generator, int], torch.Tensor]) -> torch.Tensor:
        """Stack draw(generator, i) for the chunk's images i = 0..n-1: -> (n, ...), CPU."""
        generator = torch.Generator()
        out = []
        for i in range(self.n):
            generator.manual_seed((self.base + self.first + i) % 2**32)
            out.append(draw(generator, i))
        return torch.stack(out)

    def uniform(self, *shape: int) -> torch.Tensor:
        """(n, *shape) uniform in [0, 1), CPU."""
        return self.each(lambda g, _: torch.rand(shape, generator=g))


def apply(
    name: str,
    images: torch.Tensor,
    severity: float,
    seed: int,
    kernel: Callable[[torch.Tensor, float, Stream], torch.Tensor],
) -> torch.Tensor:
    """Validate, then run `kernel(chunk, severity, stream)` over chunks of the batch:
    (N, 1, 28, 28) -> (N, 1, 28, 28) float32 in [0, 1]; severity 0
    returns a copy."""
    images = check_images(images)
    try:
        value = float(severity)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise MnistlensError(
            f"{name}: severity must be a finite number >= 0 (0 = unchanged, 1 = MNIST-C's "
            f"setting), got {severity!r}"
        )
    try:
        seed = operator.index(seed)
    except TypeError:
        raise MnistlensError(f"{name}: seed must be an int, got {seed!r}") from None
    if value == 0:
        return images.clone()
    # torch's thread count is left alone: it is the process's, and the explorer's
    # sessions are threads of one process (on a quiet machine two threads are as fast)
    chunks = []
    for first in range(0, len(images), CHUNK):
        chunk = images[first : first + CHUNK]
        chunks.append(kernel(chunk, value, Stream(name, seed, first, len(chunk))))
    return torch.cat(chunks).clamp(0, 1)


def signs(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0)
