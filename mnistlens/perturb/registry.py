"""Every change a stress test can make, by name: what it does and at which severities.

Two kinds, as MNIST-C and the sweeps of a robustness study use them:

- **sweeps** (`transforms.py`): one factor turned up step by step, to draw a curve of
  accuracy against severity (translation 0-4 px, rotation 0-45 degrees, ...). Where the
  factor has a sign or a direction, each image draws its own from the seed (the same for
  every severity, so one digit moves further the same way as the severity grows), as
  MNIST-C does for its shear and rotation.
- **corruptions** (`corruptions.py`): MNIST-C's 15, each at MNIST-C's own setting
  (severity 1); severity 0 is the clean digit.

    >>> from mnistlens.perturb import get_transform
    >>> t = get_transform("rotate")
    >>> t.severities, t.apply(images, 30.0, seed=0).shape
    ((0.0, 15.0, 30.0, 45.0), torch.Size([N, 1, 28, 28]))
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mnistlens.errors import MnistlensError
from mnistlens.perturb import transforms as T

# (images (N, 1, 28, 28), severity, seed) -> images (N, 1, 28, 28)
Apply = Callable[[torch.Tensor, float, int], torch.Tensor]


@dataclass(frozen=True)
class Transform:
    """One named change and the severities a stress test sweeps it through."""

    name: str
    kind: str  # "sweep" or "corruption"
    severities: tuple[float, ...]  # in order, the unchanged one (`identity`) included
    unit: str  # what a severity counts, for axes and tables ("px", "degrees", ...)
    what: str  # one line for help texts
    apply: Apply
    identity: float = 0.0  # the severity that leaves the digit as it is

    def __call__(self, images: torch.Tensor, severity: float, seed: int = 0) -> torch.Tensor:
        """(N, 1, 28, 28) -> (N, 1, 28, 28); the identity severity returns `images`."""
        if severity == self.identity:
            return images
        return self.apply(images, severity, seed)

    @property
    def hardest(self) -> float:
        """The severity farthest from the identity (the last one of the sweep)."""
        return max(self.severities, key=lambda s: abs(s - self.identity))


def _choices(n: int, k: int, seed: int) -> torch.Tensor:
    """(n,) integers in 0..k-1, one per image, from the seed alone (not the global RNG)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(k, (n,), generator=generator)


def _per_group(images: torch.Tensor, groups: torch.Tensor, change: Callable) -> torch.Tensor:
    """Apply change(sub_batch, group) to the images of each group: (N, 1, 28, 28) -> same."""
    out = torch.empty_like(images)
    for group in groups.unique().tolist():
        rows = (groups == group).nonzero().squeeze(1).to(images.device)
        out[rows] = change(images[rows], group)
    return out


def _translate(images: torch.Tensor, pixels: float, seed: int) -> torch.Tensor:
    directions = list(T.DIRECTIONS)
    which = _choices(len(images), len(directions), seed)
    return _per_group(images, which, lambda x, d: T.translate(x, pixels, directions[d]))


def _signed(change: Callable) -> Apply:
    """A change whose sign each image draws: half turn left, half right, and so on."""

    def apply(images: torch.Tensor, severity: float, seed: int) -> torch.Tensor:
        sign = _choices(len(images), 2, seed) * 2 - 1  # -1 or +1
        return _per_group(images, sign, lambda x, s: change(x, s * severity))

    return apply


def _occlude(images: torch.Tensor, width: float, seed: int) -> torch.Tensor:
    where = ("middle-row", "middle-column")
    which = _choices(len(images), 2, seed)
    return _per_group(images, which, lambda x, w: T.occlude_band(x, width, where[w]))


def _elastic(images: torch.Tensor, alpha: float, seed: int) -> torch.Tensor:
    return T.elastic(images, alpha, seed=seed)


SWEEPS = {
    t.name: t
    for t in (
        Transform(
            "translate",
            "sweep",
            (0, 1, 2, 3, 4),
            "px",
            "shift by whole pixels, each digit in one of 8 directions",
            _translate,
        ),
        Transform(
            "rotate",
            "sweep",
            (0, 15, 30, 45),
            "degrees",
            "turn about the centre, each digit left or right",
            _signed(T.rotate),
        ),
        Transform(
            "scale",
            "sweep",
            (0.6, 0.8, 1.0, 1.2, 1.4),
            "factor",
            "shrink or grow about the centre",
            lambda x, f, seed: T.scale(x, f),
            identity=1.0,
        ),
        Transform(
            "shear",
            "sweep",
            (0, 0.2, 0.4, 0.6),
            "slant",
            "slant sideways, each digit left or right",
            _signed(T.shear),
        ),
        Transform(
            "thickness",
            "sweep",
            (-1, 0, 1, 2),  # two erosions leave most digits in pieces: not a digit any more
            "steps",
            "thinner (erosion) or thicker (dilation) strokes, 2x2 steps",
            lambda x, s, seed: T.thickness(x, s),
        ),
        Transform(
            "elastic",
            "sweep",
            (0, 1, 2, 3),
            "px",
            "elastic deformation (Simard 2003)",
            _elastic,
        ),
        Transform(
            "occlude",
            "sweep",
            (0, 3, 6, 9),  # a 12 px band hides most of a 20 px tall digit
            "px",
            "black band through the middle, a row or a column",
            _occlude,
        ),
    )
}


@functools.cache
def _corruptions() -> dict[str, Transform]:
    """MNIST-C's corruptions by name; four share their name with a sweep (MNIST-C's
    shear, scale, rotate, translate: one setting each), and are called mnistc_shear, ..."""
    from mnistlens.perturb.corruptions import CORRUPTIONS

    found = {}
    for name, fn in CORRUPTIONS.items():
        key = f"mnistc_{name}" if name in SWEEPS else name
        found[key] = Transform(
            key,
            "corruption",
            (0.0, 1.0),
            "MNIST-C",
            (fn.__doc__ or name).strip().splitlines()[0],
            lambda x, s, seed, fn=fn: fn(x, s, seed=seed),
        )
    return found


def list_transforms(kind: str | None = None) -> list[str]:
    """Names in order: the sweeps, then MNIST-C's corruptions; `kind` keeps one kind."""
    names = list(SWEEPS) + list(_corruptions())
    return [n for n in names if kind is None or get_transform(n).kind == kind]


def get_transform(name: str) -> Transform:
    """The Transform called `name`; an unknown name raises and lists the known ones."""
    found = SWEEPS.get(name) or _corruptions().get(name)
    if found is None:
        raise MnistlensError(
            f"unknown transform {name!r}; choose from {', '.join(list_transforms())} "
            "(or the groups sweeps, corruptions, all)"
        )
    return found


GROUPS = {"sweeps": "sweep", "corruptions": "corruption", "all": None}


def resolve_transforms(names: Sequence[str | Transform] | None = None) -> list[Transform]:
    """Transforms for names, groups ("sweeps", "corruptions", "all") and Transforms, each
    once, in the order given; None means all."""
    found: dict[str, Transform] = {}
    for name in names or ["all"]:
        if isinstance(name, Transform):
            found.setdefault(name.name, name)
        elif name in GROUPS:
            for n in list_transforms(GROUPS[name]):
                found.setdefault(n, get_transform(n))
        else:
            found.setdefault(name, get_transform(name))
    return list(found.values())


def with_severities(transform: Transform, severities: Sequence[float]) -> Transform:
    """The transform swept through other severities (sorted, the identity added); each is
    tried at once on one blank image, so a bad one fails now, with the transform's own
    one-line message, not minutes into a stress test."""
    values = sorted({float(s) for s in severities} | {transform.identity})
    probe = torch.zeros(1, 1, 28, 28)
    for severity in values:
        try:
            transform(probe, severity)
        except MnistlensError as err:
            raise MnistlensError(f"{transform.name} at severity {severity:g}: {err}") from None
    return dataclasses.replace(transform, severities=tuple(values))


def parse_severities(text: str) -> dict[str, list[float]]:
    """'rotate=0,10,20 scale=0.8,1.2' -> {'rotate': [0, 10, 20], 'scale': [0.8, 1.2]}:
    pairs separated by spaces or ';', numbers by commas. Raises MnistlensError naming
    the bad pair."""
    found: dict[str, list[float]] = {}
    for item in re.split(r"[;\s]+", text.strip()):
        if not item:
            continue
        name, equals, values = item.partition("=")
        try:
            numbers = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            numbers = []
        if not equals or not numbers or not all(math.isfinite(n) for n in numbers):
            raise MnistlensError(
                f"bad severities {item!r}: expected NAME=NUMBER,NUMBER,... like rotate=0,10,20"
            )
        if name in found:
            raise MnistlensError(f"severities for {name} given twice")
        get_transform(name)  # an unknown name fails here
        found[name] = numbers
    return found
