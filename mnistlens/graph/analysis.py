"""One pass that knows a model's layers, in the order they run.

Everything that asks "which layers, in which order?" asks here: Grad-CAM's default
layer, the hidden layers the app and `units` offer, the top-down order of the
randomization sanity check, and the rewrites in `rewrite.py` (batch-norm folding, ReLU
modules, a final softmax removed), which edit the graph traced here.

The layers come from a torch.fx trace (https://pytorch.org/docs/stable/fx.html), so
functional calls (`F.relu(x)`, `torch.flatten`) are seen as well as modules. A model
that cannot be traced (data-dependent control flow) falls back to the order in which
its leaf modules run on one forward pass, found with hooks; functional calls are
then invisible, and `analyze(...).traced` says so.

    >>> info = analyze(model)
    >>> [layer.name for layer in info.layers if layer.kind == "relu"]
    ['relu1', 'relu2', 'relu3', 'relu_fc1']
    >>> info.cam_layer                     # output of the last conv block
    'relu3'
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from mnistlens.models import Normalize, evaluating

# Module types -> the kind of layer they are. Order matters: first match wins.
_MODULE_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (nn.Conv2d, "conv"),
    (nn.Linear, "linear"),
    ((nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid), "relu"),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), "pool"),
    ((nn.BatchNorm1d, nn.BatchNorm2d), "batchnorm"),
    (nn.Dropout, "dropout"),
    (nn.Flatten, "flatten"),
    (Normalize, "input_norm"),
    ((nn.LogSoftmax, nn.Softmax), "softmax"),
)
# Functional calls that matter to an explanation -> their kind.
_FUNCTION_KINDS = {
    F.relu: "relu",
    torch.relu: "relu",
    "relu": "relu",  # x.relu()
    F.max_pool2d: "pool",
    F.avg_pool2d: "pool",
    torch.flatten: "flatten",
    "flatten": "flatten",
    "view": "flatten",
    "reshape": "flatten",
    F.dropout: "dropout",
    F.log_softmax: "softmax",
    F.softmax: "softmax",
    torch.log_softmax: "softmax",
    torch.softmax: "softmax",
    "log_softmax": "softmax",
    "softmax": "softmax",
}
# A torch.export program (.pt2) is a graph of ATen operators, with no modules at all.
_aten = torch.ops.aten
_FUNCTION_KINDS.update(
    {
        _aten.conv2d.default: "conv",
        _aten.linear.default: "linear",
        _aten.relu.default: "relu",
        _aten.max_pool2d.default: "pool",
        _aten.avg_pool2d.default: "pool",
        _aten.flatten.using_ints: "flatten",
        _aten.view.default: "flatten",
        _aten.reshape.default: "flatten",
        _aten.dropout.default: "dropout",
        _aten.log_softmax.int: "softmax",
        _aten._log_softmax.default: "softmax",
        _aten.softmax.int: "softmax",
        _aten._softmax.default: "softmax",
    }
)


@dataclass(frozen=True)
class Layer:
    """One step of the forward pass.

    name: the module's path (`model.get_submodule(name)` finds it), or the fx node
        name of a functional call. kind: conv, linear, relu, pool, batchnorm,
        dropout, flatten, input_norm, softmax or other. functional: a call, not a
        module (hooks cannot reach it). shape: the output for one image, e.g.
        (32, 28, 28) or (128,), where known.
    """

    name: str
    kind: str
    functional: bool = False
    shape: tuple[int, ...] | None = None


@dataclass
class ModelInfo:
    """What `analyze` found: layers in execution order and the choices made from them."""

    layers: list[Layer]
    traced: bool  # False: fx could not trace the model; functional calls are unseen
    notes: list[str] = field(default_factory=list)

    def names(self, kind: str, modules_only: bool = True) -> list[str]:
        """Names of the layers of one kind, in execution order."""
        return [
            layer.name
            for layer in self.layers
            if layer.kind == kind and not (modules_only and layer.functional)
        ]

    @property
    def conv_layers(self) -> list[str]:
        return self.names("conv")

    @property
    def hidden_layers(self) -> list[str]:
        """Activation modules (ReLU and kin): the hidden units a user can inspect."""
        return self.names("relu")

    @property
    def parameter_layers(self) -> list[str]:
        """Conv and linear modules, in execution order (the head last); functional ones
        (a torch.export program's ATen calls) have no module to re-initialize."""
        return [
            layer.name
            for layer in self.layers
            if layer.kind in ("conv", "linear") and not layer.functional
        ]

    @property
    def functional_relus(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kind == "relu" and layer.functional]

    def block_output(self, conv: int) -> str | None:
        """The module whose output is the rectified feature maps of the conv block that
        starts at self.layers[conv]: the first ReLU module after the conv (before the
        next conv, linear or flatten), else the conv itself; None if neither is a module
        (a hook needs one; `with_relu_modules` makes ReLU modules)."""
        for after in self.layers[conv + 1 :]:
            if after.kind in ("conv", "linear", "flatten"):
                break
            if after.kind == "relu" and not after.functional:
                return after.name
        layer = self.layers[conv]
        return None if layer.functional else layer.name

    def stage_outputs(self) -> dict[str, str]:
        """Each conv layer (a module) -> its block's output (`block_output`): the maps
        as the next stage sees them."""
        return {
            layer.name: self.block_output(i)
            for i, layer in enumerate(self.layers)
            if layer.kind == "conv" and not layer.functional
        }

    @property
    def cam_layer(self) -> str | None:
        """Grad-CAM's layer: the output of the last conv *block*, after its activation.

        Grad-CAM is defined on the rectified feature maps of the last conv block
        (Selvaraju et al. 2017). Hooking the raw convolution (before batch norm and
        ReLU) gives maps no better than random on the shipped CNN (deletion AUC 0.52
        against 0.32 after relu3; `mnistlens measure`). None for a model without convolutions, or
        whose last conv block has no module to hook (`with_relu_modules` makes one).
        """
        convs = [i for i, layer in enumerate(self.layers) if layer.kind == "conv"]
        return self.block_output(convs[-1]) if convs else None


def _module_kind(module: nn.Module) -> str:
    for types, kind in _MODULE_KINDS:
        if isinstance(module, types):
            return kind
    return "other"


def node_kind(node: fx.Node) -> str | None:
    if node.op in ("call_function", "call_method"):
        return _FUNCTION_KINDS.get(node.target)
    return None


def _black_image(model: nn.Module) -> torch.Tensor:
    """One black image, (1, 1, 28, 28), on the device of the model's weights (a model on
    a GPU cannot take a CPU tensor)."""
    weight = next(iter(model.parameters()), None)
    return torch.zeros(1, 1, 28, 28, device=None if weight is None else weight.device)


def _shapes(model: nn.Module, graph_module: fx.GraphModule | None) -> dict[str, tuple]:
    """Output shape per layer name for one black image (batch axis dropped)."""
    shapes: dict[str, tuple] = {}
    if graph_module is None:
        return shapes
    recorder = _ShapeRecorder(graph_module)
    try:
        # Eval mode: the graph runs the model's own modules, and a batch norm in
        # training mode would update its running statistics with this black image.
        with torch.no_grad(), evaluating(model), evaluating(graph_module):
            recorder.run(_black_image(model))
    except Exception:  # noqa: BLE001 - e.g. a flat-input model; shapes stay unknown
        return shapes
    return recorder.shapes


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph node by node and keeps each tensor output's shape (batch axis
    dropped), by layer name. torch.fx's own ShapeProp does the same but imports sympy
    on its first node, a third of a second of every command's start-up."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__(graph_module)
        # A graph that cannot run on a 28 x 28 image fails here and is read by hooks
        # instead; fx's error report would first import torch's compiler (~1 s).
        self.extra_traceback = False
        self.shapes: dict[str, tuple] = {}

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if isinstance(out, torch.Tensor):
            name = node.target if node.op == "call_module" else node.name
            self.shapes[str(name)] = tuple(out.shape[1:])
        return out


# torch.fx's tracer replaces nn.Module.__call__ and __getattr__ for the whole process
# while it traces (torch/fx/_symbolic_trace.py, Tracer.trace), and puts back what it
# found when done. So a trace in one thread would send every other thread's forward pass
# through its wrapper ("module is not installed as a submodule"), and two traces at once
# could leave the wrapper installed for good. The explorer serves each session from its
# own thread; one trace at a time, and the other threads pass straight through.
_ONE_TRACE_AT_A_TIME = threading.Lock()


class _ThisThreadTracer(fx.Tracer):
    """torch.fx's Tracer, recording only the calls of the thread that traces."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if threading.get_ident() != self.thread:
            return forward(*args, **kwargs)  # another thread's model: run it as it is
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val, parameter_proxy_cache: dict):
        if threading.get_ident() != self.thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def trace(model: nn.Module) -> fx.GraphModule | None:
    """A torch.fx trace of `model` in eval mode, or None if it cannot be traced.

    Eval mode because a trace bakes in Python values such as `self.training` (a
    `F.dropout(x, training=self.training)` traced in training mode would stay random).
    Safe to call from several threads (see `_ONE_TRACE_AT_A_TIME`).
    """
    try:
        with _ONE_TRACE_AT_A_TIME, evaluating(model):
            tracer = _ThisThreadTracer()
            graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception:  # noqa: BLE001 - any tracing failure means "not traceable"
        return None


def _layers_by_hooks(model: nn.Module) -> list[Layer]:
    """Leaf modules in the order they run on one forward pass (fallback for untraceable
    models), with their output shapes."""
    seen: list[tuple[str, nn.Module, tuple | None]] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if name and not list(module.children()):

                def hook(mod, _inputs, output, name=name):
                    shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
                    seen.append((name, mod, shape))

                handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            was_training = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                model(_black_image(model))
            except Exception:  # noqa: BLE001 - e.g. flat input; fall back to definition order
                seen.clear()
            finally:
                for m, flag in was_training:
                    m.training = flag
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        return [
            Layer(name, _module_kind(m))
            for name, m in model.named_modules()
            if name and not list(m.children())
        ]
    return [Layer(name, _module_kind(m), shape=shape) for name, m, shape in seen]


# analyze() is asked by every method, Grad-CAM's layer choice and the explanation
# itself, several times per `explain` call, and tracing is not cheap: it is kept per
# model object, with a fingerprint of the module tree so that a model edited in place
# (a layer replaced, a head resized) is analyzed again. Weights do not change layers.
_ANALYSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    """What `analyze` depends on: each submodule (by identity and type) and each
    parameter's shape, and the forward method."""
    return (
        getattr(model.forward, "__func__", model.forward),  # not the bound method: it
        # would hold the model and keep it alive through the weak cache
        tuple((name, id(m), type(m)) for name, m in model.named_modules()),
        tuple((name, tuple(p.shape)) for name, p in model.named_parameters()),
    )


def analyze(model: nn.Module) -> ModelInfo:
    """The model's layers in execution order: -> ModelInfo (see its properties).

    Cached per model object while its structure is unchanged; treat the result as
    read-only."""
    structure = _structure(model)
    cached = _ANALYSES.get(model)
    if cached is not None and cached[0] == structure:
        return cached[1]
    info = _analyze(model)
    _ANALYSES[model] = (structure, info)
    return info


def _analyze(model: nn.Module) -> ModelInfo:
    graph_module = trace(model)
    if graph_module is None:
        return ModelInfo(
            _layers_by_hooks(model),
            traced=False,
            notes=["torch.fx could not trace this model: functional calls are not seen"],
        )
    shapes = _shapes(model, graph_module)
    layers = []
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            module = graph_module.get_submodule(node.target)
            layers.append(Layer(node.target, _module_kind(module), shape=shapes.get(node.target)))
        elif (kind := node_kind(node)) is not None:
            layers.append(Layer(node.name, kind, functional=True, shape=shapes.get(node.name)))
    return ModelInfo(layers, traced=True)
