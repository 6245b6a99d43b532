"""Rewrites that keep a model's function and make it explainable or fast.

- `with_relu_modules`: functional ReLUs become `nn.ReLU` modules, one per call, as
  Captum's DeepLIFT and guided backprop need;
- `strip_output_softmax`: a final (log-)softmax removed, so methods attribute logits;
- `fold_batchnorm`: batch norm folded into the convolution before it (at eval time it
  is an affine map per channel);
- `prepare_for_explanation`: the fast frozen copy every gradient method runs on (batch
  norm folded, channels-last, no parameter gradients);
- `with_layer_modules`: a torch.export program's functional layers become modules, for
  rules that attach to modules (LRP).
"""

from __future__ import annotations

import copy
import weakref

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mnistlens.errors import MnistlensError
from mnistlens.graph.analysis import node_kind, trace
from mnistlens.models import Normalize
from mnistlens.models.runtime import has_hooks, kept_copy

_aten = torch.ops.aten

_RELU_CALLS = (F.relu, torch.relu, "relu", _aten.relu.default)


def with_relu_modules(model: nn.Module) -> nn.Module:
    """The same function with every ReLU an `nn.ReLU` module of its own.

    Captum's DeepLIFT and guided backprop override the gradient of ReLU *modules*
    only: a model that calls `F.relu` (as PyTorch's examples/mnist does) silently
    gets plain gradients under those names. Functional ReLUs become modules named
    after their fx node (`relu`, `relu_1`, ...), and a ReLU module called at several
    places gets one copy per call (its hooks would otherwise fire twice).
    Returns `model` itself when nothing needs changing; raises MnistlensError when
    the model cannot be traced (then no one can check its ReLUs).
    """
    graph_module = trace(model)
    if graph_module is None:
        raise MnistlensError(
            "this model cannot be traced by torch.fx, so its ReLUs cannot be checked: "
            "DeepLIFT and guided backprop would silently give plain gradients; use "
            "another method, or write each ReLU as an nn.ReLU module"
        )
    graph = graph_module.graph
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    changed = False
    used: set[str] = set()
    for node in list(graph.nodes):
        is_relu_call = node.op in ("call_function", "call_method") and node.target in _RELU_CALLS
        shared = (
            node.op == "call_module"
            and isinstance(graph_module.get_submodule(node.target), nn.ReLU)
            and calls[node.target] > 1
        )
        if shared and node.target not in used:
            used.add(node.target)  # the first call keeps the original module
            continue
        if is_relu_call or shared:
            name = node.name
            while hasattr(graph_module, name):
                name += "_"
            graph_module.add_submodule(name, nn.ReLU())
            with graph.inserting_after(node):
                replacement = graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(replacement)
            graph.erase_node(node)
            changed = True
    if not changed:
        return model
    graph.lint()
    graph_module.recompile()
    return graph_module


def strip_output_softmax(model: nn.Module) -> tuple[nn.Module, str]:
    """Remove a final softmax / log-softmax so methods attribute logits.

    -> (model, output kind): "logits" (nothing to remove), "log_softmax" or "softmax"
    (removed; the returned model gives the logits before it), or "unknown" (the model
    cannot be traced). Attributing log-probabilities mixes in every other class, and
    DeepLIFT's completeness holds for the logits only.
    """
    graph_module = trace(model)
    if graph_module is None:
        return model, "unknown"
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    last = output.args[0]
    if not isinstance(last, fx.Node):
        return model, "unknown"
    kind = None
    if last.op == "call_module":
        module = graph_module.get_submodule(last.target)
        if isinstance(module, nn.LogSoftmax):
            kind = "log_softmax"
        elif isinstance(module, nn.Softmax):
            kind = "softmax"
    elif node_kind(last) == "softmax":
        name = getattr(last.target, "__name__", str(last.target))
        kind = "log_softmax" if "log" in name else "softmax"
    if kind is None:
        return model, "logits"
    output.args = (last.args[0],)
    graph_module.graph.erase_node(last)
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module, kind


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy in eval mode with each BatchNorm2d that directly follows a Conv2d folded
    into that conv: the same function (BN is affine at eval time), one layer less per
    stage. Layer names are kept (the BN becomes Identity)."""
    model = copy.deepcopy(model).eval()
    graph_module = trace(model)
    if graph_module is None:
        return model
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not node.args:
            continue
        previous = node.args[0]
        if not isinstance(previous, fx.Node) or previous.op != "call_module":
            continue
        conv = graph_module.get_submodule(previous.target)
        bn = graph_module.get_submodule(node.target)
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(bn, nn.BatchNorm2d)
            and len(previous.users) == 1  # the conv's output feeds only this BN
        ):
            _replace(model, previous.target, fuse_conv_bn_eval(conv, bn))
            _replace(model, node.target, nn.Identity())
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# The copies made below. A method handed one (SmoothGrad passes its copy to its base
# method once per image) uses it as it is instead of copying and tracing it again.
_PREPARED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def prepare_for_explanation(model: nn.Module, keep: bool = False) -> nn.Module:
    """A fast, frozen copy for input-gradient methods: BN folded, channels-last, no grads.
    A model this function made is returned as it is.

    keep: the copy made for these weights before, if any (`models.kept_copy`), for a
    method that never hooks it (saliency, integrated gradients; not guided backprop,
    whose hooks on the ReLUs another thread's pass would run through)."""
    if model in _PREPARED:
        return model
    if keep and not has_hooks(model):
        return kept_copy(model, "prepared", _prepare)
    return _prepare(model)


def _prepare(model: nn.Module) -> nn.Module:
    fast = fold_batchnorm(model).to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    _PREPARED.add(fast)
    return fast


# ---------------------------------------------------------------- layers as modules


def _constant(graph_module: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor a get_attr node reads (the program's own weight), else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = graph_module
    for part in node.target.split("."):
        value = getattr(value, part)
    return value.detach() if isinstance(value, torch.Tensor) else None


def _layer(graph_module: fx.GraphModule, node) -> nn.Module | None:
    """The module an `aten.linear` / `aten.conv2d` call on constant weights computes."""
    args = list(node.args)
    weight = _constant(graph_module, args[1])
    bias_arg = args[2] if len(args) > 2 else node.kwargs.get("bias")
    bias = _constant(graph_module, bias_arg)
    if weight is None or (bias_arg is not None and bias is None):
        return None
    if node.target == _aten.linear.default:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        defaults = [[1, 1], [0, 0], [1, 1], 1]  # stride, padding, dilation, groups
        stride, padding, dilation, groups = (args[3:] + defaults[len(args) - 3 :])[:4]
        layer = nn.Conv2d(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=tuple(stride),
            padding=tuple(padding),
            dilation=tuple(dilation),
            groups=groups,
            bias=bias is not None,
        )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.to(weight.device)


def _batchnorm(graph_module, node, layers: dict[str, nn.Module]) -> nn.BatchNorm2d | None:
    """An eval-mode `aten.batch_norm` on the program's own statistics, right after one of
    the new conv modules, as a module."""
    x, weight, bias, mean, var, training, _momentum, eps = node.args[:8]
    conv = layers.get(x.target) if isinstance(x, fx.Node) and x.op == "call_module" else None
    stats = [_constant(graph_module, a) for a in (weight, bias, mean, var)]
    if training or not isinstance(conv, nn.Conv2d) or None in stats:
        return None
    bn = nn.BatchNorm2d(len(stats[2]), eps=eps).eval()
    with torch.no_grad():
        targets = (bn.weight, bn.bias, bn.running_mean, bn.running_var)
        for tensor, value in zip(targets, stats, strict=True):
            tensor.copy_(value)
    return bn.to(stats[2].device)


def _normalize(graph_module, node) -> Normalize | None:
    """`(x - mean) / std` by scalar constants, as one Normalize module (the sub node)."""
    users = list(node.users)
    mean = _constant(graph_module, node.args[1])
    if len(users) != 1 or users[0].target != _aten.div.Tensor or mean is None:
        return None
    std = _constant(graph_module, users[0].args[1])
    if std is None or mean.numel() != 1 or std.numel() != 1:
        return None
    return Normalize(float(mean), float(std)).to(mean.device)


def with_layer_modules(model: nn.Module) -> nn.Module:
    """The same function with a torch.export program's layers as modules, for rules that
    attach to modules (LRP's): each `aten.linear` / `aten.conv2d` call on the program's
    own weights becomes an nn.Linear / nn.Conv2d (named after its weight: `fc1`), an
    eval-mode `aten.batch_norm` an nn.BatchNorm2d (merged into the conv before it by the
    same canonizer as a module's), and `(x - mean) / std` by constants `Normalize`. The
    modules are registered in the order they run (rules for "the first layer" pick the
    first, and the canonizer pairs a batch norm with the module before it). Returns
    `model` itself when nothing changes or it cannot be traced."""
    graph_module = trace(model)
    if graph_module is None:
        return model
    graph = graph_module.graph
    layers: dict[str, nn.Module] = {}
    taken = {node.target for node in graph.nodes if node.op == "call_module"}

    def add(node, module: nn.Module, stem: str, inputs: tuple) -> None:
        name = stem.replace(".", "_")
        while name in layers or name in taken:
            name += "_"
        layers[name] = module
        with graph.inserting_before(node):
            replacement = graph.call_module(name, inputs)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)

    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (_aten.linear.default, _aten.conv2d.default):
            if (layer := _layer(graph_module, node)) is not None:
                stem = node.args[1].target.rpartition(".")[0] or node.name
                add(node, layer, stem, (node.args[0],))
        elif node.target == _aten.batch_norm.default:
            if (bn := _batchnorm(graph_module, node, layers)) is not None:
                stem = node.args[1].target.rpartition(".")[0] or node.name
                add(node, bn, stem, (node.args[0],))
        elif node.target == _aten.sub.Tensor and (norm := _normalize(graph_module, node)):
            divide = next(iter(node.users))
            add(divide, norm, "norm", (node.args[0],))
            graph.erase_node(node)
    if not layers:
        return model
    graph.eliminate_dead_code()
    graph.lint()
    # Every module the graph calls, in the order it calls them (a dict root keeps it).
    root: dict[str, object] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            root[node.target] = layers.get(node.target) or graph_module.get_submodule(node.target)
        elif node.op == "get_attr":
            root[node.target] = _constant(graph_module, node)
    return fx.GraphModule(root, graph, type(model).__name__)
