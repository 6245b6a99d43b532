"""Writing files so that a crash never leaves half of one."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from mnistlens.errors import MnistlensError

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


def save_npy(path: str | os.PathLike, array: Any) -> Path:
    """Write a numpy array as .npy atomically (temp file + rename); returns the path."""
    import numpy as np

    from mnistlens.io import atomic_write

    return atomic_write(path, lambda f: np.save(f, array))
