"""Model builders registered by name: build(cnn, ...), list_models().

Each builder has a task: "classify" (images -> 10 logits: every classifier the
library explains) or "reconstruct" (images -> images: the autoencoder that tells a
plausible digit from noise, for counterfactuals). `list_models()` lists the
classifiers, since that is what a user picks a model from.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mnistlens.errors import MnistlensError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, str] = {}
TASKS = ("classify", "reconstruct")


def register(
    name: str, task: str = "classify"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model builder to the registry under `name`, for `task`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {TASKS}")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        _TASKS[name] = task
        return builder

    return wrap


def list_models(task: str | None = "classify") -> list[str]:
    """Names accepted by `build` for `task` (None: every task), sorted."""
    return sorted(n for n in _REGISTRY if task is None or _TASKS[n] == task)


def task_of(arch: str) -> str:
    """What a registered architecture does: "classify" or "reconstruct"."""
    if arch not in _REGISTRY:
        raise MnistlensError(f"unknown architecture {arch!r}; choose one of {list_models(None)}")
    return _TASKS[arch]


def build(arch: str, **kwargs) -> nn.Module:
    """Build a freshly initialised model by registry name, e.g. `build("cnn", hidden=128)`."""
    if arch not in _REGISTRY:
        raise MnistlensError(f"unknown architecture {arch!r}; choose one of {list_models(None)}")
    try:
        return _REGISTRY[arch](**kwargs)
    except TypeError as err:  # an unknown or misspelled keyword
        raise MnistlensError(f"bad arguments for architecture {arch!r}: {err}") from None
