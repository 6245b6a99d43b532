"""How good is a classifier: predictions, accuracy, confusion matrix.

Small pure functions on tensors; plotting lives in `plots.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlens.device import Device, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.models import evaluating, for_inference


@torch.no_grad()  # not inference_mode: callers may use the scores in later autograd code
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int | None = None,
    *,
    device: Device = "auto",
) -> torch.Tensor:
    """Scores of `model` in eval mode (its mode is restored): (N, 1, 28, 28) -> (N, C),
    on the CPU.

    On the CPU, run as `models.for_inference` says: a model with convolutions as a
    channels-last copy, 64 rows a pass, several times faster than batches of 1000
    (`benchmarks/bench_predict.py`). On a GPU, `device.GPU_ROWS` rows a pass. batch_size
    overrides. device: "auto" (CUDA if available, else the CPU), "cpu", "cuda[:N]"; a
    model elsewhere runs as a copy there (`device.model_on`).
    """
    dev = resolve_device(device)
    fast, rows = for_inference(model, len(images), device=dev, keep=True)  # nothing hooks it
    rows = batch_size or rows
    with evaluating(fast):
        chunks = [fast(images[i : i + rows].to(dev)).cpu() for i in range(0, len(images), rows)]
    return torch.cat(chunks) if chunks else torch.empty(0, 10)


def check_labels(labels: torch.Tensor, n: int = 10, name: str = "labels") -> torch.Tensor:
    """Validate (N,) integer classes in 0..n-1; -> int64."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise MnistlensError(f"{name} must be a (N,) tensor of classes, got {shape}")
    if labels.is_floating_point() or labels.is_complex():
        raise MnistlensError(f"{name} must be integer classes, got dtype {labels.dtype}")
    if len(labels) and not ((labels >= 0) & (labels < n)).all():
        bad = int(labels[(labels < 0) | (labels >= n)][0])
        raise MnistlensError(f"{name} hold class {bad}, outside 0-{n - 1}")
    return labels.long()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Counts (n, n) int64, rows = true digit, columns = predicted digit: (N,), (N,) -> (n, n)."""
    predictions = check_labels(predictions, n, "predictions")
    labels = check_labels(labels, n)
    if len(predictions) != len(labels):
        raise MnistlensError(
            f"{len(predictions)} predictions for {len(labels)} labels; give one per image"
        )
    flat = labels.long() * n + predictions.long()  # (N,) index into the flattened matrix
    return torch.bincount(flat, minlength=n * n).reshape(n, n)  # (n, n)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Fraction of each true digit predicted correctly: (n, n) -> (n,) float64."""
    totals = confusion.sum(dim=1).double()
    return confusion.diagonal().double() / totals.clamp(min=1)


def top_confusions(confusion: torch.Tensor, k: int = 5) -> list[tuple[int, int, int]]:
    """The k most frequent mistakes as (true digit, predicted digit, count), largest first."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().sort(descending=True)
    n = confusion.shape[0]
    return [
        (int(i) // n, int(i) % n, int(c))
        for c, i in zip(counts[:k], flat[:k], strict=True)
        if c > 0
    ]


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, device: Device = "auto"
) -> dict:
    """Accuracy summary of `model` on (N, 1, 28, 28) images with (N,) labels.

    Returns a JSON-ready dict: `accuracy`, `per_digit_accuracy` (10 floats),
    `n_images`, `n_errors`, `top_confusions` (list of [true, predicted, count]),
    and `confusion` (10 x 10 nested list, rows = true digit). The forward passes run on
    `device` ("auto": CUDA if available, else the CPU; see `predict_logits`).
    """
    from mnistlens.data import check_images

    images = check_images(images)
    labels = check_labels(labels)
    if len(labels) != len(images):
        raise MnistlensError(f"{len(images)} images but {len(labels)} labels; give one per image")
    predictions = predict_logits(model, images, device=device).argmax(dim=1)
    confusion = confusion_matrix(predictions, labels)
    n_correct = int(confusion.diagonal().sum())
    return {
        "accuracy": n_correct / max(len(labels), 1),
        "per_digit_accuracy": per_class_accuracy(confusion).tolist(),
        "n_images": len(labels),
        "n_errors": len(labels) - n_correct,
        "top_confusions": [list(t) for t in top_confusions(confusion)],
        "confusion": confusion.tolist(),
    }
