"""Controlled changes of a digit, each with a severity: where, how big, how thick.

What a model does when the digit moves, turns, grows or thins is an explanation a reader
can check ("convolution buys tolerance to position"). Each function here changes a batch
the same way, deterministically, and keeps the input convention:

    transform(images, severity) -> images: (N, 1, 28, 28) in [0, 1] -> same shape, [0, 1]

Severity 0 (or scale 1) gives the images back unchanged. Geometric changes resample with
`grid_sample` (bilinear, zeros outside: MNIST's background is black) about the image
centre; stroke thickness uses a grey-level morphology (2x2 max or min filter); an elastic
distortion moves every pixel its own way, smoothly (Simard et al. 2003), at random but
reproducibly (`seed`).

    >>> shifted = translate(images, 3, direction="down-right")
    >>> thin = thickness(images, -1)   # one erosion
    >>> wobbly = elastic(images, 2.0)  # pixels move 2 px (root mean square)
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from mnistlens.data import check_images
from mnistlens.errors import MnistlensError

# direction name -> (dx, dy) in pixels per step (y grows downwards, as in the image)
DIRECTIONS = {
    "right": (1, 0),
    "down-right": (1, 1),
    "down": (0, 1),
    "down-left": (-1, 1),
    "left": (-1, 0),
    "up-left": (-1, -1),
    "up": (0, -1),
    "up-right": (1, -1),
}


def _affine(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample every image through one 2x3 affine map of output -> input coordinates
    in [-1, 1] (`F.affine_grid`'s convention): (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    theta = matrix.to(images.dtype).expand(len(images), 2, 3)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)


def translate(images: torch.Tensor, pixels: int, direction: str = "down-right") -> torch.Tensor:
    """Move every digit `pixels` whole pixels in `direction` (one of DIRECTIONS); ink
    moved past the border is lost, the uncovered border is black. Whole pixels, so
    nothing is resampled: (N, 1, 28, 28) -> same."""
    images = check_images(images)
    if direction not in DIRECTIONS:
        raise MnistlensError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")
    if pixels < 0 or pixels > 27 or int(pixels) != pixels:
        raise MnistlensError(f"translate takes whole pixels from 0 to 27, got {pixels!r}")
    dx, dy = (int(pixels) * d for d in DIRECTIONS[direction])
    out = torch.zeros_like(images)
    src_y = slice(max(0, -dy), 28 - max(0, dy))
    dst_y = slice(max(0, dy), 28 - max(0, -dy))
    src_x = slice(max(0, -dx), 28 - max(0, dx))
    dst_x = slice(max(0, dx), 28 - max(0, -dx))
    out[..., dst_y, dst_x] = images[..., src_y, src_x]
    return out


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Turn every digit `degrees` clockwise about the image centre: (N, 1, 28, 28) -> same."""
    images = check_images(images)
    a = math.radians(degrees)
    # grid_sample maps output to input coordinates (y down): each output pixel samples
    # the input where the inverse, counter-clockwise, turn takes it.
    matrix = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]])
    return images if degrees == 0 else _affine(images, matrix)


def scale(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Grow (factor > 1) or shrink (< 1) every digit about the image centre:
    (N, 1, 28, 28) -> same."""
    images = check_images(images)
    if factor <= 0:
        raise MnistlensError(f"scale needs a factor above 0, got {factor!r}")
    matrix = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]])
    return images if factor == 1 else _affine(images, matrix)


def shear(images: torch.Tensor, amount: float) -> torch.Tensor:
    """Slant every digit: each row moves sideways by `amount` times its height above the
    centre (0.3: the top leans right by 30% of the way): (N, 1, 28, 28) -> same."""
    images = check_images(images)
    matrix = torch.tensor([[1.0, amount, 0.0], [0.0, 1.0, 0.0]])
    return images if amount == 0 else _affine(images, matrix)


def thickness(images: torch.Tensor, steps: int) -> torch.Tensor:
    """Thicker strokes (steps > 0: that many dilations, each pixel the max of a 2x2
    neighbourhood) or thinner ones (steps < 0: erosions, the min): (N, 1, 28, 28) ->
    same. MNIST's strokes are 2-3 pixels wide, so the step is 2x2, not 3x3 (one 3x3
    erosion wipes a thin "1" out); the 2x2 window reaches down-right on odd steps and
    up-left on even ones, so the digit does not drift and two steps are one 3x3 filter."""
    images = check_images(images)
    if int(steps) != steps:
        raise MnistlensError(f"thickness takes whole steps, got {steps!r}")
    sign = 1.0 if steps > 0 else -1.0  # an erosion is a dilation of the negated image
    out = sign * images
    for step in range(abs(int(steps))):
        pad = (0, 1, 0, 1) if step % 2 == 0 else (1, 0, 1, 0)  # (left, right, top, bottom)
        # outside the image is black: 0 for a dilation, and for an erosion of -images too
        out = F.max_pool2d(F.pad(out, pad, value=0.0), 2, stride=1)
    return sign * out


def occlude_band(images: torch.Tensor, width: int, where: str = "middle-row") -> torch.Tensor:
    """Black out a band `width` pixels wide across every digit: a horizontal band through
    the middle ("middle-row") or a vertical one ("middle-column"): (N, 1, 28, 28) -> same."""
    images = check_images(images)
    if where not in ("middle-row", "middle-column"):
        raise MnistlensError(f"unknown band {where!r}; choose middle-row or middle-column")
    if width < 0 or width > 28 or int(width) != width:
        raise MnistlensError(f"a band is 0 to 28 whole pixels wide, got {width!r}")
    out = images.clone()
    start = 14 - int(width) // 2
    band = slice(start, start + int(width))
    if where == "middle-row":
        out[..., band, :] = 0
    else:
        out[..., :, band] = 0
    return out


def _noise(seed: int, count: int) -> torch.Tensor:
    """Uniform noise in [-1, 1], (count, 2, 28, 28), image i's from a CPU generator of its
    own. torch's CPU generator (mt19937) keeps only the low 32 bits of its seed, so the
    seed is hashed into them and the position i added: no two images of a batch share
    noise, and a batch's first k images get what they get in a batch of k."""
    start = int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=4).digest(), "little")
    generators = (torch.Generator().manual_seed((start + i) % 2**32) for i in range(count))
    return torch.stack([torch.rand(2, 28, 28, generator=g) for g in generators]) * 2 - 1


def _blur_matrix(sigma: float) -> torch.Tensor:
    """(28, 28) B such that B @ image @ B.T is `data.gaussian_blur(image, size, sigma)`
    (size 2 ceil(3 sigma) + 1, at most 55): the same Gaussian and reflect padding, one
    axis at a time, as two small matrix products instead of a (size x size) convolution,
    which on the CPU is about a hundred times slower."""
    half = min(math.ceil(3 * sigma), 27)  # reflect padding reaches back at most 27 pixels
    taps = torch.arange(-half, half + 1)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    source = (torch.arange(28)[:, None] + taps).abs()  # (28, size), reflected about 0 ...
    source = torch.where(source > 27, 54 - source, source)  # ... and about 27
    return torch.zeros(28, 28).scatter_add_(1, source, kernel.expand(28, -1))


def elastic(
    images: torch.Tensor, alpha: float, sigma: float = 4.0, *, seed: int = 0
) -> torch.Tensor:
    """Distort every digit like a rubber sheet (Simard et al. 2003, "Best practices for
    convolutional neural networks applied to visual document analysis"): each pixel
    moves its own way, smoothly: (N, 1, 28, 28) -> same.

    A random displacement per pixel, uniform in [-1, 1] in x and in y, is smoothed by a
    Gaussian of std `sigma` pixels (larger: the digit bends more as a whole, less
    locally) and scaled so that its root mean square length over the middle 20 x 20
    pixels, where the digit is, is `alpha` pixels. (Simard's alpha multiplies the
    smoothed field instead, whose size then depends on sigma: his alpha 34 with sigma 4
    is about 2 px here.) alpha 0
    gives the images back unchanged; 1 to 4 are mild to strong. Each image has its own
    field, from (`seed`, its position in the batch), on the CPU whatever the device, so
    a result depends on neither the global random state nor the rest of the batch.
    """
    images = check_images(images)
    if not (0 <= alpha < math.inf and 0 < sigma < math.inf):
        raise MnistlensError(
            f"elastic needs a finite alpha >= 0 and sigma > 0, got {alpha!r}, {sigma!r}"
        )
    if isinstance(seed, bool) or int(seed) != seed:
        raise MnistlensError(f"elastic takes a whole-number seed, got {seed!r}")
    if alpha == 0:
        return images
    blur = _blur_matrix(sigma)
    field = blur @ _noise(int(seed), len(images)) @ blur.T  # (N, 2, 28, 28): dx, dy in pixels
    # the root mean square over the middle 20 x 20, where MNIST's digits are: the field
    # is larger at the border, where the blur has fewer independent pixels to average
    rms = field[..., 4:24, 4:24].square().sum(dim=1).mean(dim=(1, 2)).sqrt()  # (N,)
    field = field * (alpha / rms)[:, None, None, None]
    # the output pixel (x, y) shows the input at (x + dx, y + dy); grid_sample's [-1, 1]
    # spans 28 pixels, so one pixel is 2 / 28 of it
    identity = torch.eye(2, 3)[None]  # (1, 2, 3)
    base = F.affine_grid(identity, [1, 1, 28, 28], align_corners=False)  # (1, 28, 28, 2)
    grid = (base + field.permute(0, 2, 3, 1) * (2 / 28)).to(images.device)  # (N, 28, 28, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)
