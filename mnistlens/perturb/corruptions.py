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
in the batch; seeded.py): the same call gives the same bits, the global RNG is
untouched, and corrupting `images[:k]` gives the first k results of corrupting `images`.

    >>> foggy = fog(images)                      # MNIST-C's fog
    >>> suite = {name: c(images, seed=1) for name, c in CORRUPTIONS.items()}
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mnistlens.perturb import imageops as ops
from mnistlens.perturb import seeded

# --------------------------------------------------------------------------- noise


def shot_noise(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Photon noise: each pixel becomes Poisson(x * c) / c: (N, 1, 28, 28) -> same.

    MNIST-C: c = 3 photons per unit of ink (its severity 5). Ours: the same, c = 3 /
    severity. Black pixels stay black (Poisson(0) = 0); a full-ink pixel keeps its value
    with probability 0.58 and drops to 0, 1/3 or 2/3 otherwise."""
    return seeded.apply("shot_noise", images, severity, seed, _shot_noise)


def _shot_noise(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    c = 3.0 / severity
    rates = x.cpu() * c
    return (rng.each(lambda g, i: torch.poisson(rates[i], g)) / c).to(x.device)


def impulse_noise(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Salt and pepper: a fraction `amount` of the pixels is set to 1 or 0, half each:
    (N, 1, 28, 28) -> same.

    MNIST-C: skimage's `random_noise(mode="s&p", amount=0.17)` (its severity 4). Ours: the
    same, amount = min(1, 0.17 * severity)."""
    return seeded.apply("impulse_noise", images, severity, seed, _impulse_noise)


def _impulse_noise(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
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
    Ours does all of this, the sweep included (`ops.glass_sweep`: the same swaps, in an order
    that gives the same result, vectorized). Severity scales the sigma (0.7 s) and the
    swap probability (min(1, s / 2))."""
    return seeded.apply("glass_blur", images, severity, seed, _glass_blur)


def _glass_blur(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    sigma, p = 0.7 * severity, min(1.0, severity / 2)
    u = rng.uniform(2, 28, 28).to(x.device)  # (n, sweeps, 28, 28)
    blurred = torch.floor(ops.gauss1d(x, sigma, -2, "nearest").clamp(0, 1) * 255) / 255
    swept = ops.glass_sweep(blurred.flatten(1), u, p)  # (n, 784)
    return ops.gauss1d(swept.view_as(x), sigma, -2, "nearest")


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
    return seeded.apply("motion_blur", images, severity, seed, _motion_blur)


def _motion_blur(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
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
    return seeded.apply("shear", images, severity, seed, _shear)


def _shear(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    s = 0.4 * severity * seeded.signs(rng.uniform(1))[:, 0]  # (n,)
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    rows = [torch.stack([one, -torch.sin(s), zero], 1), torch.stack([zero, torch.cos(s), zero], 1)]
    return ops.warp(x, torch.stack(rows, 1))  # theta (n, 2, 3)


def scale(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Shrink every digit about the image centre: (N, 1, 28, 28) -> same.

    MNIST-C (severity 3): skimage AffineTransform(scale=1/0.7) as the inverse map of `warp`:
    the digit shrinks to 0.7 of its size (its five severities are 0.9 down to 0.5).
    Ours: the same, factor 0.7 ** severity (0.49 at severity 2, near their strongest). Not
    random; `seed` is accepted for a common signature."""
    return seeded.apply("scale", images, severity, seed, _scale)


def _scale(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    inv = 0.7 ** (-severity)
    return ops.warp(x, torch.tensor([[inv, 0.0, 0.0], [0.0, inv, 0.0]]).expand(len(x), 2, 3))


def rotate(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Turn each digit about the image centre, clockwise or counter-clockwise:
    (N, 1, 28, 28) -> same.

    MNIST-C (severity 2): skimage AffineTransform(rotation=+-0.4 rad, 22.9 degrees), sign
    random per image, as the inverse map of `warp` (bilinear, black outside). Ours: the
    same, +-0.4 * severity rad."""
    return seeded.apply("rotate", images, severity, seed, _rotate)


def _rotate(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    a = 0.4 * severity * seeded.signs(rng.uniform(1))[:, 0]  # (n,)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    rows = [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)]
    return ops.warp(x, torch.stack(rows, 1))


def translate(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Move each digit diagonally: (N, 1, 28, 28) -> same.

    MNIST-C (severity 3): 3 pixels along x and 3 along y, each sign random per image (one
    of the four diagonals), ink past the border lost. Ours: the same, 3 * severity pixels
    (bilinear between whole pixels)."""
    return seeded.apply("translate", images, severity, seed, _translate)


def _translate(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    shift = 3.0 * severity * seeded.signs(rng.uniform(2))  # (n, 2) pixels: (right, down)
    t = -2 * shift / 28  # in [-1, 1] units; the input point lies behind the output one
    one, zero = torch.ones_like(t[:, 0]), torch.zeros_like(t[:, 0])
    rows = [torch.stack([one, zero, t[:, 0]], 1), torch.stack([zero, one, t[:, 1]], 1)]
    return ops.warp(x, torch.stack(rows, 1))


# --------------------------------------------------------------------------- light


def brightness(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Brighter everywhere: x + 0.5, clipped: (N, 1, 28, 28) -> same.

    MNIST-C (severity 5): adds 0.5 to the V of HSV through skimage's colour conversions,
    which for a grey image is x + 0.5 clipped. Ours: x + 0.5 * severity. Not random."""
    return seeded.apply("brightness", images, severity, seed, lambda x, s, _: x + 0.5 * s)


def stripe(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Invert a band down each side: (N, 1, 28, 28) -> same.

    MNIST-C: x -> 1 - x in the 7 leftmost and 7 rightmost columns. Ours: bands 7 *
    severity columns wide (a fractional edge column is partly inverted); from severity 2
    the whole image is inverted. Not random."""
    return seeded.apply("stripe", images, severity, seed, _stripe)


def _stripe(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
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
    return seeded.apply("fog", images, severity, seed, _fog)


def _fog(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    c = 3.0 * severity
    haze = _plasma(rng).to(x.device)[:, None]  # (n, 1, 28, 28)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c * haze) * top / (top + c)


def _plasma(rng: seeded.Stream) -> torch.Tensor:
    """MNIST-C's plasma_fractal(256, wibbledecay=1.4)[:28, :28], approximated as `fog` says:
    -> (n, 28, 28) in [0, 1], CPU."""
    levels64 = [64 >> k for k in range(6)]  # squares 64..2 apart on the 64 map = 256..8
    sizes = [3 * (64 // st) ** 2 for st in levels64] + [300, 1200]  # + the patch's 2 levels
    n = rng.n
    noise = list(torch.split(rng.uniform(sum(sizes)) * 2 - 1, sizes, dim=1))
    wibble = [100.0 / 1.4**k for k in range(8)]
    coarse = torch.zeros(n, 64, 64)
    for k, st in enumerate(levels64):
        ops.diamond_square_level(coarse, st, wibble[k] ** 2 * noise[k])
    # pixels -4..35 of the 256 map: the coarse values -1..8 every 4 pixels, finished by the
    # last two levels; the patch wraps at its edge, which reaches pixels 31 and up only
    patch = torch.zeros(n, 40, 40)
    patch[:, ::4, ::4] = coarse.roll((1, 1), dims=(1, 2))[:, :10, :10]
    ops.diamond_square_level(patch, 4, wibble[6] ** 2 * noise[6])
    ops.diamond_square_level(patch, 2, wibble[7] ** 2 * noise[7])
    low = coarse.amin(dim=(1, 2)).view(n, 1, 1)  # (n, 1, 1)
    high = coarse.amax(dim=(1, 2)).view(n, 1, 1)
    return ((patch[:, 4:32, 4:32] - low) / (high - low)).clamp(0, 1)


# --------------------------------------------------------------------------- clutter


def spatter(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Grey mud blobs over the digit: (N, 1, 28, 28) -> same.

    MNIST-C (severity 4): noise N(0.65, 0.3) per pixel, Gaussian blur sigma 1, the pixels
    above 0.65 form blobs; the blob mask blurred (sigma 1.5) and kept where >= 0.8 is m;
    then x (1 - m) + m 63/255. Ours: the same (skimage's edge-copying blur), with m times
    severity (at most 1): the blobs' opacity."""
    return seeded.apply("spatter", images, severity, seed, _spatter)


def _spatter(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    normal = rng.each(lambda g, _: torch.randn(1, 28, 28, generator=g)).to(x.device)
    blobs = (ops.gauss2d(0.65 + 0.3 * normal, 1.0, "nearest") > 0.65).float()
    m = ops.gauss2d(blobs, 1.5, "nearest")
    m = torch.where(m < 0.8, 0.0, m * severity).clamp(max=1)
    return x * (1 - m) + m * (63 / 255)


def dotted_line(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """A dashed line across the image: (N, 1, 28, 28) -> same.

    MNIST-C: a line from (column 0, row r0) to (column 27, row r1), r0 and r1 uniform in
    0..26 per image, about 3 pixels thick (ink log(1 - d / 2.3) + 1 at vertical distance
    d), kept in columns 2-3, 6-7, ..., 26 (dashes 2 wide, 2 apart), added and clipped.
    Ours: the same, the line's ink times severity."""
    return seeded.apply("dotted_line", images, severity, seed, _dotted_line)


def _dotted_line(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    r = (rng.uniform(2) * 27).floor().to(x.device)  # (n, 2): rows 0..26
    pos = torch.arange(28, dtype=torch.float32, device=x.device)
    r0, r1 = r[:, 0, None, None], r[:, 1, None, None]  # (n, 1, 1)
    ink = ops.line(pos, torch.zeros_like(r0), r0, (r1 - r0) / 27)  # (n, 28, 28)
    dashes = ((pos.long() // 2) % 2 == 1) & (pos < 27)  # columns 2-3, 6-7, ..., 26
    return x + severity * (ink * dashes)[:, None]


def zigzag(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """A zigzag line across the image: (N, 1, 28, 28) -> same.

    MNIST-C: from column 2 to 25, from row r0 uniform in 0..26 to row r1, r1 - r0 uniform
    in -5..4, per image; teeth 2 pixels long and 2 high, each segment drawn
    like `dotted_line`'s line (vertical distance, columns floor(c0)..ceil(c1) - 1), added
    and clipped. Ours: the same, the ink times severity."""
    return seeded.apply("zigzag", images, severity, seed, _zigzag)


def _zigzag(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    u = rng.uniform(2)  # (n, 2)
    start = (u[:, 0] * 27).floor().to(x.device).view(-1, 1, 1)  # row 0..26
    points = ops.zigzag_table()[(u[:, 1] * 10).long()].to(x.device)  # (n, P, 2)
    pos = torch.arange(28, dtype=torch.float32, device=x.device)
    ink = torch.zeros(len(x), 28, 28, device=x.device)
    for k in range(1, points.shape[1]):
        c0, r0 = points[:, k - 1, 0, None, None], points[:, k - 1, 1, None, None]  # (n, 1, 1)
        c1, r1 = points[:, k, 0, None, None], points[:, k, 1, None, None]
        run = c1 - c0
        slope = (r1 - r0) / torch.where(run == 0, 1.0, run)
        keep = (pos >= c0.floor()) & (pos < c1.ceil()) & (run != 0)  # (n, 1, 28) columns
        ink += ops.line(pos, c0, r0 + start, slope) * keep
    return x + severity * ink[:, None]


def canny_edges(images: torch.Tensor, severity: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """The digit's outline: a binary Canny edge map: (N, 1, 28, 28) -> same.

    MNIST-C: skimage `feature.canny` with its defaults: Gaussian sigma 1 (zeros outside,
    renormalized by the blurred mask), Sobel gradients, non-maximum suppression with
    interpolated neighbours, hysteresis thresholds 0.1 and 0.2 over 8-connected pieces,
    1 on the edges, 0 elsewhere. Ours: the same steps, in float64 as skimage's (in
    float32, the ties of a symmetric shape fall the other way). Severity blends the clean
    image into the edge map, (1 - s) x + s edges, s = min(severity, 1). Not random."""
    return seeded.apply("canny_edges", images, severity, seed, _canny_edges)


def _canny_edges(x: torch.Tensor, severity: float, rng: seeded.Stream) -> torch.Tensor:
    s = min(severity, 1.0)
    return (1 - s) * x + s * ops.canny(x.double()).to(x.dtype)


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
