"""Where the training-set passes of `mnistlens.influence` are kept: in memory and on disk.

A pass over the 60,000 training images costs seconds to a minute and a half; its results
(a nearest-neighbour index, TracIn factors) are kept once per process in memory (a few
entries, least recently used dropped) and on disk in `default_cache_dir()`. Every entry
is keyed by the SHA-256 of the weights it was computed with (`model_key`), the layer and
the training data's checksum, so retrained weights, e.g. the snapshots of a new training
run, never meet another run's files. A cache file is data: it is read with
`torch.load(weights_only=True)` and checked (format, key, shapes, labels) before use; a
file that is unreadable or does not match is rebuilt, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from mnistlens import data
from mnistlens.errors import MnistlensError, first_line
from mnistlens.io import atomic_write
from mnistlens.paths import shipped_counterpart

INDEX_FORMAT = "mnistlens-training-index"
TRACIN_FORMAT = "mnistlens-tracin-factors"
FORMAT_VERSION = 1
_MEMORY: OrderedDict[str, object] = OrderedDict()  # key -> TrainingIndex or Factors
_MEMORY_ENTRIES = 8
_MEMORY_LOCK = threading.Lock()  # Streamlit runs sessions in threads


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/mnistlens/index`, else `~/.cache/mnistlens/index`."""
    return data.cache_dir() / "index"


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


def memory_get(key: str):
    with _MEMORY_LOCK:
        found = _MEMORY.get(key)
        if found is not None:
            _MEMORY.move_to_end(key)
        return found


def memory_put(key: str, value) -> None:
    with _MEMORY_LOCK:
        _MEMORY[key] = value
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > _MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)


@dataclass(frozen=True)
class Place:
    """Where a training-set pass comes from and goes: data root, subset, cache directory."""

    root: Path
    subset: int | None
    cache_dir: Path

    @classmethod
    def of(cls, data_dir, subset, cache_dir) -> Place:
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
        """The cache key of `kind` computed at the weights `weights` (a `model_key`)."""
        text = f"{kind}/{FORMAT_VERSION}/{weights}/{layer}/{_train_info(self.root)[0]}"
        return hashlib.sha256(f"{text}/{self.subset}".encode()).hexdigest()

    def path(self, kind: str, layer: str, key: str) -> Path:
        return self.cache_dir / f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}-{key[:24]}.pt"


@functools.lru_cache(maxsize=8)
def _train_info(root: Path) -> tuple[str, int]:
    """SHA-256 and size of the training split, once per process (as data.py reads it)."""
    labels = data.load_mnist("train", root)[1]  # downloads the files if missing and allowed
    return data.data_checksums(root)["train"], len(labels)


def write_cache(path: Path, payload: dict) -> None:
    payload = dict(payload, format_version=FORMAT_VERSION)
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, MnistlensError) as err:  # a read-only cache costs a rebuild, no more
        warnings.warn(f"could not write cache file {path}: {first_line(err)}", stacklevel=3)


def read_cache(path: Path, fmt: str, key: str) -> dict | None:
    """The payload of a cache file if it is ours and made for `key`; else None (and a
    warning when a file was there but could not be trusted). A file the user's cache
    lacks is looked for in the shipped cache (`paths.shipped_counterpart`)."""
    if not path.is_file():
        path = shipped_counterpart(path)
        if path is None or not path.is_file():
            return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zips, refused pickles, junk
        distrust(path, f"unreadable ({first_line(err)})")
        return None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        distrust(path, f"not a {fmt} file")
    elif payload.get("format_version") != FORMAT_VERSION:
        distrust(path, f"format version {payload.get('format_version')!r}, not {FORMAT_VERSION}")
    elif payload.get("key") != key:
        distrust(path, "made for other weights, layer or data")
    else:
        return payload
    return None


def lookup(place: Place, fmt: str, kind: str, name: str, key: str, problem, make):
    """A cached result of a training-set pass: from memory, else from its file on disk if
    `problem(payload, labels)` finds nothing wrong (then `make(payload, labels, path)`
    builds it and it is kept in memory); None when it must be built. A bad file is
    reported (`distrust`) and rebuilt by the caller."""
    found = memory_get(key)
    if found is not None:
        return replace(found, source="memory")
    path = place.path(kind, name, key)
    payload = read_cache(path, fmt, key)
    if payload is not None:
        labels = place.train()[1]
        trouble = problem(payload, labels)
        if trouble is None:
            made = make(payload, labels, path)
            memory_put(key, made)
            return made
        distrust(path, trouble)
    return None


def distrust(path: Path, problem: str) -> None:
    warnings.warn(f"ignoring cache file {path}: {problem}; rebuilding it", stacklevel=4)


def index_problem(payload: dict, labels: torch.Tensor) -> str | None:
    """Why an index payload cannot be used, or None."""
    features = payload.get("features")
    problem = _labels_problem(payload, labels) or _matrix_problem(features, len(labels), "features")
    if problem is None:
        norms = features.norm(dim=1)  # (M,)
        if not (((norms - 1).abs() < 1e-3) | (norms == 0)).all():
            return "its rows are not unit length"
    return problem


def factors_problem(payload: dict, labels: torch.Tensor) -> str | None:
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
