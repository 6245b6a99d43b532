"""The model-level results the explorer keeps on disk, beyond its process's memory.

`@kept("model_name")`, under `@st.cache_data`, keeps a function's result with
`mnistlens.results`: Streamlit's cache answers the reruns of this process, the user's
cache on disk a restarted server, and the shipped cache (`mnistlens app --precompute`,
run at release time) a fresh server on a fresh machine, so that its first visitors do
not wait for the sanity checks, measurements, comparisons and stress tests of the
shipped models (benchmarks/README.md, "Many users at once").

The key is the function's name, its arguments, the named model arguments with their
weights' SHA-256, and the MNIST files' checksums. Only the shipped models'
results are kept on disk, and only of what every user sees: an upload (a model, a
concept's pictures) is the session's alone, and so is what it computes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

from mnistlens import data, results

# isort: split
import catalog
from session import get_model

F = TypeVar("F", bound=Callable)


@functools.cache
def data_key() -> tuple[tuple[str, str], ...]:
    """The checksums of the MNIST files every kept result was computed from."""
    return tuple(sorted(data.data_checksums().items()))


@functools.cache
def _shipped() -> frozenset[str]:
    """The names of the shipped models: checkpoint files and series members."""
    return frozenset(catalog.shipped_models()) | frozenset(catalog.compare_choices())


def _weights(names: str | tuple[str, ...]) -> tuple | None:
    """Each model name (one, or a tuple of them) with its weights' SHA-256: the name
    says which is which to the arguments that name one of them (the Compare page's a
    and b), the weights what was computed. None if any is not a shipped model."""
    if isinstance(names, str):
        if names not in _shipped():
            return None
        return names, results.weights_key(get_model(names)[0])
    found = tuple(_weights(n) for n in names)
    return None if None in found else found


def kept(*model_args: str, unless: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Keep the decorated function's result on disk, keyed by its arguments, those
    named in `model_args` (model names, or tuples of them) with their weights; not when
    an argument named in `unless` holds anything (a user's own pictures)."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if any(bound.arguments[name] for name in unless):
                return fn(*args, **kwargs)  # the user's own: computed, not kept
            key = []
            for name, value in bound.arguments.items():
                if name in model_args:
                    value = _weights(value)
                    if value is None:  # an upload: computed, not kept
                        return fn(*args, **kwargs)
                key.append((name, value))
            key.append(("data", data_key()))
            call = {"module": fn.__module__, "function": fn.__name__}
            call["arguments"] = dict(bound.arguments)
            return results.kept(fn.__name__, tuple(key), lambda: fn(*args, **kwargs), call)

        return wrapper  # type: ignore[return-value]

    return decorate
