"""Is it a digit at all? A calibrated verdict from a detector fitted once per set of weights.

A classifier answers "4 at 99.9%" for a letter A as readily as for a 4. The verdict asks
another question first: how typical are the model's own features of this image, compared
with MNIST digits? The detector (`detectors.py`) is fitted on the first `FIT_IMAGES`
training images; its threshold is calibrated on the next `CALIBRATION_IMAGES`, which the
fit never saw, so that a share `rate` (default 5%) of real digits is flagged at most. The
fit is kept in memory and on disk, keyed by the SHA-256 of the weights (`model_key`), as
the training index is (`mnistlens.influence.cache`): a retrained model gets a new fit.

    >>> result = digit_like(model, images)      # (N, 1, 28, 28)
    >>> result.verdict                          # (N,) bool: True = digit-like
    >>> result.to_json(0)
    {'verdict': False, 'score': 0.54041, 'threshold': 0.35875, 'percentile': 99.6,
     'detector': 'mahalanobis@relu3'}
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace

import torch
from torch import nn

from mnistlens.attribution.common import check_images
from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.influence import cache
from mnistlens.typicality import detectors
from mnistlens.typicality.detectors import Spec

FORMAT = "mnistlens-typicality-fit"
# Small enough that a model's first verdict stays within a couple of seconds, large
# enough for a stable covariance and a 5% quantile (benchmarks/README.md).
FIT_IMAGES = 2000
CALIBRATION_IMAGES = 2000  # the 95th percentile of 2,000 scores: about +-0.5% flagged
DEFAULT_RATE = 0.05
# Part of every cache key: a fit made by another recipe is never read back as this one.
RECIPE = f"fit{FIT_IMAGES}-calibrate{CALIBRATION_IMAGES}-maps{detectors.MAX_FEATURES}grid2x2"
_BUILD_LOCK = threading.Lock()  # one fit at a time: a second thread then finds it cached


@dataclass(frozen=True)
class DigitLike:
    """The verdict on N images.

    verdict: (N,) bool, True when the image is digit-like (score <= threshold).
    score: (N,) float32, the detector's score (higher: less digit-like).
    percentile: (N,) float32, the share (in %) of held-apart MNIST digits that score
        lower: 99.9 = less typical than 99.9% of real digits.
    threshold: the score above which an image is flagged. detector: its name.
    """

    verdict: torch.Tensor
    score: torch.Tensor
    percentile: torch.Tensor
    threshold: float
    detector: str

    def __len__(self) -> int:
        return len(self.verdict)

    def to_json(self, i: int = 0) -> dict:
        """Image i's verdict as the JSON of `predict`/`explain` carries it."""
        return {
            "verdict": bool(self.verdict[i]),
            "score": _significant(float(self.score[i])),
            "threshold": _significant(self.threshold),
            "percentile": round(float(self.percentile[i]), 2),
            "detector": self.detector,
        }

    def warning(self, i: int = 0) -> str | None:
        """Image i's warning for a figure or a page, or None when it is digit-like."""
        return warning_text(self.to_json(i))


@dataclass(frozen=True)
class Unjudged:
    """No verdict, and why: the detector could not be fitted here (no MNIST training
    images to fit it on). Answers like `DigitLike` does, with None for every number."""

    why: str

    def to_json(self, i: int = 0) -> dict:
        return {
            "verdict": None,
            "score": None,
            "threshold": None,
            "percentile": None,
            "detector": None,
            "why": self.why,
        }

    def warning(self, i: int = 0) -> None:
        return None


def digit_like_or_why(model: nn.Module, images: torch.Tensor, **options) -> DigitLike | Unjudged:
    """`digit_like`, or `Unjudged` when the MNIST files its first fit reads are not
    there (offline, no data): a picture's answer is then still given, with no verdict
    and the reason beside it, as the command line does. Other errors are raised."""
    try:
        return digit_like(model, images, **options)
    except MnistlensError as err:
        if not str(err).startswith("MNIST "):  # data.py's messages about its files
            raise
        return Unjudged(f"no verdict: {str(err).splitlines()[0]}")


def _significant(value: float) -> float:
    """Five significant digits: the scores' scale differs by detector (0.03 to 300)."""
    return float(f"{value:.5g}")


def warning_text(verdict: dict) -> str | None:
    """The warning for one image's `DigitLike.to_json`, or None when it is digit-like
    (or was not judged)."""
    if verdict["verdict"] is not False:
        return None
    return (
        f"Not digit-like: less typical than {verdict['percentile']:.1f}% of MNIST digits "
        f"({verdict['detector']}); the model answers anyway, but this input is outside "
        "what it was trained on"
    )


def verdict_line(verdict: dict) -> str:
    """One line of text for one image's `DigitLike.to_json`: 'digit-like: yes, ...' or
    'WARNING: Not digit-like: ...'."""
    if verdict["verdict"] is None:
        return f"digit-like: unknown ({verdict['why']})"
    warning = warning_text(verdict)
    if warning is not None:
        return f"WARNING: {warning}"
    return (
        f"digit-like: yes, less typical than {verdict['percentile']:.1f}% of MNIST digits "
        f"({verdict['detector']})"
    )


@dataclass(frozen=True)
class Fit:
    """A fitted detector and its calibration scores (sorted, (CALIBRATION_IMAGES,))."""

    spec: Spec
    state: dict[str, torch.Tensor]
    calibration: torch.Tensor
    weights: str  # model_key of the weights it was fitted on
    source: str  # "built", "memory" or "disk"

    def threshold(self, rate: float = DEFAULT_RATE) -> float:
        """The score that a share `rate` of held-apart digits exceeds at most."""
        return float(torch.quantile(self.calibration.double(), 1.0 - rate, interpolation="higher"))

    def judge(
        self, model: nn.Module, images: torch.Tensor, rate: float = DEFAULT_RATE, *, device="cpu"
    ) -> DigitLike:
        """images (N, 1, 28, 28) -> the verdict on each."""
        layers = [self.spec.layer] if self.spec.layer else []
        feats, logits = detectors.features(model, images, layers, device=device)
        scores = detectors.score(self.spec, self.state, feats, logits)  # (N,)
        threshold = self.threshold(rate)
        below = torch.searchsorted(self.calibration, scores, side="left")  # (N,)
        return DigitLike(
            verdict=scores <= threshold,
            score=scores,
            percentile=100.0 * below.float() / len(self.calibration),
            threshold=threshold,
            detector=self.spec.name,
        )


def digit_like(
    model: nn.Module,
    images: torch.Tensor,
    *,
    detector: str | None = None,
    rate: float = DEFAULT_RATE,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: Device = "auto",
) -> DigitLike:
    """Is each image a digit, as far as the model's own features can tell?

    Args:
        model: any classifier mnistlens loads (checkpoint, .pt2, state_dict + class).
        images: (N, 1, 28, 28) or one (1, 28, 28) image, floats in [0, 1].
        detector: a `detectors.Spec` name ("mahalanobis@relu3", "knn@pixels", "energy");
            default `detectors.default_spec(model)`: Mahalanobis at the last conv block,
            else KNN at the last hidden layer, else KNN on the pixels.
        rate: the share of real MNIST digits flagged at most (0.05).
        data_dir: MNIST root; cache_dir: where fits go (default: the index cache).
        device: where the fit's training-set pass runs ("auto").

    Returns a DigitLike with one verdict per image.

        >>> digit_like(model, image).to_json(0)["verdict"]
        True
    """
    if not 0 < rate < 1:
        raise MnistlensError(f"rate must be between 0 and 1 (e.g. 0.05), got {rate}")
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images.unsqueeze(0)  # one image (1, 28, 28) -> (1, 1, 28, 28)
    images = check_images(images)
    fitted = fit_detector(model, detector, data_dir=data_dir, cache_dir=cache_dir, device=device)
    return fitted.judge(model, images, rate)


def fit_detector(
    model: nn.Module,
    detector: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: Device = "auto",
) -> Fit:
    """The detector fitted to `model`'s weights: from memory, disk, or one pass over
    FIT_IMAGES + CALIBRATION_IMAGES training images (then saved)."""
    spec = detectors.default_spec(model) if detector is None else Spec.parse(detector)
    place = cache.Place.of(data_dir, FIT_IMAGES + CALIBRATION_IMAGES, cache_dir)
    weights = cache.model_key(model)
    key = place.key(FORMAT, weights, f"{spec.name}/{RECIPE}")
    found = cache.memory_get(key)
    if found is not None:
        return replace(found, source="memory")
    with _BUILD_LOCK:
        found = cache.memory_get(key)  # another thread may have built it meanwhile
        if found is not None:
            return replace(found, source="memory")
        path = place.path("typicality", spec.name, key)
        payload = cache.read_cache(path, FORMAT, key)
        fitted = _from_payload(payload, spec, weights, path) if payload is not None else None
        if fitted is None:
            fitted = _build(model, spec, place, weights, device)
            cache.write_cache(path, _to_payload(fitted, key))
        cache.memory_put(key, fitted)
        return fitted


def fit_and_calibrate(
    spec: Spec,
    feats: dict[str, torch.Tensor],
    logits: torch.Tensor,
    labels: torch.Tensor,
    model: nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Fit `spec` on the first FIT_IMAGES rows of the training features and score the
    rest, held apart: features {layer: (FIT + CALIBRATION, D)}, logits and labels of the
    same rows -> (the detector's state, the held-apart scores (CALIBRATION,))."""
    fit_part = {k: v[:FIT_IMAGES] for k, v in feats.items()}
    held = {k: v[FIT_IMAGES:] for k, v in feats.items()}  # never seen by the fit
    state = detectors.fit(spec, fit_part, logits[:FIT_IMAGES], labels[:FIT_IMAGES], model)
    return state, detectors.score(spec, state, held, logits[FIT_IMAGES:])


def _build(model: nn.Module, spec: Spec, place: cache.Place, weights: str, device) -> Fit:
    images, labels = place.train()  # (FIT + CALIBRATION, 1, 28, 28)
    layers = [spec.layer] if spec.layer else []
    feats, logits = detectors.features(model, images, layers, device=device)
    state, held_scores = fit_and_calibrate(spec, feats, logits, labels, model)
    calibration = held_scores.sort().values
    if not calibration.isfinite().all():
        raise MnistlensError(
            f"the {spec.name} detector gives non-finite scores on MNIST digits for this "
            "model; choose another detector"
        )
    return Fit(spec, state, calibration.contiguous(), weights, "built")


def _to_payload(fitted: Fit, key: str) -> dict:
    return {
        "format": FORMAT,
        "key": key,
        "detector": fitted.spec.name,
        "state": fitted.state,
        "calibration": fitted.calibration,
    }


def _from_payload(payload: dict, spec: Spec, weights: str, path) -> Fit | None:
    """The Fit a cache file holds, or None (with a warning) if it is not sound."""
    calibration = payload.get("calibration")
    state = payload.get("state")
    if (
        payload.get("detector") != spec.name
        or not isinstance(calibration, torch.Tensor)
        or calibration.shape != (CALIBRATION_IMAGES,)
        or not calibration.isfinite().all()
        or not isinstance(state, dict)
        or not all(isinstance(v, torch.Tensor) and v.isfinite().all() for v in state.values())
    ):
        cache.distrust(path, "not a sound detector fit")
        return None
    return Fit(spec, state, calibration.float().sort().values, weights, "disk")
