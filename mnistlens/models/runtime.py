"""Running any model: layers by name, eval mode without side effects, the fast inference copy."""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator

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


# Copies kept per model and kind (`kept_copy`): {model: {kind: (the state of the
# model's weights and settings when copied, the copy)}}. `predict_logits` and the
# gradient methods ask for them: explaining one digit predicts some ten small batches
# (the deletion and insertion curves) and prepares the model twice, and a fresh deep
# copy each time was a third of it (benchmarks/README.md). A kept copy goes only to
# callers that neither hook it nor change its mode or weights, so threads can share it.
_KEPT: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, nn.Module]]] = (
    weakref.WeakKeyDictionary()
)
_KEPT_LOCK = threading.Lock()
_SETTINGS = (int, float, bool, str, tuple, type(None))


def _weights_state(model: nn.Module) -> tuple:
    """What changes when the model's function does: each tensor's identity, storage and
    version (bumped by every in-place change: an optimizer's step, `load_state_dict`),
    and each module's own settings (a conv's padding mode, a temperature set by hand)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    settings = tuple((type(m), _settings(m)) for m in model.modules())
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors), settings


def _settings(module: nn.Module) -> list[tuple[str, object]]:
    """A module's plain attributes but its training flag (a kept copy is in eval mode,
    whatever the model's mode)."""
    return [(k, v) for k, v in vars(module).items() if k != "training" and isinstance(v, _SETTINGS)]


def has_hooks(model: nn.Module) -> bool:
    """Whether any submodule has a forward or backward hook (a copy would carry it)."""
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in model.modules()
    )


def kept_copy(model: nn.Module, kind: str, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """`make(model)`, an eval-mode copy, kept per model and `kind` and made again when the
    model's weights or settings have changed since. For callers that never hook the
    copy nor change its mode or weights: other threads may be using it."""
    state = _weights_state(model)
    with _KEPT_LOCK:
        found = _KEPT.get(model, {}).get(kind)
    if found is not None and found[0] == state:
        return found[1]
    made = make(model)
    with _KEPT_LOCK:
        _KEPT.setdefault(model, {})[kind] = (state, made)
    return made


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last).eval()


def for_inference(
    model: nn.Module, n_images: int | None = None, *, device: Device = "cpu", keep: bool = False
) -> tuple[nn.Module, int]:
    """The fastest way to run `model` forward on `device` over `n_images` images (None:
    many): -> (module on the device, rows per pass).

    On a GPU: the model there (`device.model_on`: a copy if it is elsewhere) and
    `device.GPU_ROWS` rows a pass. On the CPU, a model with convolutions (a 4-D weight)
    gets a channels-last copy (the layout CPU convolutions run fastest in; the caller's
    model is untouched) and FAST_ROWS rows per pass; layer names are kept, so hooks by
    name work on the copy. Any other model, one that cannot be copied, or fewer than
    COPY_FROM_ROWS images run on the model as it is, 1000 rows per pass.

    keep: reuse the copy made for these weights before (kept per model, in eval mode;
    only for a caller that never hooks the module it gets nor changes its mode).
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
        if keep and not has_hooks(model):
            return kept_copy(model, "channels-last", _channels_last), FAST_ROWS
        fast = copy.deepcopy(model)
    except Exception:  # a module that cannot be copied still runs, only slower
        return model, 1000
    return fast.to(memory_format=torch.channels_last), FAST_ROWS
