"""Image operations MNIST-C's corruptions are built from, in batched torch: Gaussian
blur as scipy.ndimage does it, affine warps as skimage does them, anti-aliased lines,
the glass-blur swap sweep, one level of diamond-square (fog's plasma), the zigzag's
corners, and skimage's Canny edge detector. Each image's result never depends on the
rest of its batch (`corruptions.py` promises it for whole corruptions).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def gauss1d(x: torch.Tensor, sigma: float, dim: int, mode: str) -> torch.Tensor:
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


def gauss2d(x: torch.Tensor, sigma: float, mode: str) -> torch.Tensor:
    return gauss1d(gauss1d(x, sigma, -2, mode), sigma, -1, mode)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
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


def line(
    rows: torch.Tensor, c0: torch.Tensor, r0: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    """MNIST-C's `line_from_points` ink, before its column cut: 1 on the line through
    (c0, r0) with `slope`, falling as log(1 - d / 2.3) + 1 with the vertical distance d,
    0 from d = 1.45 on. Arguments (N, 1, 1) -> (N, 28, 28)."""
    cols = rows.view(1, 1, 28)  # rows holds 0..27: the same positions serve as columns
    dist = (rows.view(1, 28, 1) - (slope * (cols - c0) + r0)).abs()  # (N, 28, 28)
    return (torch.log1p(-dist.clamp(max=2.3 - 1e-6) / 2.3) + 1).clamp(0, 1)


@functools.cache
def glass_fronts() -> list[torch.Tensor]:
    """The pixels (h, w), 2 <= h, w <= 27, grouped by 2h + w from the largest: flat
    indices, one tensor per group."""
    return [
        torch.tensor([h * 28 + (key - 2 * h) for h in range(27, 1, -1) if 2 <= key - 2 * h <= 27])
        for key in range(3 * 27, 3 * 2 - 1, -1)
    ]


def glass_sweep(flat: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
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
        for front in glass_fronts():
            front = front.to(z.device)
            partner = front[:, None] - back[front]  # (m, n)
            mine, theirs = z[front], z.gather(0, partner)
            z[front] = theirs
            z.scatter_(0, partner, mine)
    return z.t()  # (n, 784)


def diamond_square_level(m: torch.Tensor, st: int, noise: torch.Tensor) -> None:
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


@functools.cache
def zigzag_table() -> torch.Tensor:
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


def canny(x: torch.Tensor, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """skimage.feature.canny(sigma=1) on each image: (n, 1, 28, 28) -> {0, 1} float32."""
    bleed = gauss2d(torch.ones_like(x[:1]), 1.0, "constant")
    smooth = gauss2d(x, 1.0, "constant") / (bleed + torch.finfo(x.dtype).eps)
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
