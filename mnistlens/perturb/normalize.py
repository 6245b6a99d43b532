"""Normalize a digit for one factor: position, slant, size or stroke width.

Does a factor explain a model's mistake? Take the digits a better model gets right and a
worse one gets wrong, take that one factor away (re-centre them, deslant them, ...) and
count how many the worse model now gets right. Each function here removes one factor
the way MNIST's makers (or the classic deskew) would, batched and deterministically,
and keeps the input convention:

    normalize(images) -> images: (N, 1, 28, 28) in [0, 1] -> same shape, [0, 1]

The convention is MNIST's own, measured on its 60,000 training digits, so that real
digits barely move and only the unusual ones change: the centre of mass at pixel
(14, 14), no slant (the shear moments say none), the ink box's longer side 20 pixels,
and strokes MNIST_STROKE_WIDTH pixels wide. Coordinates are in pixels, x to the right
and y down, pixel (row i, column j) centred at (x, y) = (j, i). A blank image is
returned unchanged; the measuring helpers give NaN (or a box of 0) for it.

    >>> gap = right_b & ~right_a  # (N,) bool: the digits B gets right and A does not
    >>> for factor, normalize in FACTORS.items():
    ...     guess = predict_logits(model_a, normalize(images[gap])).argmax(1)
    ...     print(factor, int((guess == labels[gap]).sum()), "of", int(gap.sum()))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mnistlens.data import check_images
from mnistlens.errors import MnistlensError

# Where MNIST's digits have their centre of mass: pixel (14, 14), not the image's middle
# (13.5, 13.5). The 60,000 training digits average (14.007, 13.996) and 99.997% lie
# within half a pixel of (14, 14) in both axes: MNIST moved each digit by whole pixels
# to put its centre of mass there (http://yann.lecun.com/exdb/mnist/).
CENTRE = 14.0
# A pixel is ink above this: resampling leaves faint grey fringes, which must not count.
# On the training digits the box hardly depends on it (mean height 19.74 at > 0,
# 19.71 at > 0.1, 19.60 at > 0.5).
INK_THRESHOLD = 0.1
# The longer side of the ink box (> INK_THRESHOLD) of MNIST's training digits: mean
# 19.9997, and exactly 20 for 99.97% of them: MNIST fit each digit into a 20 x 20 box,
# keeping its aspect ratio. (The height alone averages 19.71: a wide digit is 20 pixels
# wide and less high.)
MNIST_SIZE = 20.0
# The median stroke width (`stroke_width_of`) of MNIST's 60,000 training digits
# (10% are below 1.75, 10% above 3.26).
MNIST_STROKE_WIDTH = 2.36


def _grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates x (1, 28) and y (28, 1), on the images' device and dtype."""
    axis = torch.arange(28, dtype=images.dtype, device=images.device)
    return axis[None, :], axis[:, None]


def _sample(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each output pixel takes the input at pixel coordinates (x, y), each (N, 28, 28):
    bilinear, black outside (MNIST's background): -> (N, 1, 28, 28) in [0, 1]."""
    # pixel j's centre is at (2j + 1) / 28 - 1 in grid_sample's [-1, 1] (align_corners=False)
    grid = torch.stack([(2 * x + 1) / 28 - 1, (2 * y + 1) / 28 - 1], dim=-1)  # (N, 28, 28, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)


def _centre(images: torch.Tensor) -> torch.Tensor:
    """`centre_of_mass` of a checked batch: (N, 1, 28, 28) -> (N, 2)."""
    x, y = _grid(images)
    ink = images[:, 0]  # (N, 28, 28)
    mass = ink.sum(dim=(1, 2))
    cx = (ink * x).sum(dim=(1, 2)) / mass
    cy = (ink * y).sum(dim=(1, 2)) / mass
    return torch.stack([cx, cy], dim=1)  # (N, 2)


def _slant(images: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """`slant` of a checked batch whose centres of mass are `centre` (N, 2): -> (N,)."""
    x, y = _grid(images)
    dx = x - centre[:, 0, None, None]  # (N, 1, 28)
    dy = y - centre[:, 1, None, None]  # (N, 28, 1)
    ink = images[:, 0]  # (N, 28, 28)
    return -(ink * dx * dy).sum(dim=(1, 2)) / (ink * dy * dy).sum(dim=(1, 2))


def _extent(mask: torch.Tensor) -> torch.Tensor:
    """(N, 28) bool, a row (or column) holds ink -> (N,) rows from the first to the
    last that does, both counted (0 for none)."""
    index = torch.arange(28, device=mask.device).expand_as(mask)
    first = torch.where(mask, index, 28).min(dim=1).values
    last = torch.where(mask, index, -1).max(dim=1).values
    return (last - first + 1).clamp(min=0).to(torch.float32)


def _width(images: torch.Tensor) -> torch.Tensor:
    """`stroke_width_of` a checked batch: (N, 1, 28, 28) -> (N,)."""
    padded = F.pad(images, (0, 1, 0, 1))  # (N, 1, 29, 29), black beyond the last row/column
    dx = padded[..., :-1, 1:] - images  # (N, 1, 28, 28)
    dy = padded[..., 1:, :-1] - images  # (N, 1, 28, 28)
    perimeter = torch.hypot(dx, dy).sum(dim=(1, 2, 3))
    return 2 * images.sum(dim=(1, 2, 3)) / perimeter


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """The intensity-weighted centre of each digit: (N, 1, 28, 28) -> (N, 2) as (x, y)
    in pixels (MNIST's digits: about (14, 14)); NaN for a blank image."""
    return _centre(check_images(images))


def slant(images: torch.Tensor) -> torch.Tensor:
    """How far each digit leans, from its central moments: -mu11 / mu02, how far the ink
    moves right per pixel up (0.3: the top leans right by 0.3 of its height above the
    centre, as `transforms.shear`'s amount): (N, 1, 28, 28) -> (N,); NaN for a blank
    image (or one all in one row)."""
    images = check_images(images)
    return _slant(images, _centre(images))


def ink_height(images: torch.Tensor) -> torch.Tensor:
    """Rows of each digit's ink box (pixels > INK_THRESHOLD): (N, 1, 28, 28) -> (N,)."""
    images = check_images(images)
    return _extent((images[:, 0] > INK_THRESHOLD).any(dim=2))


def ink_width(images: torch.Tensor) -> torch.Tensor:
    """Columns of each digit's ink box (pixels > INK_THRESHOLD): (N, 1, 28, 28) -> (N,)."""
    images = check_images(images)
    return _extent((images[:, 0] > INK_THRESHOLD).any(dim=1))


def stroke_width_of(images: torch.Tensor) -> torch.Tensor:
    """Each digit's stroke width in pixels, 2 x ink / perimeter: (N, 1, 28, 28) -> (N,);
    NaN for a blank image.

    A stroke of length L and width w has area L w and perimeter about 2 L, whatever
    its shape. The perimeter is the image's total variation (the length of the
    gradient, forward differences), which for grey levels is the perimeter averaged over
    all thresholds (the coarea formula), so the antialiased edges need no threshold and
    a faint digit measures as wide as a dark one. An antialiased ring 2 (3) pixels wide
    measures 1.9 (2.8).
    """
    return _width(check_images(images))


def recentre(images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Move each digit by whole pixels so its centre of mass is within half a pixel of
    (CENTRE, CENTRE), as MNIST placed its digits: (N, 1, 28, 28) -> same. Ink moved past
    the border is lost. strength (here and in each normalization): 1 takes the factor
    away, -1 makes the opposite change of the same size (twice as far off centre), a
    control for whether the factor or any change of that size moves the answer.

    Whole pixels, not a sub-pixel shift: that is how MNIST was made (its centres of mass
    spread evenly over +-0.5 pixel, standard deviation 0.29 = 1 / sqrt(12)), so all but 2
    of the 60,000 training digits stay exactly as they are, and a moved digit is not
    blurred by resampling.
    """
    images = check_images(images)
    shift = (strength * (CENTRE - _centre(images))).round().nan_to_num(0.0).long()  # (N, 2)
    axis = torch.arange(28, device=images.device)
    rows = axis - shift[:, 1, None]  # (N, 28): the input row each output row takes
    cols = axis - shift[:, 0, None]  # (N, 28)
    inside = ((rows >= 0) & (rows < 28))[:, :, None] & ((cols >= 0) & (cols < 28))[:, None, :]
    batch = torch.arange(len(images), device=images.device)[:, None, None]
    moved = images[:, 0][batch, rows.clamp(0, 27)[:, :, None], cols.clamp(0, 27)[:, None, :]]
    return (moved * inside).unsqueeze(1)  # (N, 1, 28, 28)


def deslant(images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Remove each digit's slant, the classic deskew: shear x by the `slant` about the
    centre of mass, which stays where it was, so that afterwards mu11 = 0 (up to
    resampling): (N, 1, 28, 28) -> same.

    Each row moves sideways by slant x its height above the centre of mass: the row
    through it stays, a digit leaning right is pushed back left at the top.
    """
    images = check_images(images)
    x, y = _grid(images)
    centre = _centre(images)  # (N, 2)
    amount = strength * _slant(images, centre).nan_to_num(0.0)[:, None, None]  # (N, 1, 1)
    centre = centre.nan_to_num(CENTRE)
    # the output pixel (x, y) shows the input where the slant had put it
    source_x = x - amount * (y - centre[:, 1, None, None])  # (N, 28, 28)
    return _sample(images, source_x, y.expand_as(source_x))


def rescale(images: torch.Tensor, size: float | None = None, strength: float = 1.0) -> torch.Tensor:
    """Scale each digit about its centre of mass so the longer side of its ink box
    (`ink_height`, `ink_width`) is `size` pixels, keeping its aspect ratio:
    (N, 1, 28, 28) -> same. Default MNIST_SIZE (20), so almost every real digit is
    returned exactly; the factor is kept within 1/4 to 4.

    The longer side, not the height: MNIST fit each digit, keeping its aspect ratio, into
    20 x 20, so a wide digit is 20 pixels wide and less high; brought to a height of 20
    it would lose its ends at the border.
    """
    images = check_images(images)
    size = MNIST_SIZE if size is None else size
    if not 0 < size <= 28:
        raise MnistlensError(f"rescale needs a size above 0 and at most 28 pixels, got {size!r}")
    ink = images[:, 0] > INK_THRESHOLD  # (N, 28, 28)
    box = torch.maximum(_extent(ink.any(dim=2)), _extent(ink.any(dim=1)))  # (N,)
    factor = torch.where(box > 0, size / box, torch.ones_like(box)) ** strength
    factor = factor.clamp(0.25, 4.0)
    out = images.clone()
    moving = (factor != 1).nonzero().squeeze(1)  # only these are resampled
    if len(moving):
        part = images[moving]
        x, y = _grid(part)
        centre = _centre(part)  # (M, 2)
        # (x - cx) / f + cx, written so that f = 1 would give x exactly
        shrink = (1 / factor[moving] - 1)[:, None, None]  # (M, 1, 1)
        source_x = x + (x - centre[:, 0, None, None]) * shrink  # (M, 1, 28)
        source_y = y + (y - centre[:, 1, None, None]) * shrink  # (M, 28, 1)
        out[moving] = _sample(part, *torch.broadcast_tensors(source_x, source_y))
    return out


# stroke_width: steps of false position, and how close to the target (pixels) is close
# enough. Four steps bring 99% of MNIST's test digits within 1e-6 pixel of the target,
# and all but 11 of the 10,000 (the few beyond two thinnings) within 0.01.
_STEPS = 4
_TOLERANCE = 0.01


def _filter3(images: torch.Tensor, reduce: Callable) -> torch.Tensor:
    """3x3 max (reduce=torch.maximum) or min filter, black outside: (N, 1, 28, 28) ->
    same; `transforms.thickness(images, 2)` (or -2) in one separable pass."""
    padded = F.pad(images, (1, 1, 1, 1))  # (N, 1, 30, 30)
    rows = reduce(reduce(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])  # (N, 1, 30, 28)
    return reduce(reduce(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _thinner(images: torch.Tensor) -> torch.Tensor:
    """A 3x3 erosion that spares the strokes too thin to survive it: (N, 1, 28, 28) ->
    same. MNIST's strokes are 2-3 pixels wide and a 3x3 erosion wipes the thinner ones
    out, so what it wipes out is put back: the white top-hat, images - opening(images),
    is exactly the ink an erosion loses and the dilation after it cannot restore."""
    eroded = _filter3(images, torch.minimum)
    return eroded + images - _filter3(eroded, torch.maximum)


def _thicker(images: torch.Tensor) -> torch.Tensor:
    """A 3x3 dilation that leaves the holes too small to survive it open (the loops of a
    small 6, 8 or 9): (N, 1, 28, 28) -> same. The dual of `_thinner`: the black top-hat,
    closing(images) - images, is what a dilation fills in for good; it is taken off."""
    dilated = _filter3(images, torch.maximum)
    return dilated - _filter3(dilated, torch.minimum) + images


def _interpolate(
    lo: torch.Tensor,
    hi: torch.Tensor,
    width_lo: torch.Tensor,
    width_hi: torch.Tensor,
    target: float | torch.Tensor,
) -> torch.Tensor:
    """Where between shares lo and hi (N,) the width reaches the target, if it grows
    linearly from width_lo to width_hi; kept within [lo, hi]."""
    step = (target - width_lo) / (width_hi - width_lo).clamp(min=1e-6)
    return torch.minimum(torch.maximum(lo + step * (hi - lo), lo), hi)


def stroke_width(
    images: torch.Tensor, target: float | None = None, strength: float = 1.0
) -> torch.Tensor:
    """Thin or thicken each digit's strokes to `target` pixels wide (`stroke_width_of`;
    default MNIST_STROKE_WIDTH): (N, 1, 28, 28) -> same.

    Grey-level morphology chosen per image: the digit thinned twice or once (a 3x3
    erosion that spares strokes too thin for it), itself, or thickened once (a 3x3
    dilation that leaves small loops open), or a blend of the two of these whose widths
    bracket the target, in the share that gives the target width (found by a few steps
    of false position). A blend adds (or takes away) a partly grey layer at the edge of
    the strokes, as MNIST's antialiased edges are, so widths between whole steps are
    reached. The filters are 3x3, two of `transforms.thickness`'s 2x2 steps, so the
    digit does not move by half a pixel. A digit within 0.01 pixel of the target is
    returned as it is; one thicker than two thinnings reach (or thinner than one
    thickening does) gets the nearest.
    """
    images = check_images(images)
    target = MNIST_STROKE_WIDTH if target is None else target
    if not 0 < target <= 10:
        raise MnistlensError(f"stroke_width needs a target above 0 and at most 10, got {target!r}")
    if strength != 1:  # each digit's own target: as far from its width, the other way
        width = _width(images)
        target = (width + strength * (target - width)).clamp(0.5, 10.0)  # (N,)
    thinner = _thinner(images)
    options = torch.stack([_thinner(thinner), thinner, images, _thicker(images)])
    widths = torch.stack([_width(option) for option in options])  # (4, N)
    # a digit within _TOLERANCE of the target (a blank one: NaN) is left as it is
    keep = ~((widths[2] - target).abs() > _TOLERANCE)  # (N,)
    # Thinned twice, a digit can be a few blobs, which measure wider than the lines one
    # thinning leaves: an option counts as no wider than any thicker one (and one thinned
    # away, NaN, as 0), so the widths grow along the options.
    widths = widths.nan_to_num(0.0).flip(0).cummin(dim=0).values.flip(0)  # (4, N)
    low = ((widths <= target).sum(dim=0) - 1).clamp(0, len(options) - 2)  # (N,)
    index = torch.arange(len(images), device=images.device)
    thin, thick = options[low, index], options[low + 1, index]  # (N, 1, 28, 28) each

    def blend(share: torch.Tensor) -> torch.Tensor:  # (N,) in [0, 1] -> (N, 1, 28, 28)
        return thin + share[:, None, None, None] * (thick - thin)

    # false position (the Illinois variant) on the share of `thick` for the target width
    lo = torch.zeros(len(images), device=images.device)  # (N,)
    hi = torch.ones_like(lo)
    width_lo, width_hi = widths[low, index], widths[low + 1, index]  # (N,)
    moved = torch.zeros_like(lo)  # (N,): which end the last step moved, +1 hi, -1 lo, 0 none
    for _ in range(_STEPS):
        share = _interpolate(lo, hi, width_lo, width_hi, target)
        width = _width(blend(share)).nan_to_num(0.0)
        above = width > target
        # an end kept twice running has its miss halved, so it stops holding the guess back
        width_lo = torch.where(above & (moved > 0), (width_lo + target) / 2, width_lo)
        width_hi = torch.where(~above & (moved < 0), (width_hi + target) / 2, width_hi)
        hi, width_hi = torch.where(above, share, hi), torch.where(above, width, width_hi)
        lo, width_lo = torch.where(above, lo, share), torch.where(above, width_lo, width)
        moved = above.to(lo.dtype) * 2 - 1
    out = blend(_interpolate(lo, hi, width_lo, width_hi, target))
    return torch.where(keep[:, None, None, None], images, out.clamp(0, 1))


# The factors a digit is normalized for, in the order a report lists them.
FACTORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "position": recentre,
    "slant": deslant,
    "size": rescale,
    "stroke width": stroke_width,
}
