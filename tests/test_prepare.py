"""mnistlens.prepare and the method registry: layers in execution order, rewriting a
user's functional ReLUs, folding batch norm, and what each method can explain."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from torch import nn

from mnistlens import MnistlensError
from mnistlens import attribution as A
from mnistlens import graph as P
from mnistlens.faithfulness import method_completeness_error
from mnistlens.graph import analysis
from mnistlens.metrics import predict_logits


class ExampleNet(nn.Module):
    """Written the way PyTorch's examples/mnist writes its Net: functional ReLUs and
    pooling, dropout modules, a final log_softmax (no max pool here, so that
    DeepLIFT's completeness is exact and the test sharp)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 2)
        self.conv2 = nn.Conv2d(8, 16, 3, 2)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(16 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.dropout(torch.flatten(x, 1))
        x = self.fc1(x).relu()
        return F.log_softmax(self.fc2(x), dim=1)


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        if x.sum() > 0:
            x = F.relu(x)
        return self.fc(x.flatten(1))


@pytest.fixture()
def example():
    torch.manual_seed(0)
    return ExampleNet().eval()


def test_shipped_cnn_layers_in_execution_order(cnn):
    info = P.analyze(cnn)
    assert info.traced
    assert info.conv_layers == ["conv1", "conv2", "conv3"]
    assert info.hidden_layers == ["relu1", "relu2", "relu3", "relu_fc1"]
    assert info.parameter_layers == ["conv1", "conv2", "conv3", "fc1", "head"]
    assert info.cam_layer == "relu3"
    shapes = {layer.name: layer.shape for layer in info.layers}
    assert shapes["relu1"] == (32, 28, 28) and shapes["pool3"] == (128, 3, 3)
    assert shapes["head"] == (10,)


def test_block_outputs_are_the_rectified_maps_of_each_stage(cnn, example):
    """Each conv's block ends at its ReLU module (the shipped CNN: relu1-3), Grad-CAM's
    layer is the last block's, and where the ReLU is functional the block falls back
    to the conv itself (a hook needs a module), before and after the rewrite."""
    info = P.analyze(cnn)
    assert info.stage_outputs() == {"conv1": "relu1", "conv2": "relu2", "conv3": "relu3"}
    assert info.cam_layer == info.stage_outputs()["conv3"]
    functional = P.analyze(example)
    convs = [i for i, layer in enumerate(functional.layers) if layer.kind == "conv"]
    assert [functional.block_output(i) for i in convs] == ["conv1", "conv2"]
    assert functional.stage_outputs() == {"conv1": "conv1", "conv2": "conv2"}
    rewritten = P.analyze(P.with_relu_modules(example))
    assert list(rewritten.stage_outputs().values()) == rewritten.hidden_layers[:2]


def test_functional_layers_are_seen_and_rewritten_into_modules(example):
    info = P.analyze(example)
    assert [(layer.kind, layer.functional) for layer in info.layers if layer.kind == "relu"] == [
        ("relu", True)
    ] * 3
    assert info.cam_layer == "conv2"  # no ReLU module after it yet
    rewritten = P.with_relu_modules(example)
    after = P.analyze(rewritten)
    assert len(after.hidden_layers) == 3 and not after.functional_relus
    assert after.cam_layer == after.hidden_layers[1]  # the ReLU after conv2
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(rewritten(x), example(x))
    assert P.with_relu_modules(rewritten) is rewritten  # nothing left to change


def test_a_shared_relu_module_gets_one_copy_per_call():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.act = nn.Linear(784, 16), nn.Linear(16, 10), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc2(self.act(self.fc1(x.flatten(1)))))

    model = Shared().eval()
    rewritten = P.with_relu_modules(model)
    relus = [m for m in rewritten.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 2 and relus[0] is not relus[1]
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(rewritten(x), model(x))


def test_final_log_softmax_is_removed(example, cnn):
    stripped, kind = P.strip_output_softmax(example)
    assert kind == "log_softmax"
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(stripped(x).log_softmax(dim=1), example(x))
    assert not torch.allclose(stripped(x), example(x))  # logits, not log-probabilities
    assert P.strip_output_softmax(cnn) == (cnn, "logits")
    assert P.strip_output_softmax(Untraceable())[1] == "unknown"


def test_deeplift_is_complete_on_a_functional_relu_model(example, test_set):
    """Captum alone silently gives plain gradient x input on functional ReLUs, which
    breaks DeepLIFT's summation rule; through mnistlens the rule holds."""
    model, _ = P.strip_output_softmax(example)
    images = test_set[0][:8]
    target = predict_logits(model, images).argmax(dim=1)
    maps = A.deeplift(model, images, target)
    ours = method_completeness_error("deeplift", model, images, maps, target)
    assert ours.max() < 1e-3
    raw = DeepLift(model).attribute(images, baselines=torch.zeros_like(images), target=target)
    theirs = method_completeness_error("deeplift", model, images, raw, target)
    assert theirs.median() > 10 * ours.max() + 0.01


def test_untraceable_model_is_refused_only_by_methods_that_need_relu_modules(test_set):
    model = Untraceable().eval()
    assert not P.analyze(model).traced
    assert P.analyze(model).parameter_layers == ["fc"]  # found by running it once
    assert A.why_not("deeplift", model) is not None
    with pytest.raises(MnistlensError, match="cannot be traced"):
        A.deeplift(model, test_set[0][:2])
    assert "saliency" in A.applicable_methods(model)
    assert A.saliency(model, test_set[0][:2]).shape == (2, 1, 28, 28)


def test_fold_batchnorm_works_beyond_sequential():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(2704, 10)

        def forward(self, x):
            return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))

    torch.manual_seed(0)
    model = Block()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    model.eval()
    folded = P.fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- the registry


def test_registry_properties_match_what_the_maps_do(cnn, test_set):
    """Signed methods give negative values somewhere; unsigned ones never do. Methods
    that claim completeness meet it on the shipped CNN; the others are not asked."""
    images = test_set[0][:4]
    fast = {"integrated_gradients": {"n_steps": 32}, "smoothgrad": {"n_samples": 4}}
    for name in A.list_methods():
        spec = A.get_spec(name)
        maps = A.attribute(name, cnn, images, **fast.get(name, {}))
        assert bool((maps < 0).any()) == spec.signed, name
        target = predict_logits(cnn, images).argmax(dim=1)
        error = method_completeness_error(name, cnn, images, maps, target)
        assert (error is not None) == spec.claims_completeness, name
        if name in ("integrated_gradients", "deeplift"):
            assert error.median() < 0.05, name


def test_method_options_and_applicability(shipped):
    assert A.method_options("deeplift", baseline="blur", n_steps=50, tol=None) == {
        "baseline": "blur"
    }
    assert A.method_options("ig", baseline="mean", n_steps=8, tol=0.01) == {
        "baseline": "mean",
        "n_steps": 8,
        "tol": 0.01,
    }
    assert A.method_options("saliency", baseline="blur") == {}
    with pytest.raises(MnistlensError, match="unknown shared options"):
        A.method_options("ig", steps=3)
    mlp = shipped["mlp"][0]
    assert "grad_cam" not in A.applicable_methods(mlp)
    assert "grad_cam" in A.applicable_methods(shipped["cnn"][0])
    assert "needs a convolutional layer" in A.why_not("gradcam", mlp)
    assert A.resolve_method("gcxi") == "grad_cam_x_input"


def test_target_out_of_range_is_refused(cnn, test_set):
    images = test_set[0][:2]
    with pytest.raises(MnistlensError, match="target class 10 is out of range.*0-9"):
        A.saliency(cnn, images, 10)
    with pytest.raises(MnistlensError, match="target class -1 is out of range"):
        A.saliency(cnn, images, torch.tensor([3, -1]))


def test_mean_baseline_reads_the_data_dir_it_is_given(tmp_path, test_set):
    """--baseline mean used to ignore --data-dir: an empty directory must now fail."""
    images = test_set[0][:1]
    with pytest.raises(MnistlensError, match="MNIST files missing"):
        A.make_baseline("mean", images, data_dir=tmp_path)
    mean = A.make_baseline("mean", images)
    assert mean.shape == images.shape and 0.1 < float(mean.mean()) < 0.16


def test_analyze_leaves_a_model_in_training_mode_unchanged(shipped):
    """analyze runs the model once to learn its shapes: a model in training mode must not
    have its batch-norm statistics or its mode changed by that (it happened: a black image
    updated the shipped CNN's running means and cost it 0.4 points of accuracy)."""
    import copy

    model = copy.deepcopy(shipped["cnn"][0]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    P.analyze(model)
    A.why_not("grad_cam", model)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_analyze_is_kept_per_model_until_the_model_changes_shape():
    """analyze() answers a second question about the same model from memory, but a
    model edited in place (a layer replaced, a conv widened) is analyzed afresh."""
    import gc

    model = ExampleNet()
    first = P.analyze(model)
    assert P.analyze(model) is first
    assert P.analyze(ExampleNet()) is not first  # another object, its own analysis
    model.fc1 = nn.Linear(16 * 6 * 6, 48)
    model.fc2 = nn.Linear(48, 10)
    edited = P.analyze(model)
    assert edited is not first
    assert [layer.shape for layer in edited.layers if layer.name == "fc1"] == [(48,)]
    model.fc2.weight.data.zero_()  # weights alone do not change the layers
    assert P.analyze(model) is edited
    count = len(analysis._ANALYSES)
    del model, first, edited
    gc.collect()
    assert len(analysis._ANALYSES) < count  # the cache does not keep models alive
