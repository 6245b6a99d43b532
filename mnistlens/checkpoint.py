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
import re
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from . import models
from .errors import MnistlensError

FORMAT = "mnistlens-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_ENV_VAR = "MNISTLENS_CHECKPOINTS"


def checkpoint_dir() -> Path:
    """Where shipped checkpoints live: $MNISTLENS_CHECKPOINTS, else inside the installed
    package (`mnistlens/shipped/`, from a wheel), else the source tree's `checkpoints/`."""
    if os.environ.get(CHECKPOINT_ENV_VAR):
        return Path(os.environ[CHECKPOINT_ENV_VAR])
    installed = Path(__file__).resolve().parent / "shipped"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "checkpoints"


def app_path() -> Path:
    """The explorer app's entry script: inside the installed package (`mnistlens/app/`),
    else the source tree's `apps/explore.py`."""
    installed = Path(__file__).resolve().parent / "app" / "explore.py"
    if installed.is_file():
        return installed
    return Path(__file__).resolve().parent.parent / "apps" / "explore.py"


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """The path as given if it is a file, else a bare name (`cnn.pt`, `cnn`) in checkpoint_dir()."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    if len(path.parts) == 1:
        for candidate in (checkpoint_dir() / path.name, checkpoint_dir() / f"{path.name}.pt"):
            if candidate.is_file():
                return candidate
    shipped = sorted(p.name for p in checkpoint_dir().glob("*.pt"))
    raise MnistlensError(
        f"no checkpoint {str(path_or_name)!r}: not a file, nor a name in {checkpoint_dir()}"
        f" (shipped: {', '.join(shipped) or 'none'}); train one with `mnistlens train`"
    )


# Temporaries are named `.NAME.RANDOM.PID.tmp`: the writer's process id lets a later
# write tell a temporary abandoned by a killed writer (SIGKILL cannot be cleaned up
# after) from one still being written. The pid goes last, after mkstemp's random part
# (which never holds a dot), so that another target's temporary, `.NAME.X.RANDOM.PID.tmp`,
# never parses as one of NAME's. Temporaries from before pids, `.NAME.RANDOM.tmp`, have
# no known writer: they count as abandoned once untouched for OLD_TEMPORARY_SECONDS.
OLD_TEMPORARY_SECONDS = 3600


def _remove_abandoned_temporaries(path: Path) -> None:
    """Delete what killed writers of `path` left beside it: temporaries whose process is
    gone, and old-format ones untouched for an hour. Keeps those of living processes
    (this one, another, another user's), other targets' and any name that does not parse.
    Best effort: a failure to list or remove is ignored, it never makes a write fail."""
    prefix, suffix = f".{path.name}.", ".tmp"
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        middle = name[len(prefix) : -len(suffix)]
        with_pid = re.fullmatch(r"[^.]+\.([0-9]+)", middle)
        try:
            if with_pid:
                abandoned = not _process_exists(int(with_pid[1]))
            elif re.fullmatch(r"[^.]+", middle):  # old format: no pid
                age = time.time() - os.stat(path.parent / name).st_mtime
                abandoned = age > OLD_TEMPORARY_SECONDS
            else:
                continue
            if abandoned:
                os.unlink(path.parent / name)
        except OSError:
            pass  # gone already, a folder, no rights ...: leave it


def _process_exists(pid: int) -> bool:
    """Whether process `pid` exists; when unsure (not POSIX, odd pid), True."""
    if os.name != "posix":  # on Windows os.kill(pid, 0) would terminate the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: alive, another user's
        return True
    return True


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(file_object)` on a temp file beside `path`, then rename it into place.

    The temporary is hidden, `.NAME.RANDOM.PID.tmp` (PID: this process's id). A writer
    killed mid-write leaves it behind; each write of `path` first deletes those of
    `path`'s temporaries whose writer process no longer exists (and old-format ones, with
    no pid, over an hour old), never those of a living writer or of another target.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_temporaries(path)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp"
        )
    except OSError as err:  # a read-only directory, a file where a folder should be, ...
        raise MnistlensError(
            f"cannot write {path} ({err.strerror or type(err).__name__}); choose a writable "
            "location"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # mkstemp makes the file private (0600); give it normal rights
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def load_model(path_or_name: str | os.PathLike) -> tuple[nn.Module, dict]:
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
