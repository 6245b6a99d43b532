"""Saving and loading checkpoints, safely.

A checkpoint is a plain dict of tensors, strings and numbers:

    {"format": "mnistlens-checkpoint", "format_version": 1,
     "arch": "cnn", "arch_kwargs": {...}, "state_dict": {...},
     "metadata": {test accuracy, per-digit accuracy, seed, hyper-parameters,
                  training seconds, versions, data checksums, date, ...}}

It is read with `torch.load(weights_only=True)`, which refuses any pickle that
would import or call code, so loading a file never runs code from it. Files are
written to a temporary file beside the target and renamed into place, so a crash
never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from mnistlens import models
from mnistlens.errors import MnistlensError
from mnistlens.io import atomic_write
from mnistlens.paths import resolve_checkpoint

FORMAT = "mnistlens-checkpoint"
FORMAT_VERSION = 1


def _plain(value):
    """Builtin types only (tuples -> lists, str subclasses such as torch.__version__ -> str),
    recursively, because weights_only loading refuses any other class."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if value is None or isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    arch: str,
    arch_kwargs: dict,
    metadata: dict,
) -> Path:
    """Write `model` as a mnistlens checkpoint at `path`, atomically; returns the path."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": _plain(arch_kwargs),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "metadata": _plain(metadata),
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict, read safely; refuses anything that is not one of ours."""
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err).lower():
            raise MnistlensError(
                f"refusing to load {path}: it is a pickle that would import or run code, "
                "which mnistlens never does; use a checkpoint written by `mnistlens train`"
            ) from None
        raise MnistlensError(f"{path} is not a mnistlens checkpoint (unreadable pickle)") from None
    except Exception as err:  # noqa: BLE001 - zip errors, truncated files, text files ...
        reason = (str(err).splitlines() or [type(err).__name__])[0][:100]
        raise MnistlensError(
            f"{path} is not a mnistlens checkpoint (torch could not read it: {reason})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MnistlensError(
            f"{path} is a torch file but not a mnistlens checkpoint (no format {FORMAT!r})"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise MnistlensError(
            f"{path} has checkpoint format {payload['format_version']}, newer than this "
            f"mnistlens reads ({FORMAT_VERSION}); upgrade mnistlens"
        )
    return payload


def load_checkpoint(path_or_name: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Load a checkpoint into its model, in eval mode: -> (model, metadata).

    `path_or_name` is a file path, or a shipped checkpoint's name (`"cnn.pt"` or `"cnn"`).
    `metadata` holds what the checkpoint recorded (accuracy, seed, hyper-parameters,
    versions, ...) plus `arch`, `arch_kwargs` and `path`.

        >>> model, meta = load_model("cnn.pt")
        >>> meta["test_accuracy"] > 0.99
        True
    """
    path = resolve_checkpoint(path_or_name)
    payload = read_checkpoint(path)
    model = models.build(payload["arch"], **payload["arch_kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise MnistlensError(
            f"{path}: weights do not fit architecture {payload['arch']!r} "
            f"({str(err).splitlines()[0][:100]})"
        ) from None
    model.eval()
    metadata = dict(
        payload.get("metadata", {}),
        arch=payload["arch"],
        arch_kwargs=payload["arch_kwargs"],
        path=str(path),
    )
    return model, metadata
