"""Computed results kept on disk between runs, and shipped beside the checkpoints.

Some results take seconds to a minute and depend only on the weights, the MNIST files
and the library's code: a method's sanity verdict and its scores on the first test
images, a stress table, a comparison of models, a detector's fit. `kept(kind, key,
compute)` returns such a result from the user's cache (`cache_dir()/results`), else
from the shipped cache (`shipped_cache_dir()/results`: the same results, made at release
time by `mnistlens app --precompute`, so that a fresh server answers its first visitors
at once), else computes it and writes it to the user's cache.

A key names everything the result depends on beyond the code: the weights' SHA-256
(`weights_key`), never a file name; the arguments; the data's checksum where the caller
reads MNIST. The library's version is part of every key. The code is part of the name
of a file in the user's cache (`code_version`): changed code computes its results
again. The shipped ones are checked against the code by tests/test_results.py instead
(a failure there says to run the precomputation again). Files are data, read with
`torch.load(weights_only=True)`: dicts, lists, tuples, tensors, numbers, strings and
bytes; a file that is unreadable or made for another key is recomputed, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from mnistlens import __version__
from mnistlens.errors import MnistlensError, first_line
from mnistlens.io import atomic_write
from mnistlens.paths import app_path, cache_dir, shipped_cache_dir

FORMAT = "mnistlens-result"
T = TypeVar("T")


def weights_key(model: nn.Module) -> str:
    """SHA-256 of a model's state_dict (names, dtypes, shapes, bytes): what a result
    computed with these weights is keyed by."""
    from mnistlens.influence.cache import model_key  # one definition for every cache

    return model_key(model)


def digest(kind: str, key: Sequence) -> str:
    """The file key of a result: SHA-256 of its kind, the library version and `key`'s
    repr (so `key` holds plain values: strings, numbers, tuples)."""
    text = f"{FORMAT}|{__version__}|{kind}|{key!r}"
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def code_version() -> str:
    """SHA-256 of the library's and the explorer's Python files, once per process: part
    of the name of every result in the user's cache, so that changed code (a new commit,
    an upgrade within a version) never reads what older code computed there. The
    shipped results carry no such part: the tests check them against the code."""
    hashed = hashlib.sha256()
    for root in (Path(__file__).parent, app_path().parent):
        for path in sorted(root.rglob("*.py")):
            hashed.update(f"{path.relative_to(root)}|".encode())
            hashed.update(path.read_bytes())
    return hashed.hexdigest()


def shipped_name(kind: str, key: Sequence) -> str:
    """A result's file name in the shipped cache: `KIND-DIGEST.pt`."""
    return f"{kind}-{digest(kind, key)[:32]}.pt"


def user_path(kind: str, key: Sequence) -> Path:
    """Where a result is written: `cache_dir()/results/KIND-DIGEST-CODE.pt`."""
    name = shipped_name(kind, key).removesuffix(".pt")
    return cache_dir() / "results" / f"{name}-{code_version()[:12]}.pt"


def shipped_path(kind: str, key: Sequence) -> Path | None:
    """Where the shipped copy of a result would be, or None without a shipped cache."""
    shipped = shipped_cache_dir()
    return None if shipped is None else shipped / "results" / shipped_name(kind, key)


def as_shipped(path: Path) -> str:
    """The shipped cache's name for a file of the user's cache (the code part dropped)."""
    return f"{path.stem.rsplit('-', 1)[0]}.pt"


def lookup(kind: str, key: Sequence) -> tuple[bool, object]:
    """-> (True, the kept result) from the user's cache or the shipped one, else
    (False, None)."""
    full = digest(kind, key)
    for path in (user_path(kind, key), shipped_path(kind, key)):
        if path is None or not path.is_file():
            continue
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - truncated files, refused pickles, junk
            _distrust(path, f"unreadable ({first_line(err)})")
            continue
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            _distrust(path, f"not a {FORMAT} file")
        elif payload.get("key") != full or "value" not in payload:
            _distrust(path, "made for other weights, arguments or version")
        else:
            return True, payload["value"]
    return False, None


def store(
    kind: str, key: Sequence, value: object, call: dict | None = None, seconds: float = 0.0
) -> None:
    """Write a result to the user's cache (atomically); a cache that cannot be written
    only costs the computation next time. `call` (how to compute it again, in plain
    values) and `seconds` (what computing it took) are kept beside it for whoever
    checks a shipped result against the code."""
    payload = {
        "format": FORMAT,
        "key": digest(kind, key),
        "kind": kind,
        "call": call,
        "seconds": seconds,
        "value": value,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:  # a result that could be written but never read would be computed every time
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the safe loader refuses
        raise TypeError(f"a {kind} result cannot be read back safely: {first_line(err)}") from err
    try:
        atomic_write(user_path(kind, key), lambda f: f.write(buffer.getvalue()))
    except (OSError, MnistlensError) as err:
        warnings.warn(f"could not keep a {kind} result: {first_line(err)}", stacklevel=3)


def kept(kind: str, key: Sequence, compute: Callable[[], T], call: dict | None = None) -> T:
    """The result of `compute()` for `key`: kept from before (user's cache, then the
    shipped one), else computed now and kept in the user's cache (with `call`, see
    `store`)."""
    found, value = lookup(kind, key)
    if found:
        return value  # type: ignore[return-value]
    started = time.perf_counter()
    value = compute()
    store(kind, key, value, call, time.perf_counter() - started)
    return value


def _distrust(path: Path, problem: str) -> None:
    warnings.warn(f"ignoring kept result {path}: {problem}; computing it again", stacklevel=4)
