"""Probe sets: pictures that are not MNIST digits, made by code, to measure the detectors.

Nothing is downloaded: letters, symbols and printed digits are rendered with the fonts
matplotlib ships (DejaVu, STIX, Computer Modern) and go through mnistlens' own picture
pipeline (`pictures.prepare_digit`, as `explain --image` does), so they reach the model
exactly as a user's picture of them would. Real digits from another source are
scikit-learn's bundled 8x8 digits (Alpaydin & Kaynak's UCI set), upscaled by the same
pipeline. Every set is deterministic (fixed seeds), (N, 1, 28, 28) float32 in [0, 1].

    >>> sets = probe_sets(test_images)
    >>> {name: len(images) for name, images in sets.items()}
    {'letters': 80, 'symbols': 64, 'noise': 64, 'blank': 9, 'inverted': 100, ...}
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from mnistlens.pictures import prepare_digit

# Letters no reader would take for a digit: no O/o, I/l, S/s, Z/z, B, G, g, q, b, D, L
# (0, 1, 5, 2, 8, 6, 9, 9, 6, 0, and an L is close to a 4's or a 7's strokes).
LETTERS = "ACEFHKMNPRTUVWXYaekm"
SYMBOLS = "#$%&@*+=?!<>~^{}"
DIGITS = "0123456789"
# Regular, bold, serif and monospaced faces of the fonts in matplotlib's mpl-data/fonts/ttf.
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
PRINTED_FONTS = FONTS + ("DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "cmr10.ttf", "cmss10.ttf")
CANVAS = 96  # pixels: the glyph is drawn large, then shrunk as a photo would be


def font_path(name: str) -> Path:
    """A font file matplotlib ships, by file name."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


@functools.lru_cache(maxsize=512)
def render_glyph(char: str, font: str) -> torch.Tensor:
    """One character drawn dark on light paper, then `prepare_digit`: -> (1, 28, 28)."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font_path(font)), size=64)
    picture = Image.new("L", (CANVAS, CANVAS), color=255)
    ImageDraw.Draw(picture).text((CANVAS // 2, CANVAS // 2), char, font=face, fill=0, anchor="mm")
    paper = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)  # (96, 96)
    return prepare_digit(paper)  # inverts dark-on-light, as for a user's photo


def rendered(chars: str, fonts: tuple[str, ...]) -> torch.Tensor:
    """Every character in every font: -> (len(chars) * len(fonts), 1, 28, 28)."""
    return torch.stack([render_glyph(c, f) for f in fonts for c in chars])


def letters() -> torch.Tensor:
    """20 letters x 4 fonts: (80, 1, 28, 28)."""
    return rendered(LETTERS, FONTS)


def symbols() -> torch.Tensor:
    """16 symbols x 4 fonts: (64, 1, 28, 28)."""
    return rendered(SYMBOLS, FONTS)


def printed_digits() -> torch.Tensor:
    """The ten digits in 8 fonts: (80, 1, 28, 28). A user may well give these; they
    should mostly pass."""
    return rendered(DIGITS, PRINTED_FONTS)


def noise(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Uniform noise, and sparse salt noise: (n, 1, 28, 28)."""
    g = torch.Generator().manual_seed(seed)
    uniform = torch.rand(n // 2, 1, 28, 28, generator=g)
    salt = (torch.rand(n - n // 2, 1, 28, 28, generator=g) < 0.15).float()
    return torch.cat([uniform, salt])


def blank(n: int = 9) -> torch.Tensor:
    """Even shades from black to white: (n, 1, 28, 28). `prepare_digit` refuses these, but
    a canvas or a caller's tensor can still hold one."""
    return torch.linspace(0, 1, n).view(n, 1, 1, 1).expand(n, 1, 28, 28).clone()


def inverted(test_images: torch.Tensor, n: int = 100) -> torch.Tensor:
    """The first n MNIST test digits, black on white: (n, 1, 28, 28)."""
    return 1.0 - test_images[:n]


def scribbles(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Random pen strokes (a few segments of a random walk), through `prepare_digit`:
    (n, 1, 28, 28)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picture = Image.new("L", (CANVAS, CANVAS), color=0)
        draw = ImageDraw.Draw(picture)
        points = rng.uniform(8, CANVAS - 8, size=(int(rng.integers(5, 12)), 2))
        draw.line([tuple(p) for p in points], fill=255, width=int(rng.integers(5, 10)))
        gray = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
        out.append(prepare_digit(gray))
    return torch.stack(out)


def sklearn_digits(n: int = 200) -> torch.Tensor:
    """scikit-learn's bundled 8x8 handwritten digits (values 0-16), the first n, upscaled
    by `prepare_digit`: (n, 1, 28, 28). Real digits from another source: should pass."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images[:n].astype(np.float32) / 16.0)  # (n, 8, 8)
    # A one-pixel black margin: prepare_digit reads the paper's shade from the border,
    # and these digits touch it.
    framed = torch.nn.functional.pad(images, (1, 1, 1, 1))  # (n, 10, 10)
    return torch.stack([prepare_digit(img) for img in framed])


# Probe set name -> whether a good detector should flag it (True) or let it pass (False).
SHOULD_FLAG = {
    "letters": True,
    "symbols": True,
    "noise": True,
    "blank": True,
    "inverted": True,
    "scribbles": True,
    "printed digits": False,
    "sklearn digits": False,
}


def probe_sets(test_images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every probe set by name, in the order of `SHOULD_FLAG`. test_images: the MNIST test
    split (N, 1, 28, 28), whose first digits are inverted."""
    return {
        "letters": letters(),
        "symbols": symbols(),
        "noise": noise(),
        "blank": blank(),
        "inverted": inverted(test_images),
        "scribbles": scribbles(),
        "printed digits": printed_digits(),
        "sklearn digits": sklearn_digits(),
    }
