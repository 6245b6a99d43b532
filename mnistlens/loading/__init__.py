"""Loading a model, whatever its file: one `load(path)` for every supported format.

The path runs one way, top to bottom:

1. `formats.py` tells what the file holds from its bytes (`sniff`) and reads it:
   a mnistlens checkpoint (`checkpoint.py`, data only), a torch.export program
   (`pt2.py`, checked before torch reads it), or a state_dict with the user's class or a
   registered architecture; a model that wants other shapes is wrapped (`adapter.py`);
2. `conventions.py` makes a user's model follow the library's conventions: a final
   softmax removed, functional ReLUs made modules (both with `graph`), and the input
   convention ([0, 1], MNIST-standardized or 0-255 pixels) chosen.

    >>> model, meta = load("cnn.pt")                       # a shipped checkpoint
    >>> model, meta = load("net.pt2")                      # a torch.export program
    >>> model, meta = load("net.pt", model_code="net.py:Net")
"""

from __future__ import annotations

import os

from torch import nn

from mnistlens.errors import MnistlensError
from mnistlens.loading.adapter import InputAdapter
from mnistlens.loading.conventions import (
    CONVENTIONS,
    choose_convention,
    to_logits_and_relu_modules,
    unwrap,
)
from mnistlens.loading.formats import load_any


def load(
    path: str | os.PathLike,
    *,
    model_code: str | None = None,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    input: str = "auto",  # noqa: A002 - the CLI option is --input
    data_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, dict]:
    """Load any supported model file and adapt it: -> (model, metadata).

    The model takes (N, 1, 28, 28) float32 in [0, 1] and returns (N, 10) logits where
    the file's model could be rewritten to (metadata says what was done). mnistlens
    checkpoints come back as they are.

    Args:
        model_code, arch, arch_kwargs: for state_dict files (see `formats.load_any`).
        input: "auto", or one of CONVENTIONS: how the model expects its pixels.
        data_dir: MNIST, for input="auto" (the first AUTO_SAMPLE test images).

    metadata adds to `formats.load_any`'s: `input` (the convention used),
    `input_reason`, `input_accuracies` (auto only), `outputs` (what the file's model
    returns), `output_removed` (a final softmax taken off), `relu_modules` (functional
    ReLUs rewritten) and `notes` (what could not be done, one line each).
    """
    if input != "auto" and input not in CONVENTIONS:
        raise MnistlensError(
            f"unknown input convention {input!r}; choose auto or one of {', '.join(CONVENTIONS)}"
        )
    model, meta = load_any(path, model_code=model_code, arch=arch, arch_kwargs=arch_kwargs)
    if meta["format"] == "mnistlens-checkpoint":
        if input not in ("auto", "unit"):
            raise MnistlensError(
                f"{meta['path']} is a mnistlens checkpoint: it takes [0, 1] pixels and "
                "normalizes inside; drop --input"
            )
        return model, dict(meta, input="unit", input_reason="a mnistlens checkpoint")
    net, shape, per_image = unwrap(model)
    net, meta = to_logits_and_relu_modules(net, meta)
    if input == "auto":
        input, reason, accuracies = choose_convention(net, shape, per_image, data_dir)
        meta["input_accuracies"] = accuracies
    else:
        reason = "chosen by the user"
    scale, normalize = CONVENTIONS[input]
    model = InputAdapter(net, shape, normalize, per_image, scale).eval()
    return model, dict(meta, input=input, input_reason=reason, normalize=normalize)


load_model = load  # the name mnistlens has used since its first release

__all__ = ["CONVENTIONS", "load", "load_model"]
