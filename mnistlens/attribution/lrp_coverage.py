"""What layer-wise relevance propagation runs on, and whether a rule covers every layer.

- `unwrapped(model)`: the net the rules attach to, inside mnistlens' wrappers (a loaded
  model's `InputAdapter`, `explain.contrast_maps`' `LogitDifference`), with a
  torch.export program's linear and conv calls made modules;
- `lrp_problem(model)`: why LRP cannot explain a model, naming the layer, or None;
- `import_zennit()`: Zennit, imported without the torchvision it does not need here.
"""

from __future__ import annotations

import operator
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from mnistlens.graph import trace, with_layer_modules
from mnistlens.loading.adapter import InputAdapter
from mnistlens.models import Normalize

# Layers with a rule (or a relevance-neutral role), and the calls allowed between them.
RULED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_POOLS += (nn.AdaptiveAvgPool2d,)
_NEUTRAL = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout2d, Normalize)
_aten = torch.ops.aten
_FUNCTIONS = {
    F.relu, torch.relu, "relu", torch.flatten, "flatten", "view", "reshape", "size",
    "contiguous", F.max_pool2d, F.dropout, operator.getitem, getattr,
    # the same in a torch.export program (.pt2), once `with_layer_modules` made its
    # linear and conv calls modules
    _aten.relu.default, _aten.flatten.using_ints, _aten.view.default,
    _aten.reshape.default, _aten.max_pool2d.default, _aten.dropout.default,
}  # fmt: skip
COVERED = (
    "Linear, Conv1d/Conv2d, activations (ReLU, Tanh, ...), max and average pooling, "
    "batch norm right after a conv or linear layer, Flatten, Dropout, Identity, Normalize"
)


_ZENNIT_IMPORT = threading.Lock()


def import_zennit() -> ModuleType:
    """Zennit, imported (once) without its torchvision canonizers.

    Zennit's package __init__ imports `zennit.torchvision` (canonizers for torchvision's
    ResNet and VGG), which imports torchvision: about a second of every command's
    start-up that an MNIST model never uses (`mnistlens.data` avoids torchvision for the
    same reason). A placeholder stands in for that submodule while the package loads and
    is removed after, so a later `import zennit.torchvision` loads the real one.
    Imported in the functions that need it, never at the top: importing mnistlens
    should not pay for Zennit."""
    with _ZENNIT_IMPORT:
        if "zennit" not in sys.modules:
            placeholder = ModuleType("zennit.torchvision")
            sys.modules["zennit.torchvision"] = placeholder
            try:
                import zennit
            finally:
                if sys.modules.get("zennit.torchvision") is placeholder:
                    del sys.modules["zennit.torchvision"]
            if getattr(zennit, "torchvision", None) is placeholder:
                del zennit.torchvision
        import zennit

        return zennit


def _activations() -> tuple[type, ...]:
    return import_zennit().types.Activation.__subclass__


def _prefix(name: str) -> str:
    return f"lrp cannot explain this model: {name}"


def _module_problem(name: str, module: nn.Module, calls: int) -> str | None:
    """Why LRP has no rule for one called module, or None."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return None  # checked against the layer before it in `_batchnorm_problem`
    if not isinstance(module, RULED + _POOLS + _NEUTRAL + _activations()):
        return _prefix(
            f"it has no rule for layer {name!r} ({type(module).__name__}); covered: {COVERED}"
        )
    if calls > 1 and not isinstance(module, _NEUTRAL):
        # Zennit keeps one input per hooked module: a second call overwrites the first's.
        return _prefix(f"layer {name!r} is called {calls} times; give each call its own module")
    return None


def _batchnorm_problem(graph_module, node, leaves: list[nn.Module]) -> str | None:
    """A batch norm is covered when the canonizer can merge it: its input is a conv or
    linear layer feeding nothing else, which is also the leaf module just before it
    (SequentialMergeBatchNorm pairs modules in definition order)."""
    before = node.args[0] if node.args else None
    module = graph_module.get_submodule(node.target)
    index = next(i for i, leaf in enumerate(leaves) if leaf is module)
    if (
        getattr(before, "op", None) == "call_module"
        and isinstance(graph_module.get_submodule(before.target), RULED)
        and len(before.users) == 1
        and index > 0
        and leaves[index - 1] is graph_module.get_submodule(before.target)
    ):
        return None
    return _prefix(
        f"batch norm {node.target!r} does not directly follow a conv or linear layer, so it "
        "cannot be merged into one and LRP has no rule for it alone"
    )


def lrp_problem(model: nn.Module) -> str | None:
    """Why LRP cannot explain `model` (one line naming the layer), or None.

    Every step of the forward pass (a torch.fx trace) must be a layer with a rule
    (`COVERED`) or a call that does not mix pixels' relevance (ReLU, flatten, max
    pooling, dropout), checked on the net as LRP runs it (`unwrapped`: a torch.export
    program's linear and conv calls made modules). An untraceable model cannot be
    checked, and is refused."""
    net = unwrapped(model).net
    graph_module = trace(net)
    if graph_module is None:
        return _prefix("torch.fx cannot trace it, so no one can check that every layer has a rule")
    leaves = list(import_zennit().core.collect_leaves(net))
    nodes = list(graph_module.graph.nodes)
    calls = Counter(node.target for node in nodes if node.op == "call_module")
    aten_calls = [n for n in nodes if isinstance(n.target, torch._ops.OpOverload)]
    if unruled := [n for n in aten_calls if n.target not in _FUNCTIONS]:
        return _prefix(
            f"it is a torch.export program (.pt2) whose step {unruled[0].name!r} "
            f"({unruled[0].target}) has no rule; covered: {COVERED}"
        )
    for node in nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if any(issubclass(cls, Normalize) for _, cls in stack.values()):
            continue  # inside Normalize, which passes relevance through as a whole
        if node.op == "call_module":
            module = graph_module.get_submodule(node.target)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                problem = _batchnorm_problem(graph_module, node, leaves)
            else:
                problem = _module_problem(node.target, module, calls[node.target])
            if problem:
                return problem
        elif node.op == "get_attr" or (
            node.op in ("call_function", "call_method") and node.target not in _FUNCTIONS
        ):
            return _prefix(_unruled_call(node))
    return None


def _unruled_call(node) -> str:
    """What to name for a call no rule covers: the custom layer it is in, else the call."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if stack:
        path, cls = stack[-1]
        return f"it has no rule for layer {path!r} ({cls.__name__}); covered: {COVERED}"
    if node.op == "get_attr":
        return f"it uses {node.target!r} outside a layer module, where no rule can reach it"
    what = getattr(node.target, "__name__", str(node.target))
    return f"it has no rule for the operation {node.name!r} ({what}); covered: {COVERED}"


@dataclass(frozen=True)
class Parts:
    """What the rules run on: `net`, fed `prepare(images)` (one image at a time with
    per_image), explaining logit a - logit b for a `contrast` (a, b), else the target."""

    net: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    per_image: bool = False
    contrast: tuple[int, int] | None = None


def unwrapped(model: nn.Module) -> Parts:
    """The net the rules attach to, inside the wrappers mnistlens puts around it.

    A user's model loaded by `mnistlens.load` comes in an `InputAdapter` that scales,
    standardizes and reshapes the pixels: elementwise and a reshape, so relevance
    passes through it unchanged, and the rules attach to the net inside.
    `explain.contrast_maps` wraps a model to output logit a - logit b
    (`LogitDifference`): a subtraction no rule covers, so the net inside is explained
    from both logits at once instead."""
    from mnistlens.explain import LogitDifference  # local: explain imports attribution

    contrast = None
    if isinstance(model, LogitDifference):
        contrast, model = (int(model.a), int(model.b)), model.model
    if isinstance(model, InputAdapter):
        adapter = model

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return adapter.norm(x * adapter.scale).reshape(x.shape[0], *adapter.shape)

        net = with_layer_modules(adapter.net)  # a .pt2 program's layers as modules
        return Parts(net, prepare, adapter.per_image, contrast)
    return Parts(with_layer_modules(model), contrast=contrast)
