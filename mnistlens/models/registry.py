"""Model builders registered by name: build(cnn, ...), list_models()."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mnistlens.errors import MnistlensError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model builder to the registry under `name`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_models() -> list[str]:
    """Names accepted by `build`, sorted."""
    return sorted(_REGISTRY)


def build(arch: str, **kwargs) -> nn.Module:
    """Build a freshly initialised model by registry name, e.g. `build("cnn", hidden=128)`."""
    if arch not in _REGISTRY:
        raise MnistlensError(f"unknown architecture {arch!r}; choose one of {list_models()}")
    try:
        return _REGISTRY[arch](**kwargs)
    except TypeError as err:  # an unknown or misspelled keyword
        raise MnistlensError(f"bad arguments for architecture {arch!r}: {err}") from None
