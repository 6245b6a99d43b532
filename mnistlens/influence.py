"""Example-based explanations: "it is a 4 because it looks like these 4s" (issue 11).

Two ways to point at the training images behind a prediction:

- `nearest_training_images`: the training images the network *represents* most like the
  query, by cosine similarity of their activations at the last hidden layer (the deep
  k-nearest-neighbour view, Papernot & McDaniel 2018, arXiv:1803.04765). It answers
  "what does this digit look like to the model?".
- `tracin`: TracIn (Pruthi et al. 2020, arXiv:2002.08484): the training images whose
  gradient steps lowered the loss of the prediction most (proponents) or raised it most
  (opponents). It answers "which training examples pushed the model towards this?".

Both need one forward pass of the model over the 60,000 training images; after it, a
query is a few matrix products. The pass is done once per model and cached in memory
and on disk (`default_cache_dir()`), keyed by the SHA-256 of the model's weights, the
layer and the training data's checksum. A cache file is data: it is read with
`torch.load(weights_only=True)` and checked (format, key, shapes, labels, unit rows)
before use; a file that is unreadable or does not match is rebuilt, never trusted.

Why TracIn is computed here rather than by Captum's `TracInCPFast.influence`: Captum
re-runs the model over the whole training set on every call (8-12 s per query for the
shipped MLP, a full training pass for the CNN), while its scores are products of
per-training-image factors that do not depend on the query. The factors are computed
once and cached; tests check the scores against `TracInCPFast.influence` itself.

    >>> index = training_index(model)                      # once per model, then cached
    >>> near = nearest_training_images(index, model, images[:1], k=8)
    >>> near.indices.shape, near.similarities.shape        # (1, 8), most similar first
    >>> result = tracin(model, images[:1], k=8)            # proponents, opponents, scores
"""

from __future__ import annotations

import copy
import functools
import hashlib
import numbers
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data
from .activations import capture, layer_activations
from .attribution.common import check_images, resolve_target
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import atomic_write, read_checkpoint, resolve_checkpoint
from .errors import MnistlensError, first_line
from .models import evaluating, get_layer
from .prepare import analyze

PIXELS = "pixels"  # the "layer" of a raw-pixel index (default for models without hidden layers)
INDEX_FORMAT = "mnistlens-training-index"
TRACIN_FORMAT = "mnistlens-tracin-factors"
FORMAT_VERSION = 1
MAX_INDEX_BYTES = 2**30  # a conv layer's 25,088 values x 60,000 images would take 5.6 GB
_MEMORY: OrderedDict[str, object] = OrderedDict()  # key -> TrainingIndex or _Factors
_MEMORY_ENTRIES = 8
_MEMORY_LOCK = threading.Lock()  # Streamlit runs sessions in threads


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
class _Factors:
    """What TracInCPFast needs of each training image at one checkpoint (Pruthi et al.,
    appendix F): the input of the final linear layer and the loss gradient at its output."""

    inputs: torch.Tensor  # (M, H) float32
    errors: torch.Tensor  # (M, C) float32: softmax - onehot(label)
    key: str
    source: str = "built"


class Neighbours(NamedTuple):
    indices: torch.Tensor  # (N, k) int64 training-set indices, most similar first
    similarities: torch.Tensor  # (N, k) float32 cosine similarities in [-1, 1]


class TracInResult(NamedTuple):
    proponents: torch.Tensor  # (N, k) int64 training-set indices, most supporting first
    proponent_scores: torch.Tensor  # (N, k) float32, descending
    opponents: torch.Tensor  # (N, k) int64, most opposing first
    opponent_scores: torch.Tensor  # (N, k) float32, ascending (most negative first)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/mnistlens/index`, else `~/.cache/mnistlens/index`."""
    return data.default_data_dir() / "index"


def clear_memory_cache() -> None:
    """Forget the indexes and TracIn factors held in memory (disk files stay)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def model_key(model_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model's state_dict: names, dtypes, shapes and raw bytes."""
    state = model_or_state
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return digest.hexdigest()


# ---------------------------------------------------------------- nearest neighbours


def training_index(
    model: nn.Module,
    data_dir: str | os.PathLike | None = None,
    layer: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    *,
    train_subset: int | None = None,
) -> TrainingIndex:
    """Unit-length activations of every training image at `layer`, built once per model.

    Args:
        model: any classifier of (N, 1, 28, 28) images.
        data_dir: MNIST root (default: $MNISTLENS_DATA, else the user cache).
        layer: default: the last hidden layer (`prepare.analyze(model).hidden_layers[-1]`),
            or "pixels" for a model without one. Conv outputs are flattened.
        cache_dir: where index files go; default `default_cache_dir()`.
        progress: show a progress bar during the training-set pass.
        train_subset: use only the first M training images (tests, quick looks).

    Returns a TrainingIndex: features (M, D) float32 unit rows, labels (M,).
    Looked up in memory, then on disk, else built by one pass over the training set
    (measured on 2 shared cores: the shipped MLP 1-12 s, the CNN 25-95 s, depending on
    the load). A build also stores the TracIn factors of the same pass, so `tracin` on
    this model needs no pass of its own. Reading the files back takes ~0.1-0.6 s.

        >>> index = training_index(model)
        >>> index.features.shape, index.layer
        (torch.Size([60000, 128]), 'relu_fc1')
    """
    layer = _index_layer(model, layer)
    place = _Place.of(data_dir, train_subset, cache_dir)
    weights = model_key(model)
    key = place.key(INDEX_FORMAT, weights, layer)
    found = _memory_get(key)
    if found is not None:
        return replace(found, source="memory")
    path = place.path("index", layer, key)
    payload = _read_cache(path, INDEX_FORMAT, key)
    if payload is not None:
        labels = place.train()[1]
        problem = _index_problem(payload, labels)
        if problem is None:
            index = TrainingIndex(payload["features"], labels, layer, weights, key, "disk", path)
            _memory_put(key, index)
            return index
        _distrust(path, problem)
    _check_index_size(model, layer, place.size)
    index, _ = _build(model, weights, layer, place, progress)
    return index


@torch.no_grad()
def nearest_training_images(
    index: TrainingIndex,
    model: nn.Module,
    images: torch.Tensor,
    k: int = 8,
    batch_size: int = 256,
) -> Neighbours:
    """The k training images most similar to each image, at the index's layer.

    Cosine similarity of activations: one matrix product (N, D) @ (D, M), in chunks of
    `batch_size` images so memory stays at batch_size x M floats.

    Args:
        index: from `training_index(model)` (same weights, else an error).
        images: (N, 1, 28, 28) float32 in [0, 1].
        k: neighbours per image, 1 <= k <= len(index).

    Returns Neighbours(indices (N, k) int64 into the training set, similarities (N, k)),
    most similar first. The images: `data.load_mnist("train")[0][indices]`.
    """
    _check_batch_size(batch_size)
    if not isinstance(index, TrainingIndex):
        raise MnistlensError(
            f"index must be a TrainingIndex from training_index(model), got {type(index).__name__}"
        )
    images = check_images(images)
    k = _check_k(k, len(index))
    if index.layer != PIXELS and model_key(model) != index.model_key:
        raise MnistlensError(
            "this index was built for other weights than this model's; "
            "build it with training_index(model)"
        )
    found, similar = [torch.empty(0, k, dtype=torch.int64)], [torch.empty(0, k)]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if index.layer == PIXELS:
            query = chunk.flatten(1)  # (n, 784)
        else:
            query = layer_activations(model, chunk, index.layer).flatten(1)  # (n, D)
        scores = F.normalize(query.float(), dim=1) @ index.features.T  # (n, M)
        top = scores.topk(k, dim=1)
        found.append(top.indices)
        similar.append(top.values)
    return Neighbours(torch.cat(found), torch.cat(similar))


# ---------------------------------------------------------------- TracIn


def tracin(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    k: int = 8,
    data_dir: str | os.PathLike | None = None,
    *,
    checkpoints: Sequence[dict | str | os.PathLike] | None = None,
    learning_rates: Sequence[float] | None = None,
    batch_size: int = 128,
    cache_dir: str | os.PathLike | None = None,
    train_subset: int | None = None,
    progress: bool = False,
) -> TracInResult:
    """The training images that most support and most oppose each prediction (TracIn).

    TracIn (Pruthi et al. 2020) scores training image z for query z' by how much the
    gradient steps on z lowered the loss on z', summed over checkpoints i of training:
    sum_i lr_i grad L(w_i, z) . grad L(w_i, z'). As in Captum's `TracInCPFast` (the
    paper's appendix F) only the final linear layer's weight gradient is used, for which
    the dot product factorizes: (a . a') (g . g'), a = the layer's input, g = softmax -
    onehot = d CrossEntropy / d logits (the bias gradient is left out, as in Captum).
    Positive: a proponent (training on it made the query's target more likely);
    negative: an opponent.

    mnistlens ships one final checkpoint per model, so by default the sum has one term,
    the model's own weights with lr 1: TracIn-CP with a single checkpoint, the
    approximation the paper and Captum document. At the final weights well-learned
    training images have near-zero loss gradients, so proponents and opponents lean to
    the hard, atypical or mislabeled ones (which the paper uses to find mislabeled
    data). Pass `checkpoints` saved during training for the intended sum.

    Args:
        model: a classifier ending in an nn.Linear (`analyze(model).parameter_layers[-1]`).
        images: (N, 1, 28, 28) float32 in [0, 1].
        target: the class whose loss is traced: None = the model's prediction, an int,
            or (N,) classes.
        k: proponents and opponents per image, 1 <= k <= training images.
        data_dir: MNIST root. checkpoints: state_dicts, mnistlens checkpoints or their
            file paths, of the same architecture; default: the model's own weights.
        learning_rates: one per checkpoint (default 1 each). batch_size: query chunk.
        cache_dir, train_subset, progress: as for `training_index`; the training-set
            factors of each checkpoint are cached like the index.

    Returns TracInResult(proponents (N, k) int64, proponent_scores (N, k) descending,
    opponents (N, k) int64, opponent_scores (N, k) ascending).

        >>> result = tracin(model, images[:1], k=8)
        >>> train_labels[result.proponents[0]]  # mostly the predicted digit
    """
    images = check_images(images)
    parts = []
    options = dict(checkpoints=checkpoints, learning_rates=learning_rates, cache_dir=cache_dir)
    options.update(batch_size=batch_size, train_subset=train_subset, progress=progress)
    for scores in _score_chunks(model, images, target, data_dir, k=k, **options):
        top, bottom = scores.topk(k, dim=1), scores.topk(k, dim=1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
    if not parts:
        empty = torch.empty(0, k, dtype=torch.int64)
        return TracInResult(empty, empty.float(), empty, empty.float())
    return TracInResult(*(torch.cat(column) for column in zip(*parts, strict=True)))


def tracin_scores(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    data_dir: str | os.PathLike | None = None,
    **options,
) -> torch.Tensor:
    """TracIn scores of every training image for every query: (N, 1, 28, 28) -> (N, M).

    The full matrix behind `tracin` (same options, without k); it takes N x M floats
    (240 kB per query for the 60,000 training images), so ask `tracin` for top-k lists.
    """
    images = check_images(images)
    chunks = list(_score_chunks(model, images, target, data_dir, **options))
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def _score_chunks(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None,
    data_dir: str | os.PathLike | None,
    checkpoints: Sequence | None = None,
    learning_rates: Sequence[float] | None = None,
    batch_size: int = 128,
    cache_dir: str | os.PathLike | None = None,
    train_subset: int | None = None,
    progress: bool = False,
    k: int | None = None,
) -> Iterator[torch.Tensor]:
    """TracIn scores (n, M) per chunk of queries, from cached training-set factors."""
    _check_batch_size(batch_size)
    head = _head(model)
    states = _checkpoint_models(model, checkpoints)
    rates = [1.0] * len(states) if learning_rates is None else [float(r) for r in learning_rates]
    if len(rates) != len(states):
        raise MnistlensError(
            f"{len(rates)} learning rates for {len(states)} checkpoints; give one per checkpoint"
        )
    place = _Place.of(data_dir, train_subset, cache_dir)
    if k is not None:
        _check_k(k, place.size)
    target = resolve_target(model, images, target)  # the final model's prediction if None
    own = checkpoints is None  # a pass for the model's own weights also builds its index
    factors = [_factors(m, weights, head, place, progress, own) for m, weights in states]
    for start in range(0, len(images), batch_size):
        chunk, labels = images[start : start + batch_size], target[start : start + batch_size]
        scores = torch.zeros(len(chunk), len(factors[0].inputs))  # (n, M)
        for (state_model, _), train, rate in zip(states, factors, rates, strict=True):
            inputs, logits = _head_pass(state_model, chunk, head)  # (n, H), (n, C)
            errors = _loss_gradients(logits, labels)  # (n, C)
            scores += rate * (inputs @ train.inputs.T) * (errors @ train.errors.T)
        yield scores


def _loss_gradients(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
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


# ---------------------------------------------------------------- the training-set pass


@dataclass(frozen=True)
class _Place:
    """Where a training-set pass comes from and goes: data root, subset, cache directory."""

    root: Path
    subset: int | None
    cache_dir: Path

    @classmethod
    def of(cls, data_dir, subset, cache_dir) -> _Place:
        if subset is not None and (
            isinstance(subset, bool) or not isinstance(subset, numbers.Integral) or subset < 1
        ):
            raise MnistlensError(f"train_subset={subset!r} must be a positive integer or None")
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return cls(data.resolve_data_dir(data_dir).resolve(), subset, cache)

    @property
    def size(self) -> int:
        """M, the number of training images used."""
        n = _train_info(self.root)[1]
        if self.subset is not None and self.subset > n:
            raise MnistlensError(
                f"train_subset={self.subset} is more than the {n:,} training images"
            )
        return n if self.subset is None else int(self.subset)

    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (first `subset`) training images (M, 1, 28, 28) and labels (M,)."""
        images, labels = data.load_mnist("train", self.root)
        return images[: self.size], labels[: self.size]

    def key(self, kind: str, weights: str, layer: str) -> str:
        text = f"{kind}/{FORMAT_VERSION}/{weights}/{layer}/{_train_info(self.root)[0]}"
        return hashlib.sha256(f"{text}/{self.subset}".encode()).hexdigest()

    def path(self, kind: str, layer: str, key: str) -> Path:
        return self.cache_dir / f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}-{key[:24]}.pt"


@functools.lru_cache(maxsize=8)
def _train_info(root: Path) -> tuple[str, int]:
    """SHA-256 and size of the training split, once per process (as data.py reads it)."""
    labels = data.load_mnist("train", root)[1]  # downloads the files if missing and allowed
    return data.data_checksums(root)["train"], len(labels)


def _build(
    model: nn.Module, weights: str, layer: str | None, place: _Place, progress: bool
) -> tuple[TrainingIndex | None, _Factors | None]:
    """One pass over the training set -> the index at `layer` (unless None) and the TracIn
    factors of these weights (if the model ends in a linear layer); both cached."""
    try:
        head = _head(model)
    except MnistlensError:
        head = None  # nearest neighbours still work; TracIn will say why not
    images, labels = place.train()
    features, inputs, logits = _training_pass(model, images, layer, head, progress)
    index = factors = None
    if layer is not None:
        key = place.key(INDEX_FORMAT, weights, layer)
        path = place.path("index", layer, key)
        unit = F.normalize(features.float(), dim=1)  # (M, D) unit rows
        _write_cache(path, {"format": INDEX_FORMAT, "key": key, "features": unit, "labels": labels})
        index = TrainingIndex(unit, labels, layer, weights, key, "built", path)
        _memory_put(key, index)
    if head is not None:
        key = place.key(TRACIN_FORMAT, weights, head)
        errors = _loss_gradients(logits, labels)  # (M, C)
        payload = {"format": TRACIN_FORMAT, "key": key, "inputs": inputs, "errors": errors}
        _write_cache(place.path("tracin", head, key), dict(payload, labels=labels))
        factors = _Factors(inputs, errors, key)
        _memory_put(key, factors)
    return index, factors


def _factors(
    model: nn.Module, weights: str, head: str, place: _Place, progress: bool, with_index: bool
) -> _Factors:
    """The TracIn training-set factors of one set of weights: memory, disk, or a pass
    (which, `with_index`, also builds the default nearest-neighbour index)."""
    key = place.key(TRACIN_FORMAT, weights, head)
    found = _memory_get(key)
    if found is not None:
        return replace(found, source="memory")
    path = place.path("tracin", head, key)
    payload = _read_cache(path, TRACIN_FORMAT, key)
    if payload is not None:
        problem = _factors_problem(payload, place.train()[1])
        if problem is None:
            factors = _Factors(payload["inputs"], payload["errors"], key, "disk")
            _memory_put(key, factors)
            return factors
        _distrust(path, problem)
    layer = _index_layer(model, None) if with_index else None
    if layer is not None and _index_bytes(model, layer, place.size) > MAX_INDEX_BYTES:
        layer = None
    return _build(model, weights, layer, place, progress)[1]


@torch.no_grad()
def _training_pass(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | None,
    head: str | None,
    progress: bool,
    batch_size: int = 500,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """One pass in eval mode: -> (`layer` outputs (M, D) or None, `head` inputs (M, H)
    or None, logits (M, C)). `activations.capture` rather than `layer_activations`, to
    read the index layer and the head's input in the same pass."""
    outputs = [layer] if layer not in (None, PIXELS) else []
    inputs = [head] if head is not None else []
    features, head_inputs, logits = [], [], []
    with evaluating(model), capture(model, outputs) as out, capture(model, inputs, "input") as inp:
        for start in tqdm(
            range(0, len(images), batch_size),
            desc="training images",
            disable=not progress,
            unit="batch",
        ):
            batch = images[start : start + batch_size]
            logits.append(model(batch).float())
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
def _head_pass(model: nn.Module, images: torch.Tensor, head: str):
    """The final linear layer's input (n, H) and the logits (n, C) of a few images."""
    with evaluating(model), capture(model, head, "input") as inp:
        logits = model(images).float()
    return inp[head].flatten(1).float(), logits


# ---------------------------------------------------------------- checks and caches


def _index_layer(model: nn.Module, layer: str | None) -> str:
    if layer is None:
        hidden = analyze(model).hidden_layers
        return hidden[-1] if hidden else PIXELS
    if layer != PIXELS:
        try:
            get_layer(model, layer)
        except MnistlensError as err:
            raise MnistlensError(f"{err}; or {PIXELS!r} for the raw pixels") from None
    return layer


def _index_bytes(model: nn.Module, layer: str, n: int) -> int:
    if layer == PIXELS:
        return n * 784 * 4
    width = layer_activations(model, torch.zeros(1, 1, 28, 28), layer)[0].numel()
    return n * width * 4


def _check_index_size(model: nn.Module, layer: str, n: int) -> None:
    size = _index_bytes(model, layer, n)
    if size > MAX_INDEX_BYTES:
        raise MnistlensError(
            f"an index of layer {layer!r} for {n:,} training images would take "
            f"{size / 2**30:.1f} GB; choose a later (smaller) layer, or train_subset"
        )


def _head(model: nn.Module) -> str:
    """The final linear layer, whose gradients TracInCPFast computes in closed form."""
    layers = analyze(model).parameter_layers
    if not layers or not isinstance(get_layer(model, layers[-1]), nn.Linear):
        last = f"its last layer with weights is {layers[-1]!r}" if layers else "it has none"
        raise MnistlensError(
            f"TracIn here needs a model whose last layer with weights is an nn.Linear; {last}"
        )
    return layers[-1]


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise MnistlensError(
            f"k={k!r} must be an integer from 1 to {n:,} (the training images searched)"
        )
    return int(k)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise MnistlensError(f"batch_size={batch_size!r} must be a positive integer")
    if batch_size < 1:
        raise MnistlensError(f"batch_size={batch_size!r} must be a positive integer")


def _checkpoint_models(model: nn.Module, checkpoints) -> list[tuple[nn.Module, str]]:
    """(model with those weights, their key) per checkpoint; None -> the model itself."""
    if checkpoints is None:
        return [(model, model_key(model))]
    if isinstance(checkpoints, (str, os.PathLike, dict)):
        checkpoints = [checkpoints]
    result = []
    for i, item in enumerate(checkpoints):
        if isinstance(item, (str, os.PathLike)):
            state = _state_from_file(item)
        elif isinstance(item, dict):
            state = item["state_dict"] if item.get("format") == CHECKPOINT_FORMAT else item
        else:
            raise MnistlensError(
                f"checkpoint {i} is a {type(item).__name__}; pass state_dicts, mnistlens "
                "checkpoints or their file paths"
            )
        at_checkpoint = copy.deepcopy(model)
        try:
            at_checkpoint.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise MnistlensError(
                f"checkpoint {i} does not fit this model ({first_line(err)}); pass "
                "checkpoints of the same architecture"
            ) from None
        result.append((at_checkpoint.eval(), model_key(at_checkpoint)))
    if not result:
        raise MnistlensError("checkpoints is empty; pass None to use the model's own weights")
    return result


def _state_from_file(path: str | os.PathLike) -> dict:
    """A state_dict from an mnistlens checkpoint or a plain state_dict file, as data only."""
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused pickles, zip errors, text files ...
        raise MnistlensError(
            f"cannot read checkpoint {path} as data ({first_line(err)}); pass a state_dict "
            "or a checkpoint written by `mnistlens train`"
        ) from None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return read_checkpoint(path)["state_dict"]  # its version checks and messages
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    raise MnistlensError(f"{path} holds neither a state_dict nor a mnistlens checkpoint")


def _memory_get(key: str):
    with _MEMORY_LOCK:
        found = _MEMORY.get(key)
        if found is not None:
            _MEMORY.move_to_end(key)
        return found


def _memory_put(key: str, value) -> None:
    with _MEMORY_LOCK:
        _MEMORY[key] = value
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > _MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)


def _write_cache(path: Path, payload: dict) -> None:
    payload = dict(payload, format_version=FORMAT_VERSION)
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as err:  # a read-only cache only costs the next process a rebuild
        warnings.warn(f"could not write cache file {path}: {first_line(err)}", stacklevel=3)


def _read_cache(path: Path, fmt: str, key: str) -> dict | None:
    """The payload of a cache file if it is ours and made for `key`; else None (and a
    warning when a file was there but could not be trusted)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zips, refused pickles, junk
        _distrust(path, f"unreadable ({first_line(err)})")
        return None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        _distrust(path, f"not a {fmt} file")
    elif payload.get("format_version") != FORMAT_VERSION:
        _distrust(path, f"format version {payload.get('format_version')!r}, not {FORMAT_VERSION}")
    elif payload.get("key") != key:
        _distrust(path, "made for other weights, layer or data")
    else:
        return payload
    return None


def _distrust(path: Path, problem: str) -> None:
    warnings.warn(f"ignoring cache file {path}: {problem}; rebuilding it", stacklevel=4)


def _labels_problem(payload: dict, labels: torch.Tensor) -> str | None:
    found = payload.get("labels")
    if not isinstance(found, torch.Tensor) or not torch.equal(found, labels):
        return "its labels are not the training labels"
    return None


def _matrix_problem(value, rows: int, name: str) -> str | None:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float32 or value.dim() != 2:
        return f"{name} is not a float32 matrix"
    if len(value) != rows or not value.sum().isfinite():  # one NaN or inf makes the sum so
        return f"{name} has {len(value)} rows or non-finite values, expected {rows} finite rows"
    return None


def _index_problem(payload: dict, labels: torch.Tensor) -> str | None:
    """Why an index payload cannot be used, or None."""
    features = payload.get("features")
    problem = _labels_problem(payload, labels) or _matrix_problem(features, len(labels), "features")
    if problem is None:
        norms = features.norm(dim=1)  # (M,)
        if not (((norms - 1).abs() < 1e-3) | (norms == 0)).all():
            return "its rows are not unit length"
    return problem


def _factors_problem(payload: dict, labels: torch.Tensor) -> str | None:
    """Why a TracIn factors payload cannot be used, or None."""
    errors = payload.get("errors")
    problem = (
        _labels_problem(payload, labels)
        or _matrix_problem(payload.get("inputs"), len(labels), "inputs")
        or _matrix_problem(errors, len(labels), "errors")
    )
    if problem is None and errors.sum(dim=1).abs().max() > 1e-3:
        return "its loss gradients do not sum to 0 (softmax - onehot does)"
    return problem


__all__ = [
    "Neighbours",
    "TracInResult",
    "TrainingIndex",
    "clear_memory_cache",
    "default_cache_dir",
    "model_key",
    "nearest_training_images",
    "tracin",
    "tracin_scores",
]
