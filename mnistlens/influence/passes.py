"""The one pass over the training set that both kinds of explanation read.

`build` runs the model over the (first M) training images once, in eval mode, and reads
two things on the way: the activations at the nearest-neighbour layer (a `TrainingIndex`)
and, if the model ends in a linear layer, that layer's input and the loss gradient at
its output (the TracIn `Factors` of these weights). Both are cached (`cache.py`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.influence import cache
from mnistlens.internals.activations import capture, layer_activations
from mnistlens.models import evaluating, for_inference, get_layer

PIXELS = "pixels"  # the "layer" of a raw-pixel index (default for models without hidden layers)
MAX_INDEX_BYTES = 2**30  # a conv layer's 25,088 values x 60,000 images would take 5.6 GB


@dataclass(frozen=True)
class TrainingIndex:
    """The training images' activations at one layer, each row of unit length.

    features: (M, D) float32, rows L2-normalized (an all-zero row stays zero), so a
        matrix product gives cosine similarities. float32, not float16: CPU matrix
        products are no faster in float16 (3x slower for a batch of 256 queries here),
        float16 rounds similarities at ~1e-3 and reorders near-ties, and the indexes
        are small (60,000 x 128 = 31 MB for the CNN, x 256 = 61 MB for the MLP; the
        pixel index of the linear model, 188 MB, is the largest).
    labels: (M,) int64 digits of the training images (M = 60,000 unless train_subset).
    layer: the layer read, or "pixels". model_key: SHA-256 of the weights (`model_key`).
    source: "built", "disk" or "memory"; path: the cache file (None if not written).
    """

    features: torch.Tensor
    labels: torch.Tensor
    layer: str
    model_key: str
    key: str
    source: str = "built"
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Factors:
    """What TracInCPFast needs of each training image at one set of weights (Pruthi et
    al., appendix F): the input of the final linear layer and the loss gradient at its
    output."""

    inputs: torch.Tensor  # (M, H) float32
    errors: torch.Tensor  # (M, C) float32: softmax - onehot(label)
    key: str
    source: str = "built"


def build(
    model: nn.Module, weights: str, layer: str | None, place: cache.Place, progress: bool
) -> tuple[TrainingIndex | None, Factors | None]:
    """One pass over the training set -> the index at `layer` (unless None) and the TracIn
    factors of these weights (if the model ends in a linear layer); both cached."""
    try:
        head = head_layer(model)
    except MnistlensError:
        head = None  # nearest neighbours still work; TracIn will say why not
    images, labels = place.train()
    features, inputs, logits = training_pass(model, images, layer, head, progress)
    index = factors = None
    if layer is not None:
        key = place.key(cache.INDEX_FORMAT, weights, layer)
        path = place.path("index", layer, key)
        unit = F.normalize(features.float(), dim=1)  # (M, D) unit rows
        payload = {"format": cache.INDEX_FORMAT, "key": key, "features": unit, "labels": labels}
        cache.write_cache(path, payload)
        index = TrainingIndex(unit, labels, layer, weights, key, "built", path)
        cache.memory_put(key, index)
    if head is not None:
        key = place.key(cache.TRACIN_FORMAT, weights, head)
        errors = loss_gradients(logits, labels)  # (M, C)
        payload = {"format": cache.TRACIN_FORMAT, "key": key, "inputs": inputs, "errors": errors}
        cache.write_cache(place.path("tracin", head, key), dict(payload, labels=labels))
        factors = Factors(inputs, errors, key)
        cache.memory_put(key, factors)
    return index, factors


@torch.no_grad()
def training_pass(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | None,
    head: str | None,
    progress: bool,
    batch_size: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """One pass in eval mode: -> (`layer` outputs (M, D) or None, `head` inputs (M, H)
    or None, logits (M, C)). `activations.capture` rather than `layer_activations`, to
    read the index layer and the head's input in the same pass."""
    outputs = [layer] if layer not in (None, PIXELS) else []
    inputs = [head] if head is not None else []
    features, head_inputs, logits = [], [], []
    fast, rows = for_inference(model, len(images))  # fast copy: the CNN's 60k images 3x sooner
    rows = batch_size or rows
    with evaluating(fast), capture(fast, outputs) as out, capture(fast, inputs, "input") as inp:
        for start in tqdm(
            range(0, len(images), rows),
            desc="training images",
            disable=not progress,
            unit="batch",
        ):
            batch = images[start : start + rows]
            logits.append(fast(batch).float())
            if head is not None:
                head_inputs.append(inp[head].flatten(1).float())  # (B, H)
            if layer == PIXELS:
                features.append(batch.flatten(1))  # (B, 784)
            elif layer is not None:
                features.append(out[layer].flatten(1))  # (B, D)
    return (
        torch.cat(features) if layer is not None else None,
        torch.cat(head_inputs) if head is not None else None,
        torch.cat(logits),
    )


@torch.no_grad()
def head_pass(model: nn.Module, images: torch.Tensor, head: str):
    """The final linear layer's input (n, H) and the logits (n, C) of a few images."""
    with evaluating(model), capture(model, head, "input") as inp:
        logits = model(images).float()
    return inp[head].flatten(1).float(), logits


def loss_gradients(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d CrossEntropy / d logits of each example, softmax - onehot: (M, C), (M,) -> (M, C).

    In float64 with the label's entry written as minus the sum of the other classes,
    because p_label - 1 cancels: in float32 p_label rounds to 1.0 for 20% of the test
    digits with the shipped CNN (14% with the MLP), erasing the entry that matters most,
    and keeps few significant digits for most others. (Captum's TracInCPFast, which
    takes this gradient by autograd in the model's float32, is off by up to 15% of a
    row's largest score on the predicted class for that reason; measured on the MLP.)
    """
    p = torch.softmax(logits.double(), dim=1)  # (M, C)
    rows = torch.arange(len(labels))
    p[rows, labels] = 0.0
    p[rows, labels] = -p.sum(dim=1)
    return p.float()


def index_layer(model: nn.Module, layer: str | None) -> str:
    """The layer an index reads: `layer` checked, or the last hidden layer, or pixels."""
    if layer is None:
        hidden = analyze(model).hidden_layers
        return hidden[-1] if hidden else PIXELS
    if layer != PIXELS:
        try:
            get_layer(model, layer)
        except MnistlensError as err:
            raise MnistlensError(f"{err}; or {PIXELS!r} for the raw pixels") from None
    return layer


def index_bytes(model: nn.Module, layer: str, n: int) -> int:
    if layer == PIXELS:
        return n * 784 * 4
    width = layer_activations(model, torch.zeros(1, 1, 28, 28), layer)[0].numel()
    return n * width * 4


def check_index_size(model: nn.Module, layer: str, n: int) -> None:
    size = index_bytes(model, layer, n)
    if size > MAX_INDEX_BYTES:
        raise MnistlensError(
            f"an index of layer {layer!r} for {n:,} training images would take "
            f"{size / 2**30:.1f} GB; choose a later (smaller) layer, or train_subset"
        )


def head_layer(model: nn.Module) -> str:
    """The final linear layer, whose gradients TracInCPFast computes in closed form."""
    layers = analyze(model).parameter_layers
    if not layers or not isinstance(get_layer(model, layers[-1]), nn.Linear):
        last = f"its last layer with weights is {layers[-1]!r}" if layers else "it has none"
        raise MnistlensError(
            f"TracIn here needs a model whose last layer with weights is an nn.Linear; {last}"
        )
    return layers[-1]


def check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise MnistlensError(
            f"k={k!r} must be an integer from 1 to {n:,} (the training images searched)"
        )
    return int(k)


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise MnistlensError(f"batch_size={batch_size!r} must be a positive integer")
    if batch_size < 1:
        raise MnistlensError(f"batch_size={batch_size!r} must be a positive integer")
