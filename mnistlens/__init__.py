"""mnistlens: open the black box of MNIST classifiers.

Train reference models, explain their predictions, measure the explanations.

    >>> import mnistlens
    >>> model, meta = mnistlens.load("cnn.pt")  # or a .pt2, or a state_dict + class
    >>> images, labels = mnistlens.load_mnist("test")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mnistlens.errors import MnistlensError  # no torch behind it, so no reason to defer it

__version__ = "0.1.0"

# The names below import torch, which takes a second or two; they are resolved on first use
# (PEP 562 module __getattr__) so that `import mnistlens` and `mnistlens --help` do not pay.
_LAZY = {
    "load": "loading",
    "load_model": "loading",
    "save_checkpoint": "loading.checkpoint",
    "get_test_image": "data",
    "load_mnist": "data",
}

if TYPE_CHECKING:  # what type checkers and editors see
    from mnistlens.data import get_test_image, load_mnist
    from mnistlens.loading import load, load_model
    from mnistlens.loading.checkpoint import save_checkpoint

__all__ = [
    "__version__",
    "MnistlensError",
    "get_test_image",
    "load",
    "load_mnist",
    "load_model",
    "save_checkpoint",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
