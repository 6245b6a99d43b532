"""The 15 corruptions of MNIST-C, in torch: how a model copes with noise, blur, warps,
fog and clutter it never saw in training.

MNIST-C (Mu & Gilmer 2019, "MNIST-C: A Robustness Benchmark for Computer Vision",
arXiv:1906.02337; code github.com/google-research/mnist-c, Apache-2.0) corrupts the test
set once, each corruption at one fixed severity. These are our own reimplementations after
reading theirs: batched torch (convolutions as shifted sums, `grid_sample`, `gather`)
instead of ImageMagick, scipy, skimage and PIL, so all 15 on the 10,000 test images take
seconds. Each function's docstring says what MNIST-C does and where ours differs.

    corruption(images, severity=1.0, *, seed=0) -> images: (N, 1, 28, 28) in [0, 1] -> same
    shape, float32, in [0, 1], on the images' device

Severity 1 is MNIST-C's setting, 0 gives the images back unchanged, other values scale
the corruption's strength (noise amount, blur width, angle, ...). The random ones draw
each image's numbers from a CPU `torch.Generator` seeded from (corruption, seed, index
in the batch): the same call gives the same bits, the global RNG is untouched, and
corrupting `images[:k]` gives the first k results of corrupting `images`.

    >>> foggy = fog(images)                      # MNIST-C's fog
    >>> suite = {name: c(images, seed=1) for name, c in CORRUPTIONS.items()}
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mnistlens.data import check_images
from mnistlens.errors import MnistlensError

# --------------------------------------------------------------------------- helpers

CHUNK = 512  # images per pass: a chunk's arrays stay in the CPU's cache


class _Stream:
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


def _apply(
    name: str,
    images: torch.Tensor,
    severity: float,
    seed: int,
    kernel: Callable[[torch.Tensor, float, _Stream], torch.Tensor],
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
        chunks.append(kernel(chunk, value, _Stream(name, seed, first, len(chunk))))
    return torch.cat(chunks).clamp(0, 1)


def _gauss1d(x: torch.Tensor, sigma: float, dim: int, mode: str) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d (truncate 4) along `dim` (-1 or -2) of (N, 1, 28, 28),
    padding "nearest" (edge copied) or "constant" (zeros). A sum of shifted slices, not a
    convolution, so each image's result does not depend on the batch."""
    radius = int(4 * sigma + 0.5)
    if radius == 0:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (weights / weights.sum()).tolist()
    pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
    padded = F.pad(x, pad, mode="replicate" if mode == "nearest" else "constant")
    out = torch.zeros_like(x)
    for k, w in enumerate(weights):
        out.add_(padded.narrow(dim, k, 28), alpha=w)
    return out


def _gauss2d(x: torch.Tensor, sigma: float, mode: str) -> torch.Tensor:
    return _gauss1d(_gauss1d(x, sigma, -2, mode), sigma, -1, mode)


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling, zeros outside, through per-image affine maps of output to input
    coordinates in [-1, 1] about the image centre (skimage's `warp` about pixel 13.5):
    images (N, 1, 28, 28), theta (N, 2, 3) -> (N, 1, 28, 28)."""
    # the grid is built elementwise, not with affine_grid's batched matmul, so each
    # image's result is the same in any batch
    axis = (torch.arange(28, dtype=torch.float32, device=images.device) * 2 + 1) / 28 - 1
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")  # (28, 28) each
    t = theta.to(images.device, torch.float32)[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    gx = t[:, 0, 0] * xs + t[:, 0, 1] * ys + t[:, 0, 2]  # (N, 28, 28)
    gy = t[:, 1, 0] * xs + t[:, 1, 1] * ys + t[:, 1, 2]
    grid = torch.stack([gx, gy], dim=-1)  # (N, 28, 28, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signs(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0)


def _line(
    rows: torch.Tensor, c0: torch.Tensor, r0: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    """MNIST-C's `line_from_points` ink, before its column cut: 1 on the line through
    (c0, r0) with `slope`, falling as log(1 - d / 2.3) + 1 with the vertical distance d,
    0 from d = 1.45 on. Arguments (N, 1, 1) -> (N, 28, 28)."""
    cols = rows.view(1, 1, 28)  # rows holds 0..27: the same positions serve as columns
    dist = (rows.view(1, 28, 1) - (slope * (cols - c0) + r0)).abs()  # (N, 28, 28)
    return (torch.log1p(-dist.clamp(max=2.3 - 1e-6) / 2.3) + 1).clamp(0, 1)


# --------------------------------------------------------------------------- noise


def shot_noise(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Photon noise: each pixel becomes Poisson(x * c) / c: (N, 1, 28, 28) -> same.

    MNIST-C: c = 3 photons per unit of ink (its severity 5). Ours: the same, c = 3 /
    severity. Black pixels stay black (Poisson(0) = 0); a full-ink pixel keeps its value
    with probability 0.58 and drops to 0, 1/3 or 2/3 otherwise."""
    return _apply("shot_noise", images, severity, seed, _shot_noise)


def _shot_noise(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    c = 3.0 / severity
    rates = x.cpu() * c
    return (rng.each(lambda g, i: torch.poisson(rates[i], g)) / c).to(x.device)


def impulse_noise(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Salt and pepper: a fraction `amount` of the pixels is set to 1 or 0, half each:
    (N, 1, 28, 28) -> same.

    MNIST-C: skimage's `random_noise(mode="s&p", amount=0.17)` (its severity 4). Ours: the
    same, amount = min(1, 0.17 * severity)."""
    return _apply("impulse_noise", images, severity, seed, _impulse_noise)


def _impulse_noise(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    amount = min(1.0, 0.17 * severity)
    u = rng.uniform(1, 28, 28).to(x.device)  # (n, 1, 28, 28): hit below amount, salt below half
    return torch.where(u < amount, (u < amount / 2).float(), x)


# --------------------------------------------------------------------------- blur


def glass_blur(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Frosted glass: blur, shuffle pixels locally, blur again: (N, 1, 28, 28) -> same.

    MNIST-C (severity 1): a Gaussian blur of sigma 0.7, stored as uint8; twice, a sweep
    from pixel (27, 27) back to (2, 2) in raster order that swaps each pixel, with
    probability 1/2, with its neighbour at (dy, dx) from `randint(-1, 1)` (so -1 or 0:
    randint excludes its top); the blur again. Its blur hands skimage a 2-D image with
    `multichannel=True`, which reads the columns as channels and blurs vertically only.
    Ours does all of this, the sweep included (`_glass_sweep`: the same swaps, in an order
    that gives the same result, vectorized). Severity scales the sigma (0.7 s) and the
    swap probability (min(1, s / 2))."""
    return _apply("glass_blur", images, severity, seed, _glass_blur)


def _glass_blur(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    sigma, p = 0.7 * severity, min(1.0, severity / 2)
    u = rng.uniform(2, 28, 28).to(x.device)  # (n, sweeps, 28, 28)
    blurred = torch.floor(_gauss1d(x, sigma, -2, "nearest").clamp(0, 1) * 255) / 255
    swept = _glass_sweep(blurred.flatten(1), u, p)  # (n, 784)
    return _gauss1d(swept.view_as(x), sigma, -2, "nearest")


@functools.cache
def _glass_fronts() -> list[torch.Tensor]:
    """The pixels (h, w), 2 <= h, w <= 27, grouped by 2h + w from the largest: flat
    indices, one tensor per group."""
    return [
        torch.tensor([h * 28 + (key - 2 * h) for h in range(27, 1, -1) if 2 <= key - 2 * h <= 27])
        for key in range(3 * 27, 3 * 2 - 1, -1)
    ]


def _glass_sweep(flat: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
    """MNIST-C's swap sweeps, one per u[:, k]: the pixel at (h, w) swaps with (h + dy,
    w + dx) when u < p, (dy, dx) in {-1, 0}^2 picked by u / p: (n, 784), (n, k, 28, 28)
    -> (n, 784).

    A visit touches only the 2 x 2 block up-left of its pixel, so visits with the same
    2h + w touch disjoint blocks, and every two visits whose blocks overlap come in raster
    order when taken by decreasing 2h + w: one vectorized step per value of 2h + w (76 per
    sweep) swaps exactly as the pixel-by-pixel sweep does."""
    z = flat.t().contiguous()  # (784, n): a front's pixels are whole rows, in cache
    for k in range(u.shape[1]):
        v = u[:, k].flatten(1).t()  # (784, n)
        pick = (v / p * 4).long().clamp(max=3)  # 0..3: (dy, dx) = (-(pick // 2), -(pick % 2))
        back = torch.where(v < p, (pick // 2) * 28 + pick % 2, 0)  # how far back the partner is
        for front in _glass_fronts():
            front = front.to(z.device)
            partner = front[:, None] - back[front]  # (m, n)
            mine, theirs = z[front], z.gather(0, partner)
            z[front] = theirs
            z.scatter_(0, partner, mine)
    return z.t()  # (n, 784)


def motion_blur(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Camera shake along a line: (N, 1, 28, 28) -> same.

    MNIST-C (severity 1): ImageMagick's MotionBlurImage(radius 10, sigma 3, angle uniform
    in -45..45 degrees per image), a one-sided kernel: pixel p becomes the sum over
    i = 0..20 of exp(-i^2 / 18) (normalized) times the pixel at p + round(i (cos a,
    sin a)), edge pixels repeated outside; the digit smears mostly sideways and its ink
    moves about 2.4 pixels against the direction. Ours: the same kernel and offsets with
    `gather`, taps below 1e-4 of the first dropped and the rest renormalized (at severity
    1 that changes no pixel by more than 3e-5). Severity scales radius and sigma (10 and 3
    times it); the angle range stays."""
    return _apply("motion_blur", images, severity, seed, _motion_blur)


def _motion_blur(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    sigma, width = 3.0 * severity, 2 * math.ceil(10.0 * severity) + 1
    taps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = weights[weights >= 1e-4]
    weights = (weights / weights.sum()).tolist()
    dev = x.device
    taps = taps[: len(weights)].to(dev, torch.float32)
    angle = torch.deg2rad(rng.uniform(1) * 90 - 45).to(dev)  # (n, 1)
    # ImageMagick's ceil(v - 0.5): round half down
    off_x = torch.ceil(taps * torch.cos(angle) - 0.5).long()  # (n, taps)
    off_y = torch.ceil(taps * torch.sin(angle) - 0.5).long()
    pos = torch.arange(28, device=dev)
    flat = x.flatten(1)  # (n, 784)
    out = torch.zeros_like(flat)
    for k, w in enumerate(weights):
        src_y = (pos.view(1, 28, 1) + off_y[:, k, None, None]).clamp(0, 27)  # (n, 28, 1)
        src_x = (pos.view(1, 1, 28) + off_x[:, k, None, None]).clamp(0, 27)  # (n, 1, 28)
        out.add_(flat.gather(1, (src_y * 28 + src_x).flatten(1)), alpha=w)  # (n, 784)
    return out.view_as(x)  # (n, 1, 28, 28)


# --------------------------------------------------------------------------- geometry


def shear(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Slant each digit left or right about the image centre: (N, 1, 28, 28) -> same.

    MNIST-C (severity 2): skimage AffineTransform(shear=+-0.4), sign random per image, as
    the inverse map of `warp` (bilinear, black outside). The skimage of the time read
    shear as an angle: output (x, y) samples the input at (x - sin(s) y, cos(s) y) about
    the centre, so each row moves sideways by tan(0.4) = 0.42 pixels per pixel of height,
    and the digit grows 1 / cos(0.4) = 1.09 times taller. Ours: the same map, s = +-0.4 *
    severity (the digit flattens into a line as s nears 90 degrees, severity 3.9)."""
    return _apply("shear", images, severity, seed, _shear)


def _shear(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    s = 0.4 * severity * _signs(rng.uniform(1))[:, 0]  # (n,)
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    rows = [torch.stack([one, -torch.sin(s), zero], 1), torch.stack([zero, torch.cos(s), zero], 1)]
    return _warp(x, torch.stack(rows, 1))  # theta (n, 2, 3)


def scale(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Shrink every digit about the image centre: (N, 1, 28, 28) -> same.

    MNIST-C (severity 3): skimage AffineTransform(scale=1/0.7) as the inverse map of `warp`:
    the digit shrinks to 0.7 of its size (its five severities are 0.9 down to 0.5).
    Ours: the same, factor 0.7 ** severity (0.49 at severity 2, near their strongest). Not
    random; `seed` is accepted for a common signature."""
    return _apply("scale", images, severity, seed, _scale)


def _scale(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    inv = 0.7 ** (-severity)
    return _warp(x, torch.tensor([[inv, 0.0, 0.0], [0.0, inv, 0.0]]).expand(len(x), 2, 3))


def rotate(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Turn each digit about the image centre, clockwise or counter-clockwise:
    (N, 1, 28, 28) -> same.

    MNIST-C (severity 2): skimage AffineTransform(rotation=+-0.4 rad, 22.9 degrees), sign
    random per image, as the inverse map of `warp` (bilinear, black outside). Ours: the
    same, +-0.4 * severity rad."""
    return _apply("rotate", images, severity, seed, _rotate)


def _rotate(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    a = 0.4 * severity * _signs(rng.uniform(1))[:, 0]  # (n,)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    rows = [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)]
    return _warp(x, torch.stack(rows, 1))


def translate(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Move each digit diagonally: (N, 1, 28, 28) -> same.

    MNIST-C (severity 3): 3 pixels along x and 3 along y, each sign random per image (one
    of the four diagonals), ink past the border lost. Ours: the same, 3 * severity pixels
    (bilinear between whole pixels)."""
    return _apply("translate", images, severity, seed, _translate)


def _translate(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    shift = 3.0 * severity * _signs(rng.uniform(2))  # (n, 2) pixels: (right, down)
    t = -2 * shift / 28  # in [-1, 1] units; the input point lies behind the output one
    one, zero = torch.ones_like(t[:, 0]), torch.zeros_like(t[:, 0])
    rows = [torch.stack([one, zero, t[:, 0]], 1), torch.stack([zero, one, t[:, 1]], 1)]
    return _warp(x, torch.stack(rows, 1))


# --------------------------------------------------------------------------- light


def brightness(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Brighter everywhere: x + 0.5, clipped: (N, 1, 28, 28) -> same.

    MNIST-C (severity 5): adds 0.5 to the V of HSV through skimage's colour conversions,
    which for a grey image is x + 0.5 clipped. Ours: x + 0.5 * severity. Not random."""
    return _apply("brightness", images, severity, seed, lambda x, s, _: x + 0.5 * s)


def stripe(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Invert a band down each side: (N, 1, 28, 28) -> same.

    MNIST-C: x -> 1 - x in the 7 leftmost and 7 rightmost columns. Ours: bands 7 *
    severity columns wide (a fractional edge column is partly inverted); from severity 2
    the whole image is inverted. Not random."""
    return _apply("stripe", images, severity, seed, _stripe)


def _stripe(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    width = min(14.0, 7.0 * severity)
    cols = torch.arange(28, dtype=torch.float32, device=x.device)
    part = torch.maximum((width - cols).clamp(0, 1), (width - (27 - cols)).clamp(0, 1))  # (28,)
    return x + part * (1 - 2 * x)


def fog(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """A cloudy haze over a dimmed digit: (N, 1, 28, 28) -> same.

    MNIST-C (severity 5): x + 3 p, then times max(x) / (max(x) + 3), with p the top-left
    28 x 28 of a 256 x 256 plasma fractal (diamond-square on a torus, noise of amplitude
    wibble^2, wibble 100 falling 1.4 times per level) normalized to [0, 1] over the whole
    map: the digit keeps a quarter of its contrast under a haze of up to 0.75. Ours: the
    same algorithm, cheaper: the levels down to 8-pixel squares on a 64 x 64 map (the
    256 map's every fourth pixel), the last two levels only around the crop, and the
    normalization over the 64 x 64 map (its range is within 1% of the full map's).
    Severity scales the haze (3 * severity)."""
    return _apply("fog", images, severity, seed, _fog)


def _fog(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    c = 3.0 * severity
    haze = _plasma(rng).to(x.device)[:, None]  # (n, 1, 28, 28)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c * haze) * top / (top + c)


def _plasma(rng: _Stream) -> torch.Tensor:
    """MNIST-C's plasma_fractal(256, wibbledecay=1.4)[:28, :28], approximated as `fog` says:
    -> (n, 28, 28) in [0, 1], CPU."""
    levels64 = [64 >> k for k in range(6)]  # squares 64..2 apart on the 64 map = 256..8
    sizes = [3 * (64 // st) ** 2 for st in levels64] + [300, 1200]  # + the patch's 2 levels
    n = rng.n
    noise = list(torch.split(rng.uniform(sum(sizes)) * 2 - 1, sizes, dim=1))
    wibble = [100.0 / 1.4**k for k in range(8)]
    coarse = torch.zeros(n, 64, 64)
    for k, st in enumerate(levels64):
        _diamond_square_level(coarse, st, wibble[k] ** 2 * noise[k])
    # pixels -4..35 of the 256 map: the coarse values -1..8 every 4 pixels, finished by the
    # last two levels; the patch wraps at its edge, which reaches pixels 31 and up only
    patch = torch.zeros(n, 40, 40)
    patch[:, ::4, ::4] = coarse.roll((1, 1), dims=(1, 2))[:, :10, :10]
    _diamond_square_level(patch, 4, wibble[6] ** 2 * noise[6])
    _diamond_square_level(patch, 2, wibble[7] ** 2 * noise[7])
    low = coarse.amin(dim=(1, 2)).view(n, 1, 1)  # (n, 1, 1)
    high = coarse.amax(dim=(1, 2)).view(n, 1, 1)
    return ((patch[:, 4:32, 4:32] - low) / (high - low)).clamp(0, 1)


def _diamond_square_level(m: torch.Tensor, st: int, noise: torch.Tensor) -> None:
    """One level of diamond-square on the torus `m` (n, S, S), in place, as MNIST-C's
    fillsquares + filldiamonds: the centres of the squares `st` apart get the mean of their
    4 corners, then the edge midpoints the mean of their 4 neighbours, plus `noise`
    (n, 3 (S / st)^2): centres, then the two sets of midpoints."""
    n, k, h = len(m), m.shape[1] // st, st // 2
    centre_noise, row_noise, col_noise = noise.view(n, 3, k, k).unbind(1)  # (n, k, k) each
    corners = m[:, ::st, ::st]  # (n, k, k)
    squares = corners + corners.roll(-1, 1)
    squares = squares + squares.roll(-1, 2)
    m[:, h::st, h::st] = squares / 4 + centre_noise
    centres = m[:, h::st, h::st]
    m[:, ::st, h::st] = (
        centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
    ) / 4 + row_noise
    m[:, h::st, ::st] = (
        centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
    ) / 4 + col_noise


# --------------------------------------------------------------------------- clutter


def spatter(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Grey mud blobs over the digit: (N, 1, 28, 28) -> same.

    MNIST-C (severity 4): noise N(0.65, 0.3) per pixel, Gaussian blur sigma 1, the pixels
    above 0.65 form blobs; the blob mask blurred (sigma 1.5) and kept where >= 0.8 is m;
    then x (1 - m) + m 63/255. Ours: the same (skimage's edge-copying blur), with m times
    severity (at most 1): the blobs' opacity."""
    return _apply("spatter", images, severity, seed, _spatter)


def _spatter(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    normal = rng.each(lambda g, _: torch.randn(1, 28, 28, generator=g)).to(x.device)
    blobs = (_gauss2d(0.65 + 0.3 * normal, 1.0, "nearest") > 0.65).float()
    m = _gauss2d(blobs, 1.5, "nearest")
    m = torch.where(m < 0.8, 0.0, m * severity).clamp(max=1)
    return x * (1 - m) + m * (63 / 255)


def dotted_line(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """A dashed line across the image: (N, 1, 28, 28) -> same.

    MNIST-C: a line from (column 0, row r0) to (column 27, row r1), r0 and r1 uniform in
    0..26 per image, about 3 pixels thick (ink log(1 - d / 2.3) + 1 at vertical distance
    d), kept in columns 2-3, 6-7, ..., 26 (dashes 2 wide, 2 apart), added and clipped.
    Ours: the same, the line's ink times severity."""
    return _apply("dotted_line", images, severity, seed, _dotted_line)


def _dotted_line(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    r = (rng.uniform(2) * 27).floor().to(x.device)  # (n, 2): rows 0..26
    pos = torch.arange(28, dtype=torch.float32, device=x.device)
    r0, r1 = r[:, 0, None, None], r[:, 1, None, None]  # (n, 1, 1)
    ink = _line(pos, torch.zeros_like(r0), r0, (r1 - r0) / 27)  # (n, 28, 28)
    dashes = ((pos.long() // 2) % 2 == 1) & (pos < 27)  # columns 2-3, 6-7, ..., 26
    return x + severity * (ink * dashes)[:, None]


def zigzag(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """A zigzag line across the image: (N, 1, 28, 28) -> same.

    MNIST-C: from column 2 to 25, from row r0 uniform in 0..26 to row r1, r1 - r0 uniform
    in -5..4, per image; teeth 2 pixels long and 2 high, each segment drawn
    like `dotted_line`'s line (vertical distance, columns floor(c0)..ceil(c1) - 1), added
    and clipped. Ours: the same, the ink times severity."""
    return _apply("zigzag", images, severity, seed, _zigzag)


@functools.cache
def _zigzag_table() -> torch.Tensor:
    """MNIST-C's zigzag corners for each rise r1 - r0 = -5..4, as (column, row relative to
    r0): teeth 2 long and 2 high along the line, turned to its slope: -> (10, P, 2)."""
    a = b = 2.0
    tables = []
    for rise in range(-5, 5):
        theta = math.atan(rise / 23)
        d = 23 / math.cos(theta)
        points, r_i = [(0.0, 0.0)], 0.0
        for i in range(int((d - a) // (2 * a)) + 1):
            r_i = (-1) ** i * b
            points.append(((2 * i + 1) * a, r_i))
        last = 2 * a * (d // (2 * a))
        if d != last:
            points.append((d, r_i / (2 * (d - last))))  # MNIST-C's closing point, as it is
        cos, sin = math.cos(theta), math.sin(theta)
        tables.append([(2 + cos * c - sin * r, sin * c + cos * r) for c, r in points])
    longest = max(len(t) for t in tables)
    # padded with the last point: a segment of zero length draws nothing
    return torch.tensor([t + t[-1:] * (longest - len(t)) for t in tables])


def _zigzag(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    u = rng.uniform(2)  # (n, 2)
    start = (u[:, 0] * 27).floor().to(x.device).view(-1, 1, 1)  # row 0..26
    points = _zigzag_table()[(u[:, 1] * 10).long()].to(x.device)  # (n, P, 2)
    pos = torch.arange(28, dtype=torch.float32, device=x.device)
    ink = torch.zeros(len(x), 28, 28, device=x.device)
    for k in range(1, points.shape[1]):
        c0, r0 = points[:, k - 1, 0, None, None], points[:, k - 1, 1, None, None]  # (n, 1, 1)
        c1, r1 = points[:, k, 0, None, None], points[:, k, 1, None, None]
        run = c1 - c0
        slope = (r1 - r0) / torch.where(run == 0, 1.0, run)
        keep = (pos >= c0.floor()) & (pos < c1.ceil()) & (run != 0)  # (n, 1, 28) columns
        ink += _line(pos, c0, r0 + start, slope) * keep
    return x + severity * ink[:, None]


def canny_edges(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """The digit's outline: a binary Canny edge map: (N, 1, 28, 28) -> same.

    MNIST-C: skimage `feature.canny` with its defaults: Gaussian sigma 1 (zeros outside,
    renormalized by the blurred mask), Sobel gradients, non-maximum suppression with
    interpolated neighbours, hysteresis thresholds 0.1 and 0.2 over 8-connected pieces,
    1 on the edges, 0 elsewhere. Ours: the same steps, in float64 as skimage's (in
    float32, the ties of a symmetric shape fall the other way). Severity blends the clean
    image into the edge map, (1 - s) x + s edges, s = min(severity, 1). Not random."""
    return _apply("canny_edges", images, severity, seed, _canny_edges)


def _canny_edges(x: torch.Tensor, severity: float, rng: _Stream) -> torch.Tensor:
    s = min(severity, 1.0)
    return (1 - s) * x + s * _canny(x.double()).to(x.dtype)


def _canny(x: torch.Tensor, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """skimage.feature.canny(sigma=1) on each image: (n, 1, 28, 28) -> {0, 1} float32."""
    bleed = _gauss2d(torch.ones_like(x[:1]), 1.0, "constant")
    smooth = _gauss2d(x, 1.0, "constant") / (bleed + torch.finfo(x.dtype).eps)
    p = F.pad(smooth, (1, 1, 1, 1), mode="replicate")  # scipy's "reflect" for a 1-pixel reach
    d_row = p[..., 2:, :] - p[..., :-2, :]  # (n, 1, 28, 30)
    d_col = p[..., :, 2:] - p[..., :, :-2]  # (n, 1, 30, 28)
    gi = d_row[..., :-2] + 2 * d_row[..., 1:-1] + d_row[..., 2:]  # ndi.sobel(axis=0)
    gj = d_col[..., :-2, :] + 2 * d_col[..., 1:-1, :] + d_col[..., 2:, :]  # ndi.sobel(axis=1)
    mag = torch.sqrt(gi * gi + gj * gj)
    mp = F.pad(mag, (1, 1, 1, 1))

    def at(di: int, dj: int) -> torch.Tensor:  # the magnitude at (row + di, col + dj)
        return mp[..., 1 + di : 29 + di, 1 + dj : 29 + dj]

    # skimage's _nonmaximum_suppression_bilinear: the gradient's octant picks a neighbour
    # on each side and its diagonal, interpolated with weight w
    ai, aj = gi.abs(), gj.abs()
    same = (gi > 0) == (gj > 0)
    rows_major = torch.where(same, ai > aj, ai >= aj)
    w = torch.where(rows_major, aj / ai.clamp_min(1e-30), ai / aj.clamp_min(1e-30))
    plus1 = torch.where(rows_major, torch.where(same, at(1, 0), at(-1, 0)), at(0, 1))
    plus2 = torch.where(same, at(1, 1), at(-1, 1))
    minus1 = torch.where(rows_major, torch.where(same, at(-1, 0), at(1, 0)), at(0, -1))
    minus2 = torch.where(same, at(-1, -1), at(1, -1))
    peak = (plus2 * w + plus1 * (1 - w) <= mag) & (minus2 * w + minus1 * (1 - w) <= mag)
    inner = torch.zeros_like(mag, dtype=torch.bool)
    inner[..., 1:-1, 1:-1] = True  # the eroded mask: no edge on the outermost pixels
    weak = (peak & inner & (mag >= low)).float()
    strong = weak * (mag >= high)
    # hysteresis: grow the strong pixels through 8-connected weak ones until nothing changes
    while True:
        grown = F.max_pool2d(strong, 3, stride=1, padding=1) * weak
        if torch.equal(grown, strong):
            return strong
        strong = grown


# --------------------------------------------------------------------------- registry

# MNIST-C's order (its CORRUPTIONS list, without "identity")
CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "brightness": brightness,
    "translate": translate,
    "stripe": stripe,
    "fog": fog,
    "spatter": spatter,
    "dotted_line": dotted_line,
    "zigzag": zigzag,
    "canny_edges": canny_edges,
}
