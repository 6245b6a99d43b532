"""Does a map explain the model? Measures of an explanation, not of the classifier.

A heatmap can look convincing and still say nothing about the model. These tests
ask the model itself:

- completeness: do the attributions add up to the score change they claim to explain?
- deletion / insertion (Petsiuk et al. 2018, RISE, arXiv:1806.07421): remove the pixels
  a map ranks highest first and watch the class probability fall (fast fall = low area
  under the curve = faithful map); or insert them into a blank image and watch it rise
  (high area = faithful). A random ranking is the reference to beat.
- model-randomization sanity check (Adebayo et al. 2018, arXiv:1810.03292): re-initialize
  the layers from the top down; a map that barely changes while the model is destroyed
  is not explaining the model (guided backprop is the known offender).

All functions take tensors and return tensors; `plots.py` draws them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from . import attribution as A
from .attribution.common import image_seed
from .errors import MnistlensError
from .metrics import predict_logits
from .prepare import analyze

MODES = ("deletion", "insertion")


def _target_scores(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return predict_logits(model, images).gather(1, target[:, None])[:, 0]  # (N,)


def completeness_error(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | None = None,
    reference_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """|sum(map) - (f(x) - f(baseline))| / |f(x) - f(baseline)| per image: -> (N,).

    Meaningful for methods that claim completeness (integrated gradients, DeepLIFT,
    GradientSHAP in expectation). The reference is `reference_scores` (N,) if given,
    else f(baseline) with baseline default black.
    """
    if reference_scores is None:
        baseline = torch.zeros_like(images) if baseline is None else baseline.expand_as(images)
        reference_scores = _target_scores(model, baseline, target)
    gap = _target_scores(model, images, target) - reference_scores
    return (maps.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs().clamp(min=1e-8)


def method_completeness_error(
    method: str,
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    **options,
) -> torch.Tensor | None:
    """completeness_error against the reference `method` used with these `options`
    (its baseline, or GradientSHAP's expected baseline); None if the method does not
    claim completeness: -> (N,) or None."""
    spec = A.get_spec(method)
    if not spec.claims_completeness:
        return None
    reference = spec.reference(model, images, target, **options)
    return completeness_error(model, images, maps, target, reference_scores=reference)


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
) -> torch.Tensor:
    """Target-class probability as the top-ranked pixels are deleted or inserted.

    deletion: start from the image, set the top k pixels to `baseline`.
    insertion: start from a `baseline` image, copy in the top k pixels.
    k goes from 0 to 784 in `steps` equal strides.

    images, maps (N, 1, 28, 28); target (N,) -> probabilities (N, steps + 1).
    """
    if mode not in MODES:
        raise MnistlensError(f"mode must be deletion or insertion, got {mode!r}")
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
        probs = predict_logits(model, x[run].view(-1, 1, 28, 28)).softmax(dim=1)
        picked[run] = probs.gather(1, target.expand(steps + 1, n)[run][:, None])[:, 0]
    # A repeat takes the probability of the last new image at or before its step.
    steps_ = torch.arange(steps + 1).view(-1, 1).expand(steps + 1, n)
    last_new = torch.where(new, steps_, 0).cummax(dim=0).values  # (S + 1, N)
    picked = picked.gather(0, last_new)
    if blank.any():
        empty = torch.full((1, 1, 28, 28), baseline)
        blank_probs = predict_logits(model, empty).softmax(dim=1)[0]  # (C,)
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
) -> dict[str, torch.Tensor]:
    """Deletion and insertion areas (and curves if kept) of one ranking per image, in
    chunks of `batch_size` (bounded memory), named `{prefix}{mode}_auc` /
    `{prefix}{mode}_curve`: -> {name: (N,) or (N, S + 1)}."""
    columns: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        for mode in MODES:
            curve = perturbation_curve(
                model, images[chunk], maps[chunk], target[chunk], mode, steps
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
) -> dict[str, torch.Tensor]:
    """The areas of a seeded random ranking of each image's pixels, the reference every
    map is scored against: -> {"random_deletion_auc": (N,), "random_insertion_auc": (N,)}
    (plus the `random_*_curve`s with keep_curves).

    It is the same for every method of the same images, so compute it once and pass it
    to `score_maps(..., reference=...)` for each method (a third of the scoring time).
    """
    images = A.check_images(images)
    rankings = random_maps(images, seed)  # seeded per image: the same in any chunk
    return _areas(model, images, rankings, target, "random_", steps, batch_size, keep_curves)


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
    **options,
) -> Scores:
    """Deletion/insertion areas of `maps` and of a random ranking, per image, in chunks
    of `batch_size` (memory stays bounded); with `method` (and the `options` it ran
    with), also its completeness error where it claims completeness. keep_curves
    keeps the maps' deletion and insertion curves (N x (steps + 1) each).
    reference: `random_reference(...)` of the same images, target, steps and seed,
    computed once for several methods (else computed here).

    images, maps (N, 1, 28, 28); target (N,) -> Scores of N images.
    """
    images = A.check_images(images)
    if len(images) == 0:
        empty = torch.empty(0)
        return Scores(empty, empty, empty, empty)
    if reference is None:
        reference = random_reference(
            model,
            images,
            target,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            keep_curves=keep_curves,
        )
    elif len(reference["random_deletion_auc"]) != len(images):
        raise MnistlensError(
            f"the random reference covers {len(reference['random_deletion_auc'])} images, "
            f"not these {len(images)}: compute it with random_reference on the same images"
        )
    if keep_curves and "random_deletion_curve" not in reference:
        raise MnistlensError("keep_curves needs a reference computed with keep_curves=True")
    values = _areas(model, images, maps, target, "", steps, batch_size, keep_curves)
    values.update({k: v for k, v in reference.items() if keep_curves or k.endswith("_auc")})
    if method is not None:
        errors = [
            method_completeness_error(
                method,
                model,
                images[start : start + batch_size],
                maps[start : start + batch_size],
                target[start : start + batch_size],
                **options,
            )
            for start in range(0, len(images), batch_size)
        ]
        if errors[0] is not None:
            values["completeness_error"] = torch.cat(errors)
    curves = {key: values.pop(key) for key in list(values) if key.endswith("_curve")}
    return Scores(**values, curves={k.removesuffix("_curve"): v for k, v in curves.items()} or None)


def _ranks(row: torch.Tensor) -> torch.Tensor:
    """Ranks of a 1-D tensor, ties sharing their average rank (as Spearman needs:
    the many exact zeros of a map's background must not be ordered by position)."""
    values, order = row.sort()
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = (ends - counts + ends - 1) / 2  # mean 0-based rank of each tie group
    ranks = torch.empty_like(row, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def _spearman(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation per row, ties averaged, over the entries where `mask`
    is True (all by default): (N, D), (N, D), (N, D) bool -> (N,)."""
    out = torch.empty(len(a))
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if mask is not None:
            x, y = x[mask[i]], y[mask[i]]
        rx, ry = _ranks(x), _ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        out[i] = float((rx * ry).sum() / (rx.norm() * ry.norm()).clamp(min=1e-12))
    return out


INK = 0.1  # a pixel brighter than this is part of the digit
SANITY_THRESHOLD = 0.7
SANITY_RULE = (
    f"pass if the mean Spearman rank correlation of |map| over the digit's pixels "
    f"(input > {INK}) stays below {SANITY_THRESHOLD} once the top layer is re-initialized"
)


def randomization_check(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor | None = None,
    seed: int = 0,
    region: str = "ink",
    layers: int | None = None,
    **options,
) -> dict[str, float]:
    """Cascading model randomization: re-initialize layers from the output down and
    compare each map with the trained model's (Adebayo et al. 2018).

    Returns {layer: mean Spearman rank correlation of |map| with the original}, in
    the order layers were randomized (top first: the reverse of execution order, from
    `prepare.analyze`). Near 1 all the way down = the map does not depend on what the
    model learned. The model is not modified (a copy is randomized).

    region: "ink" correlates over the digit's pixels only (input > 0.1), "all" over
    all 784. Methods that multiply by the input (input x gradient, IG, DeepLIFT) are
    zero on the background of both maps, and that shared background alone keeps an
    all-pixel correlation near 1 (0.99 on the shipped CNN after randomizing the head,
    against 0.38 over the ink), so "ink" is what tells the methods apart.

    layers: stop after re-initializing this many layers from the top (None: all).
    `sanity_verdict` reads only the first, so `layers=1` gives the verdict for two
    attribution passes instead of one per layer plus one (~5x less on the CNN).
    """
    if region not in ("ink", "all"):
        raise MnistlensError(f"region must be ink or all, got {region!r}")
    if layers is not None and (
        isinstance(layers, bool) or not isinstance(layers, int) or layers < 1
    ):
        raise MnistlensError(
            f"layers must be a whole number >= 1 (or None for all), got {layers!r}"
        )
    images = A.check_images(images)
    if target is None:
        target = predict_logits(model, images).argmax(dim=1)
    mask = (images > INK).flatten(1) if region == "ink" else None
    original = A.attribute(method, model, images, target, **options).abs().flatten(1)
    randomized = copy.deepcopy(model)
    names = analyze(randomized).parameter_layers
    if not names:
        raise MnistlensError(
            "model randomization re-initializes conv and linear modules, and this model has "
            "none (a torch.export program keeps its weights as plain tensors)"
        )
    result = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in list(reversed(names))[:layers]:
            randomized.get_submodule(name).reset_parameters()
            maps = A.attribute(method, randomized, images, target, **options).abs().flatten(1)
            result[name] = float(_spearman(original, maps, mask).mean())
    return result


def sanity_verdict(randomization: dict[str, float]) -> str:
    """ "pass" or "fail" from `randomization_check(..., region="ink")`, by SANITY_RULE.

    The threshold separates the known cases on the shipped CNN (20 test images):
    guided backprop keeps 0.96 after the head is re-initialized (Adebayo et al.'s
    finding), while saliency (0.21), IG (0.38), DeepLIFT (0.44), occlusion (0.42),
    Grad-CAM (0.07) all fall well below 0.7.
    """
    top = next(iter(randomization.values()))
    return "pass" if top < SANITY_THRESHOLD else "fail"


def data_randomization_check(
    model: nn.Module,
    shuffled: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """Adebayo et al.'s second sanity check: the same method on a model trained on the
    true labels and on the same architecture trained on permuted labels.

    -> (N,) Spearman rank correlation of |map| over the digit's pixels (input > INK),
    both maps explaining `target` (default: `model`'s prediction). A method that explains
    what the model learned gives maps far apart (low correlation); one that mostly
    redraws the input (guided backprop) keeps them close.
    """
    images = A.check_images(images)
    if target is None:
        target = predict_logits(model, images).argmax(dim=1)
    mask = (images > INK).flatten(1)
    real = A.attribute(method, model, images, target, **options).abs().flatten(1)
    fake = A.attribute(method, shuffled, images, target, **options).abs().flatten(1)
    return _spearman(real, fake, mask)


def infidelity(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    noise: float = 0.03,
    n_samples: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019, arXiv:1901.09392) by `captum.metrics.infidelity`:
    how badly map . I predicts the score drop f(x) - f(x - I) for Gaussian noise I
    (std `noise` per pixel), with each map optimally rescaled (normalize=True) so that
    methods in different units compare. Lower = more faithful. -> (N,).

    Measured on the shipped CNN (20 test images, noise 0.03): saliency 0.36, IG 0.36,
    Grad-CAM 0.40 against 0.37 for a random ranking. Noise on every pixel at once asks
    whether the map predicts the score's response to all pixels moving together,
    which none of these maps is made for; `compare_methods` therefore reports the
    random ranking's infidelity too, and deletion/insertion remain the main measure.
    """
    from captum.metrics import infidelity as captum_infidelity

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise_sample = torch.randn_like(inputs) * noise
        return noise_sample, inputs - noise_sample

    with torch.random.fork_rng(devices=[]), A.explaining(model):
        torch.manual_seed(seed)
        return captum_infidelity(
            model, perturb, images, maps, target=target, n_perturb_samples=n_samples, normalize=True
        ).detach()


def sensitivity_max(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    **options,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019) by `captum.metrics.sensitivity_max`: the
    largest change of the map (Frobenius norm) when the image moves by at most `radius`
    per pixel. Lower = more stable; it says nothing about faithfulness alone. -> (N,)."""
    from captum.metrics import sensitivity_max as captum_sensitivity_max

    def explanation(inputs, target: torch.Tensor):
        if isinstance(inputs, tuple):  # Captum passes perturbed inputs as a 1-tuple
            return (A.attribute(method, model, inputs[0], target, **options),)
        return A.attribute(method, model, inputs, target, **options)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return captum_sensitivity_max(
            explanation, images, perturb_radius=radius, n_perturb_samples=n_samples, target=target
        ).detach()


def score_methods(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str],
    target: torch.Tensor | None = None,
    reference: dict[str, torch.Tensor] | None = None,
    **shared_options,
) -> dict[str, tuple[torch.Tensor, Scores]]:
    """Maps and per-image Scores (curves kept) for several methods on the same images.

    shared_options (baseline=, n_steps=, tol=, data_dir=) go to the methods that
    take them (`attribution.method_options`); reference: `random_reference(...,
    keep_curves=True)` of these images if already computed. -> {method: (maps, scores)}.
    """
    images = A.check_images(images)
    if target is None:
        target = predict_logits(model, images).argmax(dim=1)
    if reference is None:  # computed once for all the methods
        reference = random_reference(model, images, target, keep_curves=True)
    result = {}
    for name in [A.resolve_method(m) for m in methods]:
        options = A.method_options(name, **shared_options)
        maps = A.attribute(name, model, images, target, **options)
        scores = score_maps(
            model, images, maps, target, name, keep_curves=True, reference=reference, **options
        )
        result[name] = (maps, scores)
    return result


def compare_methods(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str],
    randomization: bool = False,
    randomization_images: int = 20,
    captum_metrics: bool = False,
    reference: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, dict], dict[str, dict[str, torch.Tensor]]]:
    """Every measure for several methods on the same images, explaining the prediction.

    Returns (report, curves): report[method] is `Scores.summary()` (mean areas,
    `completeness_error_median` where it applies) and, with randomization=True,
    `randomization` (see `randomization_check`, on the first images only: it re-runs
    the method once per layer) with its `sanity` verdict ("pass"/"fail", by
    `SANITY_RULE`); with captum_metrics=True, the mean `infidelity` and
    `sensitivity_max` on the same first images. curves[method][mode] is (N, S + 1). A
    "random" ranking comes first as the reference.

    reference: `random_reference(model, images, predicted, keep_curves=True)` if
    already computed, e.g. when methods are measured one call at a time (the explorer
    adds them as a user picks them); else computed here.
    """
    images = A.check_images(images)
    target = predict_logits(model, images).argmax(dim=1)
    # The random ranking is the same for every method (seeded per image): scored once.
    if reference is None:
        reference = random_reference(model, images, target, keep_curves=True)
    elif "random_deletion_curve" not in reference:
        raise MnistlensError("compare_methods needs a reference computed with keep_curves=True")
    scored = score_methods(model, images, methods, target, reference=reference)
    curves = {"random": {mode: reference[f"random_{mode}_curve"] for mode in MODES}}
    report: dict[str, dict] = {
        "random": {f"{mode}_auc": float(reference[f"random_{mode}_auc"].mean()) for mode in MODES}
    }
    for name, (maps, scores) in scored.items():
        curves[name] = {mode: scores.curves[mode] for mode in MODES}
        report[name] = scores.summary()
        if randomization:
            k = randomization_images
            cascade = randomization_check(model, images[:k], name, target[:k])
            report[name]["randomization"] = cascade
            report[name]["sanity"] = sanity_verdict(cascade)
            report[name]["sanity_rule"] = SANITY_RULE
        if captum_metrics:
            k = randomization_images
            if "infidelity" not in report["random"]:
                report["random"]["infidelity"] = float(
                    infidelity(model, images[:k], random_maps(images[:k]), target[:k]).mean()
                )
            x, t = images[:k], target[:k]
            report[name]["infidelity"] = float(infidelity(model, x, maps[:k], t).mean())
            report[name]["sensitivity_max"] = float(sensitivity_max(model, x, name, t).mean())
    return report, curves
