"""Running any model: layers by name, eval mode without side effects, the fast inference copy."""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator

import torch
from torch import nn

from mnistlens.device import Device, model_on, resolve_device, rows_per_pass
from mnistlens.errors import MnistlensError


def layer_names(model: nn.Module) -> list[str]:
    """Names of every addressable submodule (as `model.get_submodule` accepts them)."""
    return [name for name, _ in model.named_modules() if name]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the model's nn.Conv2d layers, in order (empty for a model without any)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def is_convolutional(model: nn.Module) -> bool:
    """Whether the model has a convolution's weight (a 4-D parameter) anywhere."""
    return any(p.dim() == 4 for p in model.parameters())


def modules_of(models: dict) -> dict[str, nn.Module]:
    """name -> module, from name -> module or name -> (module, metadata) as
    `mnistlens.load` returns them."""
    return {name: m[0] if isinstance(m, tuple) else m for name, m in models.items()}


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`; an unknown name lists the valid ones."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise MnistlensError(
            f"model has no layer {name!r}; valid layers: {', '.join(layer_names(model))}"
        ) from None


@contextlib.contextmanager
def evaluating(model: nn.Module, freeze: bool = False) -> Iterator[nn.Module]:
    """Eval mode (and, with freeze=True, parameters not requiring grad) inside the block.

    Each submodule's own training flag and each parameter's requires_grad are put
    back on exit, exactly as they were: restoring only the top module's flag with
    `model.train(flag)` would overwrite every submodule's (a wrapper around a model
    in eval mode would leave it in training mode).
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    if freeze:
        for p, _ in grads:
            p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, flag in modes:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)


# Rows per forward pass for the fast copy below: a batch whose activations fit in the
# CPU's cache beats one big batch by 2-4x for the CNNs (benchmarks/bench_predict.py).
FAST_ROWS = 64


# Fewer rows than this run on the model as it is: for a few images, making the copy
# costs more than it saves (benchmarks/bench_predict.py).
COPY_FROM_ROWS = 16


def for_inference(
    model: nn.Module, n_images: int | None = None, *, device: Device = "cpu"
) -> tuple[nn.Module, int]:
    """The fastest way to run `model` forward on `device` over `n_images` images (None:
    many): -> (module on the device, rows per pass).

    On a GPU: the model there (`device.model_on`: a copy if it is elsewhere) and
    `device.GPU_ROWS` rows a pass. On the CPU, a model with convolutions (a 4-D weight)
    gets a channels-last copy (the layout CPU convolutions run fastest in; the caller's
    model is untouched) and FAST_ROWS rows per pass; layer names are kept, so hooks by
    name work on the copy. Any other model, one that cannot be copied, or fewer than
    COPY_FROM_ROWS images run on the model as it is, 1000 rows per pass.
    """
    dev = resolve_device(device)
    model = model_on(model, dev)  # the model itself when it is there already
    if dev.type != "cpu":
        return model, rows_per_pass(dev, 0)
    if n_images is not None and n_images < COPY_FROM_ROWS:
        return model, 1000
    tensors = itertools.chain(model.parameters(), model.buffers())
    if not any(t.dim() == 4 for t in tensors):
        return model, 1000
    try:
        fast = copy.deepcopy(model)
    except Exception:  # a module that cannot be copied still runs, only slower
        return model, 1000
    return fast.to(memory_format=torch.channels_last), FAST_ROWS
