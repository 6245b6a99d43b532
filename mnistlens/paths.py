"""Where mnistlens finds things: shipped checkpoints, the app, the user cache."""

from __future__ import annotations

import os
from pathlib import Path

from mnistlens.errors import MnistlensError

CHECKPOINT_ENV_VAR = "MNISTLENS_CHECKPOINTS"
SHIPPED_CACHE_ENV_VAR = "MNISTLENS_SHIPPED_CACHE"


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


def cache_dir() -> Path:
    """The user cache directory used when neither an argument nor MNISTLENS_DATA is set."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnistlens"


def shipped_cache_dir() -> Path | None:
    """Results shipped with the checkpoints, laid out as the user cache is: read, never
    written, by the library. $MNISTLENS_SHIPPED_CACHE if set (empty: none, so that
    everything is computed), else `checkpoint_dir()/cache`."""
    if SHIPPED_CACHE_ENV_VAR in os.environ:
        return (
            Path(os.environ[SHIPPED_CACHE_ENV_VAR]) if os.environ[SHIPPED_CACHE_ENV_VAR] else None
        )
    return checkpoint_dir() / "cache"


def shipped_counterpart(path: Path) -> Path | None:
    """The shipped copy of a file in the user cache (`cache_dir()`), or None for a path
    elsewhere or with no shipped cache: a cache file is looked up there when the user's
    cache has none."""
    shipped = shipped_cache_dir()
    try:
        return None if shipped is None else shipped / Path(path).relative_to(cache_dir())
    except ValueError:
        return None
