"""Concept image sets: built-in shapes drawn by code, random counterexamples, your pictures.

Every set is MNIST-style, (N, 1, 28, 28) float32 in [0, 1], white ink on black, so the
model sees concepts in the same convention as digits. The built-in concepts are strokes
rendered from a parametric curve with a soft (anti-aliased) edge, at a random position,
size, angle and thickness: what makes a set "closed loop" is the shape, not where or
how large it is (Kim et al. 2018 build concept sets the same way, from many varied
examples of one idea).

Random counterexamples ("random" in TCAV) are random *strokes*: one or two segments or
arcs with the same spread of position, size and thickness as the concepts. Kim et al.
draw random images from the data distribution; here the concept images are synthetic
strokes, and random MNIST digits as the other side would let a CAV learn "synthetic
stroke vs. handwritten digit" (less ink, no centring) instead of the shape. Against
random strokes the only systematic difference is the concept itself. `random_set(...,
kind="digits")` gives random MNIST training digits instead, for comparison.

    >>> images = concept_set("closed_loop", 100, seed=0)   # (100, 1, 28, 28)
    >>> list_concepts()[:2]
    ['closed_loop', 'horizontal_bar']
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mnistlens.errors import MnistlensError

SIZE = 28
_GRID = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="xy"), -1).reshape(-1, 2)
MIN_PICTURES = 5  # the fewest pictures a concept of your own is tested from (30+ is better)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def render(points: np.ndarray, thickness: float) -> np.ndarray:
    """Ink along a polyline: (P, 2) points (x, y in pixels) -> (28, 28) in [0, 1].

    A pixel's ink falls linearly from 1 to 0 over one pixel at half the thickness from
    the nearest point of the curve: a soft edge like MNIST's anti-aliased strokes.
    """
    a, b = points[:-1], points[1:]  # segments (S, 2)
    ab = b - a
    length2 = np.maximum((ab**2).sum(-1), 1e-9)  # (S,)
    ap = _GRID[:, None, :] - a[None]  # (784, S, 2)
    t = np.clip((ap * ab[None]).sum(-1) / length2, 0, 1)  # (784, S)
    nearest = a[None] + t[..., None] * ab[None]  # (784, S, 2)
    dist = np.sqrt(((_GRID[:, None, :] - nearest) ** 2).sum(-1)).min(1)  # (784,)
    ink = np.clip(thickness / 2 + 0.5 - dist, 0, 1)
    return ink.reshape(SIZE, SIZE).astype(np.float32)


def _line(rng: np.random.Generator, angle: float, length: float) -> np.ndarray:
    """A straight segment through a random centre at `angle` (radians): (2, 2)."""
    half = length / 2 * np.array([math.cos(angle), -math.sin(angle)])  # y points down
    centre = _centre(rng, abs(half[0]) + 2, abs(half[1]) + 2)
    return np.stack([centre - half, centre + half])


def _arc(rng: np.random.Generator, sweep: float, radius: tuple[float, float]) -> np.ndarray:
    """An elliptical arc of `sweep` radians, random radii, rotation and start: (P, 2)."""
    rx, ry = rng.uniform(*radius), rng.uniform(*radius)
    start, rotation = rng.uniform(0, 2 * math.pi, size=2)
    t = start + np.linspace(0, sweep, max(8, int(sweep * 8)))
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rotation), math.sin(rotation)
    points = np.stack([c * x - s * y, s * x + c * y], -1)
    reach = np.abs(points).max(0) + 2
    return points + _centre(rng, reach[0], reach[1])


def _centre(rng: np.random.Generator, half_w: float, half_h: float) -> np.ndarray:
    """A random centre that keeps a shape of that half-width and half-height inside."""
    lo_x, lo_y = min(half_w, 13.5), min(half_h, 13.5)
    return np.array([rng.uniform(lo_x, 27 - lo_x), rng.uniform(lo_y, 27 - lo_y)])


def _stroke(rng: np.random.Generator) -> np.ndarray:
    """Any segment or open arc: the shapes behind the thickness concepts and random sets."""
    if rng.random() < 0.5:
        return _line(rng, rng.uniform(0, math.pi), rng.uniform(8, 20))
    return _arc(rng, rng.uniform(0.5, 1.4) * math.pi, (4, 9))


def _normal_width(rng: np.random.Generator) -> float:
    return rng.uniform(1.5, 3.0)  # MNIST strokes are about 2-3 pixels wide


# name -> (what it is, draw(rng) -> (polyline, thickness)); one line each in `--help`.
_CONCEPTS: dict[str, tuple[str, Callable]] = {
    "closed_loop": (
        "an ellipse (as in 0, 6, 8, 9)",
        lambda rng: (_arc(rng, 2 * math.pi, (3.5, 8)), _normal_width(rng)),
    ),
    "horizontal_bar": (
        "a horizontal segment, +-10 degrees (as in 7, 4, 2)",
        lambda rng: (
            _line(rng, math.radians(rng.uniform(-10, 10)), rng.uniform(8, 20)),
            _normal_width(rng),
        ),
    ),
    "vertical_stroke": (
        "a vertical segment, +-10 degrees (as in 1, 4)",
        lambda rng: (
            _line(rng, math.radians(90 + rng.uniform(-10, 10)), rng.uniform(10, 22)),
            _normal_width(rng),
        ),
    ),
    "diagonal_stroke": (
        "a segment at 45 or 135 degrees, +-12 (as in 7, a slanted 1)",
        lambda rng: (
            _line(
                rng, math.radians(rng.choice([45, 135]) + rng.uniform(-12, 12)), rng.uniform(10, 22)
            ),
            _normal_width(rng),
        ),
    ),
    "open_curve": (
        "an arc of 90 to 220 degrees (as in 2, 3, 5)",
        lambda rng: (_arc(rng, math.radians(rng.uniform(90, 220)), (4, 9)), _normal_width(rng)),
    ),
    "thick_stroke": (
        "a segment or arc 4 to 6 pixels wide",
        lambda rng: (_stroke(rng), rng.uniform(4.0, 6.0)),
    ),
    "thin_stroke": (
        "a segment or arc about 1 pixel wide",
        lambda rng: (_stroke(rng), rng.uniform(0.8, 1.3)),
    ),
}


def list_concepts() -> list[str]:
    """The built-in concepts' names, in a fixed order."""
    return list(_CONCEPTS)


def describe(name: str) -> str:
    """One line saying what the built-in concept `name` draws."""
    return _CONCEPTS[check_concept(name)][0]


def check_concept(name: str) -> str:
    """`name` if it is a built-in concept, else a MnistlensError listing them."""
    if name not in _CONCEPTS:
        raise MnistlensError(
            f"unknown concept {name!r}; built-in concepts: {', '.join(_CONCEPTS)} "
            "(or give a folder of pictures)"
        )
    return name


def _draw(shapes: Callable, n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = np.empty((n, 1, SIZE, SIZE), np.float32)
    for i in range(n):
        parts = shapes(rng)
        images[i, 0] = np.max([render(p, w) for p, w in parts], axis=0)
    return torch.from_numpy(images)


def concept_set(name: str, n: int = 100, seed: int = 0) -> torch.Tensor:
    """`n` images of the built-in concept `name`, seeded: -> (n, 1, 28, 28) in [0, 1]."""
    draw = _CONCEPTS[check_concept(name)][1]
    return _draw(lambda rng: [draw(rng)], n, seed)


def random_set(n: int = 100, seed: int = 0, kind: str = "strokes") -> torch.Tensor:
    """`n` random counterexamples, seeded: -> (n, 1, 28, 28) in [0, 1].

    kind="strokes" (the default, see the module docstring): one or two random segments
    or arcs of ordinary width; kind="digits": random MNIST training digits.
    """
    if kind == "strokes":

        def shapes(rng):
            return [(_stroke(rng), _normal_width(rng)) for _ in range(rng.integers(1, 3))]

        return _draw(shapes, n, seed + 1_000_003)  # never the same draws as a concept's
    if kind == "digits":
        from mnistlens.data import load_mnist

        images, _ = load_mnist("train")
        picked = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        return images[picked]
    raise MnistlensError(f"unknown random set kind {kind!r}; choose strokes or digits")


def picture_set(
    pictures: list[tuple[str, bytes]], drawn: torch.Tensor | None = None, limit: int = 500
) -> torch.Tensor:
    """Your concept from pictures in memory (e.g. uploaded in the explorer): (name,
    bytes) pairs, each read like a digit you upload (`pictures.load_digit_image`), then
    `drawn`, images prepared already ((K, 1, 28, 28), e.g. drawn on the explorer's
    canvas): -> (N, 1, 28, 28). At least MIN_PICTURES in all; at most `limit` pictures
    are read."""
    import io

    from mnistlens.data import check_images
    from mnistlens.pictures import load_digit_image

    given = len(pictures) + (0 if drawn is None else len(drawn))
    if given < MIN_PICTURES:
        raise MnistlensError(
            f"{given} pictures given; a concept needs at least {MIN_PICTURES}, better 30 or more"
        )
    images = []
    for name, data in pictures[:limit]:
        try:
            images.append(load_digit_image(io.BytesIO(data)))
        except MnistlensError:  # its own message names a BytesIO, not the file
            raise MnistlensError(f"cannot read {name} as a picture; use a PNG or JPEG") from None
    if drawn is not None:
        images.extend(check_images(drawn))
    return torch.stack(images)


def folder_set(folder: str | os.PathLike, limit: int = 500) -> torch.Tensor:
    """Your concept: every picture in `folder` (PNG, JPEG, ...), each read like a digit
    you upload (`pictures.load_digit_image`: grayscale, MNIST-style centring and size):
    -> (N, 1, 28, 28). At least 5 pictures, at most `limit` (sorted by name) are read."""
    from mnistlens.pictures import load_digit_image

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise MnistlensError(f"concept folder not found: {path}; give a folder of pictures")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
    if len(files) < MIN_PICTURES:
        raise MnistlensError(
            f"{path} holds {len(files)} pictures; a concept needs at least {MIN_PICTURES} "
            f"({', '.join(PICTURE_SUFFIXES)}), better 30 or more"
        )
    return torch.stack([load_digit_image(p) for p in files[:limit]])
