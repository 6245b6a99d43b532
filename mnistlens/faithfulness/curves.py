"""Deletion and insertion curves (Petsiuk et al. 2018, RISE, arXiv:1806.07421).

Remove the pixels a map ranks highest first and watch the class probability fall (fast
fall = low area under the curve = faithful map); or insert them into a blank image and
watch it rise (high area = faithful). A random ranking is the reference to beat.
`Scores` holds one method's per-image numbers, completeness included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnistlens import attribution as A
from mnistlens.attribution.common import image_seed
from mnistlens.device import Device, model_on, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.faithfulness.completeness import method_completeness_error
from mnistlens.metrics import predict_logits

MODES = ("deletion", "insertion")


def _pixel_order(maps: torch.Tensor) -> torch.Tensor:
    """Pixels from most to least important: (N, 1, 28, 28) -> (N, 784) indices."""
    return maps.flatten(1).argsort(dim=1, descending=True, stable=True)


@torch.no_grad()
def perturbation_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    mode: str = "deletion",
    steps: int = 28,
    baseline: float = 0.0,
    *,
    device: Device = "auto",
) -> torch.Tensor:
    """Target-class probability as the top-ranked pixels are deleted or inserted.

    deletion: start from the image, set the top k pixels to `baseline`.
    insertion: start from a `baseline` image, copy in the top k pixels.
    k goes from 0 to 784 in `steps` equal strides. The perturbed images are made on
    the CPU and scored on `device` ("auto": CUDA if available, else the CPU).

    images, maps (N, 1, 28, 28); target (N,) -> probabilities (N, steps + 1), on the CPU.
    """
    if mode not in MODES:
        raise MnistlensError(f"mode must be deletion or insertion, got {mode!r}")
    device = resolve_device(device)
    model = model_on(model, device)  # once for both passes below
    images, maps, target = images.cpu(), maps.cpu(), target.cpu()
    n = images.shape[0]
    order = _pixel_order(maps)  # (N, 784)
    flat = images.flatten(1)  # (N, 784)
    counts = torch.linspace(0, 784, steps + 1).round().long()  # (S + 1,)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(784).expand(n, 784))  # rank of each pixel
    top = rank.unsqueeze(0) < counts.view(-1, 1, 1)  # (S + 1, N, 784)
    filler = torch.full_like(flat, baseline)
    if mode == "deletion":
        x = torch.where(top, filler, flat)
    else:
        x = torch.where(top, flat, filler)
    # Most MNIST pixels already hold the baseline (black), so a step that only reaches
    # such pixels leaves the image as it was, and once every other pixel is deleted (or
    # none is inserted yet) it is the blank image, the same for all. Only new images
    # go through the model: IG maps rank the ink first, and 80% of their steps are
    # repeats; random rankings, 4% (benchmarks/bench_faithfulness.py).
    alters = flat != baseline  # (N, 784) the pixels a step can change
    altered = (top & alters).sum(dim=2)  # (S + 1, N) changed so far
    blank = altered == (alters.sum(dim=1) if mode == "deletion" else 0)  # (S + 1, N)
    new = torch.ones_like(blank)
    new[1:] = altered[1:] != altered[:-1]
    run = new & ~blank  # (S + 1, N) the images to compute
    picked = torch.empty(steps + 1, n)
    if run.any():
        # Every image to compute in one batch, in predict_logits's cache-sized chunks:
        # far faster on CPU than one call per step.
        probs = predict_logits(model, x[run].view(-1, 1, 28, 28), device=device).softmax(dim=1)
        picked[run] = probs.gather(1, target.expand(steps + 1, n)[run][:, None])[:, 0]
    # A repeat takes the probability of the last new image at or before its step.
    steps_ = torch.arange(steps + 1).view(-1, 1).expand(steps + 1, n)
    last_new = torch.where(new, steps_, 0).cummax(dim=0).values  # (S + 1, N)
    picked = picked.gather(0, last_new)
    if blank.any():
        empty = torch.full((1, 1, 28, 28), baseline)
        blank_probs = predict_logits(model, empty, device=device).softmax(dim=1)[0]  # (C,)
        picked = torch.where(blank, blank_probs[target].expand(steps + 1, n), picked)
    return picked.T.contiguous()  # (N, S + 1)


def area_under_curve(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves sampled at equal strides on [0, 1]: (N, S + 1) -> (N,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def random_maps(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random pixel ranking per image, the reference any map must beat:
    (N, 1, 28, 28) -> (N, 1, 28, 28). Seeded from (seed, the image), so an image gets
    the same ranking alone or in any batch."""
    maps = torch.empty(images.shape)
    for i, image in enumerate(images):
        gen = torch.Generator().manual_seed(image_seed(image, seed))
        maps[i] = torch.rand(images.shape[1:], generator=gen)
    return maps


@dataclass
class Scores:
    """Per-image faithfulness of one set of maps; every field is (N,).

    deletion_auc (lower = more faithful) and insertion_auc (higher = more faithful),
    the same areas for a seeded random ranking of each image's pixels (the reference
    to beat), and the relative completeness error where the method claims it.
    """

    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor
    random_deletion_auc: torch.Tensor
    random_insertion_auc: torch.Tensor
    completeness_error: torch.Tensor | None = None
    curves: dict[str, torch.Tensor] | None = None  # mode -> (N, S + 1), if kept

    def __len__(self) -> int:
        return len(self.deletion_auc)

    def image(self, i: int) -> dict[str, float]:
        """Image i's numbers as a JSON-ready dict (completeness_error only where it applies)."""
        out = {
            key: float(getattr(self, key)[i])
            for key in (
                "deletion_auc",
                "insertion_auc",
                "random_deletion_auc",
                "random_insertion_auc",
            )
        }
        if self.completeness_error is not None:
            out["completeness_error"] = float(self.completeness_error[i])
        return out

    def summary(self) -> dict[str, float]:
        """Means of the areas, the share of images where the map beats random on
        deletion, and the median completeness error."""
        out = {
            "deletion_auc": float(self.deletion_auc.mean()),
            "insertion_auc": float(self.insertion_auc.mean()),
            "random_deletion_auc": float(self.random_deletion_auc.mean()),
            "random_insertion_auc": float(self.random_insertion_auc.mean()),
            "beats_random_deletion": float(
                (self.deletion_auc < self.random_deletion_auc).float().mean()
            ),
            "n_images": len(self),
        }
        if self.completeness_error is not None:
            out["completeness_error_median"] = float(self.completeness_error.median())
        return out


def _areas(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    prefix: str,
    steps: int,
    batch_size: int,
    keep_curves: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Deletion and insertion areas (and curves if kept) of one ranking per image, in
    chunks of `batch_size` (bounded memory), named `{prefix}{mode}_auc` /
    `{prefix}{mode}_curve`: -> {name: (N,) or (N, S + 1)}."""
    columns: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        for mode in MODES:
            curve = perturbation_curve(
                model, images[chunk], maps[chunk], target[chunk], mode, steps, device=device
            )
            columns.setdefault(f"{prefix}{mode}_auc", []).append(area_under_curve(curve))
            if keep_curves:
                columns.setdefault(f"{prefix}{mode}_curve", []).append(curve)
    return {key: torch.cat(parts) for key, parts in columns.items()}


def random_reference(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 28,
    seed: int = 0,
    batch_size: int = 250,
    keep_curves: bool = False,
    device: Device = "auto",
) -> dict[str, torch.Tensor]:
    """The areas of a seeded random ranking of each image's pixels, the reference every
    map is scored against: -> {"random_deletion_auc": (N,), "random_insertion_auc": (N,)}
    (plus the `random_*_curve`s with keep_curves), on the CPU; the rankings are drawn on
    the CPU, the model runs on `device` ("auto": CUDA if available, else the CPU).

    It is the same for every method of the same images, so compute it once and pass it
    to `score_maps(..., reference=...)` for each method (a third of the scoring time).
    """
    images = A.check_images(images).cpu()
    device = resolve_device(device)
    model = model_on(model, device)
    rankings = random_maps(images, seed)  # seeded per image: the same in any chunk
    return _areas(
        model, images, rankings, target, "random_", steps, batch_size, keep_curves, device
    )


def score_maps(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    method: str | None = None,
    *,
    steps: int = 28,
    seed: int = 0,
    batch_size: int = 250,
    keep_curves: bool = False,
    reference: dict[str, torch.Tensor] | None = None,
    device: Device = "auto",
    **options,
) -> Scores:
    """Deletion/insertion areas of `maps` and of a random ranking, per image, in chunks
    of `batch_size` (memory stays bounded); with `method` (and the `options` it ran
    with), also its completeness error where it claims completeness. keep_curves
    keeps the maps' deletion and insertion curves (N x (steps + 1) each).
    reference: `random_reference(...)` of the same images, target, steps and seed,
    computed once for several methods (else computed here).
    device: where the model runs, "auto" (CUDA if available, else the CPU), "cpu" or
    "cuda[:N]"; the scores come back on the CPU.

    images, maps (N, 1, 28, 28); target (N,) -> Scores of N images.
    """
    images = A.check_images(images).cpu()
    if len(images) == 0:
        empty = torch.empty(0)
        return Scores(empty, empty, empty, empty)
    device = resolve_device(device)
    model = model_on(model, device)  # once for every pass below
    if reference is None:
        reference = random_reference(
            model,
            images,
            target,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            keep_curves=keep_curves,
            device=device,
        )
    elif len(reference["random_deletion_auc"]) != len(images):
        raise MnistlensError(
            f"the random reference covers {len(reference['random_deletion_auc'])} images, "
            f"not these {len(images)}: compute it with random_reference on the same images"
        )
    if keep_curves and "random_deletion_curve" not in reference:
        raise MnistlensError("keep_curves needs a reference computed with keep_curves=True")
    values = _areas(model, images, maps, target, "", steps, batch_size, keep_curves, device)
    values.update({k: v for k, v in reference.items() if keep_curves or k.endswith("_auc")})
    if method is not None:
        errors = [
            method_completeness_error(
                method,
                model,
                images[start : start + batch_size],
                maps[start : start + batch_size],
                target[start : start + batch_size],
                device=device,
                **options,
            )
            for start in range(0, len(images), batch_size)
        ]
        if errors[0] is not None:
            values["completeness_error"] = torch.cat(errors)
    curves = {key: values.pop(key) for key in list(values) if key.endswith("_curve")}
    return Scores(**values, curves={k.removesuffix("_curve"): v for k, v in curves.items()} or None)
