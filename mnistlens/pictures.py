"""A user's own digit picture (a photo, a scan, a drawing) made into an MNIST image.

MNIST's digits were size-normalized into 20 x 20 pixels, keeping their aspect ratio, and
centred by their centre of mass in a 28 x 28 frame, white ink on black. `prepare_digit`
does the same to any grayscale picture, and `load_digit_image` reads one from a file of
any mode first. The result follows the input convention of `mnistlens.data`:
(1, 28, 28) float32 in [0, 1].
"""

from __future__ import annotations

import os

import torch

from mnistlens.errors import MnistlensError


def prepare_digit(gray: torch.Tensor) -> torch.Tensor:
    """Turn any grayscale digit picture into an MNIST-style image, as MNIST was made.

    (H, W) float in [0, 1] -> (1, 28, 28) float32 in [0, 1]. A light background is
    inverted to white-on-black; the ink's bounding box is scaled (keeping its aspect
    ratio) to fit 20 x 20, then placed in a 28 x 28 frame so that its centre of mass
    sits at pixel (14, 14), where MNIST's own digits have it (LeCun et al.).
    """
    import torch.nn.functional as F

    gray = gray.float()
    border = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.median() > 0.5:  # dark digit on light paper
        gray, border = 1.0 - gray, 1.0 - border
    # The paper's own shade becomes black, and so does its grain: a photo of a digit on
    # grey paper has neither a black background nor one even shade. Paper is what the
    # border shows: its median, and how far its pixels stray from it (twice the 99th
    # percentile: the page has many more pixels than its border, so its grain reaches
    # further; a clean black border gives 0 and changes nothing).
    paper = border.median()
    grain = 2 * (border - paper).abs().quantile(0.99)
    gray = (gray - paper - grain).clamp(min=0)
    if gray.max() < 0.05:
        raise MnistlensError("no digit found in the image: it is blank (all one shade)")
    gray = gray / gray.max()
    rows = (gray > 0.1).any(dim=1).nonzero()[:, 0]
    cols = (gray > 0.1).any(dim=0).nonzero()[:, 0]
    ink = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w) bounding box
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(
        ink[None, None],
        size=size,
        mode="area" if scale < 1 else "bilinear",
        **({} if scale < 1 else {"align_corners": False}),
    )[0, 0]
    small = small.clamp(0, 1)
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    mass = small.sum()
    cy, cx = float((ys * small).sum() / mass), float((xs * small).sum() / mass)
    top = min(max(round(14.0 - cy), 0), 28 - size[0])
    left = min(max(round(14.0 - cx), 0), 28 - size[1])
    out = torch.zeros(1, 28, 28)
    out[0, top : top + size[0], left : left + size[1]] = small
    return out


MAX_PICTURE_SIDE = 1024  # larger pictures are shrunk first: a 10000 x 10000 PNG stays cheap


def load_digit_image(path: str | os.PathLike) -> torch.Tensor:
    """Read a user's digit picture (PNG, JPEG, ...) as an MNIST-style (1, 28, 28) image.

    Any mode works: 8- or 16-bit grayscale, RGB, palette, and transparency (strokes drawn
    on a transparent canvas are put on a contrasting ground). Pictures larger than
    MAX_PICTURE_SIDE are shrunk before decoding to floats, so memory stays small.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            if picture.width < 1 or picture.height < 1:
                raise MnistlensError(
                    f"{path} is an empty picture ({picture.width}x{picture.height})"
                )
            picture.draft("L", (MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))  # JPEG: decode smaller
            picture.load()
            if max(picture.size) > MAX_PICTURE_SIDE:
                picture.thumbnail((MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))
            gray = _grayscale(picture)
    except FileNotFoundError:
        raise MnistlensError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise MnistlensError(
            f"cannot read {path} as an image ({type(err).__name__}); use a PNG or JPEG"
        ) from None
    return prepare_digit(torch.from_numpy(gray))


def _grayscale(picture):  # -> np.ndarray (H, W)
    """(H, W) float32 in [0, 1] from a PIL picture of any mode."""
    import numpy as np
    from PIL import Image

    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float grayscale
        values = np.asarray(picture, dtype=np.float32)
        top = float(values.max()) if values.size else 0.0
        return values / top if top > 0 else values
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        # Strokes on a transparent canvas: the ground must contrast with the strokes, so
        # light strokes go on black and dark strokes on white.
        lum = np.asarray(rgba.convert("L"), dtype=np.float32)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        light_strokes = (lum * alpha).sum() > 0.5 * 255 * alpha.sum()
        ground = Image.new(
            "RGBA", rgba.size, (0, 0, 0, 255) if light_strokes else (255, 255, 255, 255)
        )
        picture = Image.alpha_composite(ground, rgba)
    return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
