"""mnistlens.graph.analysis: the layers of a model a trace cannot read (found by running
it once with hooks), the shapes of functional calls, where a conv block ends, and when a
cached analysis is redone. The shipped CNN's layers are checked in test_prepare.py."""

import nets
import torch
import torch.nn.functional as F
from torch import nn

from mnistlens.graph import Layer, analyze, with_relu_modules

aten = torch.ops.aten


class Twin(nn.Module):
    """Nested modules, a ReLU module in each conv block and after the hidden layer, a
    module of no known kind, a functional flatten; the head defined first, so the order
    the modules are defined in is not the order they run in."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(32, 10)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(8 * 5 * 5, 32)
        self.act = nn.ReLU()
        self.skip = nn.Identity()

    def forward(self, x):
        x = self.features(x).flatten(1)  # (N, 200)
        return self.head(self.skip(self.act(self.fc(x))))


class Branchy(Twin):
    """Twin with data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        if x.sum() > 0:
            x = x.clamp(0, 1)
        return super().forward(x)


TWIN_LAYERS = [
    Layer("features.0", "conv", shape=(4, 26, 26)),
    Layer("features.1", "relu", shape=(4, 26, 26)),
    Layer("features.2", "pool", shape=(4, 13, 13)),
    Layer("features.3", "conv", shape=(8, 11, 11)),
    Layer("features.4", "relu", shape=(8, 11, 11)),
    Layer("features.5", "pool", shape=(8, 5, 5)),
    Layer("fc", "linear", shape=(32,)),
    Layer("act", "relu", shape=(32,)),
    Layer("skip", "other", shape=(32,)),
    Layer("head", "linear", shape=(10,)),
]


def test_an_untraceable_model_is_read_by_running_it_as_its_traceable_twin_is_traced():
    """Hooks on one forward pass find an untraceable model's leaf modules in the order
    they run, with the same names, kinds and shapes as the trace of the same network
    without the `if` (which sees the functional flatten too), so Grad-CAM's layer and
    the hidden layers are the same; the model's training mode is left as it was."""
    torch.manual_seed(0)
    twin = analyze(Twin())
    assert twin.traced
    assert [layer for layer in twin.layers if layer.functional] == [
        Layer("flatten", "flatten", functional=True, shape=(200,))
    ]
    assert [layer for layer in twin.layers if not layer.functional] == TWIN_LAYERS
    model = Branchy().train()
    info = analyze(model)
    assert info.traced is False and any("could not trace" in note for note in info.notes)
    assert info.layers == TWIN_LAYERS
    assert info.cam_layer == twin.cam_layer == "features.4"
    assert info.hidden_layers == twin.hidden_layers == ["features.1", "features.4", "act"]
    assert info.parameter_layers == ["features.0", "features.3", "fc", "head"]
    assert all(m.training is True for m in model.modules())


def test_a_layer_that_returns_a_tuple_has_no_shape_and_the_others_keep_theirs():
    """A max pool that also returns its indices (for unpooling) gives a tuple: the hooks
    record it without a shape instead of giving up on the whole pass."""

    class Unpooling(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2, return_indices=True)
            self.unpool = nn.MaxUnpool2d(2)
            self.head = nn.Linear(4 * 28 * 28, 10)

        def forward(self, x):
            if x.amax() > 0.5:  # data-dependent: untraceable
                x = x * 2
            y, indices = self.pool(self.conv(x))
            return self.head(self.unpool(y, indices).flatten(1))

    info = analyze(Unpooling())
    assert not info.traced
    assert info.layers == [
        Layer("conv", "conv", shape=(4, 28, 28)),
        Layer("pool", "pool", shape=None),
        Layer("unpool", "other", shape=(4, 28, 28)),
        Layer("head", "linear", shape=(10,)),
    ]


def test_a_model_that_cannot_run_on_an_image_is_listed_in_the_order_it_is_written():
    """A flat-input model, (N, 784), cannot run on the (1, 1, 28, 28) image analyze
    tries: if it cannot be traced either, its leaf modules are listed as defined,
    without shapes (if it can, the trace gives its layers: the next test)."""

    class FlatBranchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(784, 32), nn.ReLU())
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            if x.sum() > 0:
                x = x.clamp(0, 1)
            return self.head(self.body(x))

    info = analyze(FlatBranchy())
    assert not info.traced
    assert info.layers == [
        Layer("body.0", "linear"),
        Layer("body.1", "relu"),
        Layer("head", "linear"),
    ]
    assert info.hidden_layers == ["body.1"] and info.cam_layer is None


def test_a_traceable_flat_input_model_has_its_layers_without_shapes():
    """nets.MLP, (N, 784): traced, its layers are found; the probe image cannot run
    through it, so their shapes stay unknown."""
    traced = analyze(nets.MLP())
    assert traced.traced
    assert traced.layers == [
        Layer("fc1", "linear"),
        Layer("relu", "relu", functional=True),
        Layer("fc2", "linear"),
    ]


def test_functional_calls_have_their_shapes():
    """A user's functional ReLU, flatten and log_softmax (nets.TinyNet) are layers with
    the shape of their output, as modules are."""
    info = analyze(nets.TinyNet())
    assert info.layers == [
        Layer("conv", "conv", shape=(4, 12, 12)),
        Layer("relu", "relu", functional=True, shape=(4, 12, 12)),
        Layer("flatten", "flatten", functional=True, shape=(576,)),
        Layer("fc", "linear", shape=(10,)),
        Layer("log_softmax", "softmax", functional=True, shape=(10,)),
    ]


def test_a_model_without_weights_has_its_shapes():
    info = analyze(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()))
    assert [layer.shape for layer in info.layers] == [(1, 14, 14), (196,)]


class NextConv(nn.Module):
    """A functional ReLU after the first conv, a ReLU module after the second."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)
        self.act2, self.fc = nn.ReLU(), nn.Linear(4 * 24 * 24, 10)

    def forward(self, x):
        x = self.act2(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


class GlobalPool(nn.Module):
    """Functional ReLU and a global average pool, then a hidden layer with a ReLU module."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.act, self.head = (
            nn.Conv2d(1, 8, 3), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10),
        )  # fmt: skip

    def forward(self, x):
        x = F.relu(self.conv(x)).mean(dim=(2, 3))  # (N, 8)
        return self.head(self.act(self.fc(x)))


class AtenNet(nn.Module):
    """Written in ATen operators, as a torch.export program (.pt2) is: no modules."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 1, 5, 5) * 0.1)
        self.v = nn.Parameter(torch.randn(10, 4 * 12 * 12) * 0.01)

    def forward(self, x):
        x = aten.relu.default(aten.conv2d.default(x, self.w, None, [2, 2]))
        return aten.linear.default(aten.flatten.using_ints(x, 1), self.v)


def test_a_conv_block_ends_at_the_next_conv_linear_or_flatten():
    """A conv block's output (Grad-CAM's layer for the last block) is a ReLU module
    before the next conv, linear layer or flatten, else the conv itself: never a ReLU
    of a later block, of a dense layer, or of flattened maps (Grad-CAM needs the maps);
    and None where the conv is a call with no module to hook."""
    assert analyze(NextConv()).stage_outputs() == {"conv1": "conv1", "conv2": "act2"}
    assert analyze(GlobalPool()).cam_layer == "conv"
    flat_relu = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.ReLU(), nn.Linear(2704, 10))
    assert analyze(flat_relu).cam_layer == "0"
    program = analyze(AtenNet())
    assert [layer.kind for layer in program.layers] == ["conv", "relu", "flatten", "linear"]
    assert program.block_output(0) is None and program.cam_layer is None
    assert analyze(with_relu_modules(AtenNet())).cam_layer == "relu_default"


def test_the_analysis_is_redone_when_a_layer_or_the_forward_is_replaced():
    """A layer replaced by one of the same type and weights (a wider pool) changes the
    analysis, and so does a forward replaced on the instance (as wrappers do), which is
    what runs when the class's own forward cannot be traced."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    assert analyze(model).layers[-1].shape == (4, 13, 13)
    model[2] = nn.MaxPool2d(4)
    assert analyze(model).layers[-1].shape == (4, 6, 6)

    untraceable = Branchy()

    def features_only(x):
        return untraceable.features(x)

    def first_conv_only(x):
        return untraceable.features[0](x)

    untraceable.forward = features_only
    assert [layer.name for layer in analyze(untraceable).layers][-1] == "features.5"
    untraceable.forward = first_conv_only
    assert [layer.name for layer in analyze(untraceable).layers] == ["features.0"]
