"""Comparing classifiers on the same test images: accuracy with its uncertainty, size,
speed, calibration, per-digit accuracy, pairwise significance, and where they disagree.

Small pure functions on tensors, and one `compare_models` that runs them all and returns
a JSON-ready dict; pictures live in `figures.py`.

Why these measures:
- accuracy on 10k images is itself uncertain (about +-0.2 points near 99%), so each
  comes with a 95% Wilson score interval (Wilson 1927), which, unlike the normal
  approximation, stays inside [0, 1] and is right near 100%;
- two models tested on the *same* images are compared with McNemar's exact test
  (McNemar 1947; Dietterich 1998, https://doi.org/10.1162/089976698300017197): only the
  images exactly one of them gets right carry information, and under "equally good"
  each such image is a fair coin;
- the expected calibration error (Guo et al. 2017, https://arxiv.org/abs/1706.04599)
  says whether a model's confidence means what it says.

    >>> report = compare_models({"linear": load_model("linear.pt"), "cnn": load_model("cnn.pt")},
    ...                         *load_mnist("test"))
    >>> [m["accuracy"] for m in report["models"]]
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import torch
from torch import nn

from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.metrics import confusion_matrix, per_class_accuracy, predict_logits
from mnistlens.models import is_convolutional

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
ECE_BINS = 15  # as in Guo et al. 2017


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion `correct / total`: -> (low, high) in [0, 1].

    >>> wilson_interval(9, 10)  # (0.5958..., 0.9821...)
    """
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct}/{total}")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At p = 0 or 1 the bound is exactly p, but floats land a hair inside (300/300 gave
    # 0.9999999999999998): clamp so the interval always holds p.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (no scipy).

    Under "both models equally accurate", each of the n = a_only + b_only images that
    exactly one model gets right is won by A with probability 1/2, so the p-value is
    2 * P(Binomial(n, 1/2) <= min(a_only, b_only)), capped at 1. The tail sum is an
    exact integer (sum of `math.comb`) divided by 2**n, so it is exact for any n.

        >>> mcnemar_p(1, 9)  # n = 10, k = 1: 2 * (1 + 10) / 1024
        0.021484375
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only}, {b_only}")
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """Expected calibration error: (N, C) probabilities, (N,) labels -> float in [0, 1].

    The confidence of an answer is its top probability. Answers are put into `bins`
    equal-width confidence bins ((0, 1/15], (1/15, 2/15], ...), and the ECE is the mean,
    weighted by how many answers fall in each bin, of |accuracy - mean confidence| per
    bin: 0 when a model right 90% of the time says 0.9, large when it says 0.99.
    """
    if len(probs) == 0:
        raise ValueError("expected_calibration_error needs at least one image")
    confidence, predicted = probs.max(dim=1)  # (N,), (N,)
    correct = (predicted == labels).double()
    which = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1  # (N,) bin index
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence.double())
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    return float((conf_sum - correct_sum).abs().sum() / len(probs))


def timed_probabilities(
    model: nn.Module, images: torch.Tensor, *, device: Device = "auto"
) -> tuple[torch.Tensor, float]:
    """Softmax probabilities and the inference speed: (N, 1, 28, 28) -> ((N, 10), images/s).

    The speed is one timed pass (after a warm-up), on `device` and however many threads
    torch uses; on a shared machine it varies by tens of percent.
    """
    predict_logits(model, images[:100], device=device)  # warm-up: first-call allocations
    start = time.perf_counter()
    logits = predict_logits(model, images, device=device)  # (N, 10)
    seconds = time.perf_counter() - start
    return logits.softmax(dim=1), len(images) / max(seconds, 1e-9)


def model_summary(
    name: str,
    probs: torch.Tensor,
    labels: torch.Tensor,
    parameters: int,
    train_seconds: float | None = None,
    images_per_second: float | None = None,
    train_accuracy: float | None = None,
) -> dict:
    """One model's row: (N, 10) test probabilities and (N,) labels -> JSON-ready dict.

    `train_test_gap` is training accuracy minus test accuracy (None without the former):
    how much the model fits its training images better than new ones.
    """
    predicted = probs.argmax(dim=1)  # (N,)
    correct = int((predicted == labels).sum())
    accuracy = correct / len(labels)
    confusion = confusion_matrix(predicted, labels)
    return {
        "name": name,
        "accuracy": accuracy,
        "accuracy_ci95": list(wilson_interval(correct, len(labels))),
        "n_errors": len(labels) - correct,
        "parameters": int(parameters),
        "train_seconds": train_seconds,
        "images_per_second": images_per_second,
        "ece": expected_calibration_error(probs, labels),
        "per_digit": per_class_accuracy(confusion).tolist(),
        "train_accuracy": train_accuracy,
        "train_test_gap": None if train_accuracy is None else train_accuracy - accuracy,
    }


def pair_summary(
    a: str, b: str, pred_a: torch.Tensor, pred_b: torch.Tensor, labels: torch.Tensor
) -> dict:
    """Two models on the same images: (N,) predictions each, (N,) labels -> JSON-ready dict.

    `disagreements` counts images with different predicted labels (both may be wrong);
    `a_only_right` / `b_only_right` are McNemar's discordant counts (and
    `*_indices` the images themselves, for `only_right`), and `mcnemar_p` the exact
    two-sided p-value that the two are equally accurate.
    """
    right_a, right_b = pred_a == labels, pred_b == labels
    a_only = (right_a & ~right_b).nonzero()[:, 0].tolist()
    b_only = (right_b & ~right_a).nonzero()[:, 0].tolist()
    return {
        "a": a,
        "b": b,
        "disagreements": int((pred_a != pred_b).sum()),
        "a_only_right": len(a_only),
        "b_only_right": len(b_only),
        "mcnemar_p": mcnemar_p(len(a_only), len(b_only)),
        "a_only_right_indices": a_only,
        "b_only_right_indices": b_only,
    }


def only_right(report: dict, right: str, wrong: str) -> list[int]:
    """The images model `right` gets right and model `wrong` gets wrong, read from a
    `compare_models` report (whichever order the pair is in): -> sorted indices."""
    for pair in report["pairs"]:
        if (pair["a"], pair["b"]) == (right, wrong):
            return pair["a_only_right_indices"]
        if (pair["a"], pair["b"]) == (wrong, right):
            return pair["b_only_right_indices"]
    raise MnistlensError(f"the report compares no pair {right!r} and {wrong!r}")


def disagreement_scores(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which images the models disagree on, and how confidently: (M, N, C) -> (K,), (K,).

    For each label some model predicts, its *backing* is the highest confidence with
    which any model predicts it; an image's score is the second-highest backing, i.e.
    the largest c such that two models give different answers each with confidence
    >= c (for two models: the smaller of their two confidences). A score near 1 means
    two models are both sure and contradict each other, not that one of them is unsure.

    Returns the indices of the images with >= 2 different predicted labels, sorted by
    decreasing score, and their scores.
    """
    confidence, predicted = probs.max(dim=2)  # (M, N), (M, N)
    n_classes = probs.shape[2]
    backing = torch.zeros(probs.shape[1], n_classes, dtype=confidence.dtype)  # (N, C)
    backing.scatter_reduce_(1, predicted.T, confidence.T, reduce="amax")  # per label's best
    top2 = backing.topk(2, dim=1).values  # (N, 2)
    disagree = (predicted != predicted[:1]).any(dim=0)  # (N,) >= 2 different labels
    index = disagree.nonzero().squeeze(1)  # (K,)
    scores = top2[index, 1]  # (K,)
    order = scores.argsort(descending=True, stable=True)
    return index[order], scores[order]


def disagreement_records(
    names: list[str], probs: torch.Tensor, labels: torch.Tensor, top: int | None = 100
) -> list[dict]:
    """The `top` most confident disagreements as JSON-ready dicts (all if top is None).

    probs: (M, N, C) for the M `names`. Each record: `index` (test image), `label`,
    `score` (see `disagreement_scores`), `predictions` and `confidences` (name -> value).
    """
    index, scores = disagreement_scores(probs)
    confidence, predicted = probs.max(dim=2)  # (M, N)
    records = []
    for i, score in zip(index[:top].tolist(), scores[:top].tolist(), strict=True):
        records.append(
            {
                "index": i,
                "label": int(labels[i]),
                "score": score,
                "predictions": {n: int(predicted[m, i]) for m, n in enumerate(names)},
                "confidences": {n: float(confidence[m, i]) for m, n in enumerate(names)},
            }
        )
    return records


def _train_accuracy(
    model: nn.Module, meta: dict, images: torch.Tensor, labels: torch.Tensor, device: Device
) -> float:
    """Accuracy on the first len(images) training images: as recorded at training time
    when the checkpoint measured the same images (`train.train` records the first
    TRAIN_ACCURACY_IMAGES), else one pass over them now."""
    recorded = meta.get("train_accuracy")
    if recorded is not None and meta.get("train_accuracy_images") == len(images):
        return float(recorded)
    predicted = predict_logits(model, images, device=device).argmax(dim=1)
    return float((predicted == labels).double().mean())


def compare_models(
    models: dict[str, tuple[nn.Module, dict]],
    images: torch.Tensor,
    labels: torch.Tensor,
    train_images: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
    top: int | None = 100,
    *,
    device: Device = "auto",
) -> dict:
    """Compare models on the same test images; -> JSON-ready dict.

    Args:
        models: name -> (model, metadata) as `load_model` returns them, in display order;
            `train_seconds` is read from the metadata (None if it has none).
        images, labels: (N, 1, 28, 28) in [0, 1] and (N,), normally the full 10k test set.
        train_images, train_labels: training images, for each model's train-test gap
            (read from the checkpoint if it recorded the same count of images, else one
            pass over them); without them the gap is None.
        top: keep the `top` most confident disagreements (None: all).
        device: where the models run (see `mnistlens.device`).

    Returns {"models": [model_summary ...], "pairs": [pair_summary for each pair, in
    order], "disagreements": [disagreement_records ...], "n_images": N,
    "n_disagreements": how many images get >= 2 different answers}.
    """
    if not models:
        raise ValueError("compare_models needs at least one model")
    if (train_images is None) != (train_labels is None):
        raise ValueError("give both train_images and train_labels, or neither")
    names = list(models)
    rows, all_probs = [], []
    for name, (model, meta) in models.items():
        probs, speed = timed_probabilities(model, images, device=device)  # (N, 10)
        train_accuracy = None
        if train_images is not None:
            train_accuracy = _train_accuracy(model, meta, train_images, train_labels, device)
        parameters = sum(p.numel() for p in model.parameters())
        seconds = meta.get("train_seconds")
        row = model_summary(name, probs, labels, parameters, seconds, speed, train_accuracy)
        row["convolutional"] = is_convolutional(model)
        rows.append(row)
        all_probs.append(probs)
    probs = torch.stack(all_probs)  # (M, N, 10)
    predicted = probs.argmax(dim=2)  # (M, N)
    pairs = [
        pair_summary(names[i], names[j], predicted[i], predicted[j], labels)
        for i in range(len(names))
        for j in range(i + 1, len(names))
    ]
    return {
        "models": rows,
        "pairs": pairs,
        "disagreements": disagreement_records(names, probs, labels, top),
        "n_images": len(labels),
        "n_disagreements": int((predicted != predicted[:1]).any(dim=0).sum()),
    }


def best_dense_and_convolutional(report: dict) -> tuple[dict, dict] | None:
    """The rows of the most accurate model without convolutions and the most accurate
    convolutional one (by their weights, `row["convolutional"]`); None if either kind is
    missing."""
    rows = report["models"]
    dense = [m for m in rows if not m.get("convolutional")]
    convs = [m for m in rows if m.get("convolutional")]
    if not dense or not convs:
        return None
    return max(dense, key=lambda m: m["accuracy"]), max(convs, key=lambda m: m["accuracy"])


def default_pair(report: dict) -> tuple[str, str] | None:
    """The pair whose difference the report explains: the most accurate dense model (A)
    and the most accurate convolutional one (B); None if either kind is missing."""
    best = best_dense_and_convolutional(report)
    return None if best is None else (best[0]["name"], best[1]["name"])
