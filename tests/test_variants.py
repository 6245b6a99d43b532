"""The model variants and inputs users bring that the main paths never meet: a softmax
at the end, a convolution feeding two branches, PyTorch's older conv -> pool -> F.relu
order, a photographed digit, a class asked for on every test image."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import mnistlens
from mnistlens import attribution as A
from mnistlens import cli
from mnistlens.faithfulness import completeness_error
from mnistlens.graph import analyze, fold_batchnorm, with_relu_modules
from mnistlens.metrics import predict_logits
from mnistlens.pictures import load_digit_image

SOFTMAX_NETS = """
import torch.nn.functional as F
from torch import nn


class FunctionalSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return F.softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


class ModuleSoftmax(FunctionalSoftmax):
    def __init__(self):
        super().__init__()
        self.out = nn.Softmax(dim=1)

    def forward(self, x):
        return self.out(self.fc2(F.relu(self.fc1(x.flatten(1)))))
"""


@pytest.mark.parametrize("name", ["FunctionalSoftmax", "ModuleSoftmax"])
def test_a_final_softmax_is_removed_and_the_logits_are_its_input(tmp_path, name, test_set):
    """Loaded with its class, a net that ends in a softmax gives logits whose softmax is
    the net's own output; the metadata says what was removed."""
    code = tmp_path / "nets.py"
    code.write_text(SOFTMAX_NETS)
    namespace: dict = {}
    exec(compile(SOFTMAX_NETS, str(code), "exec"), namespace)
    torch.manual_seed(0)
    net = namespace[name]().eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    model, meta = mnistlens.load(tmp_path / "net.pt", model_code=f"{code}:{name}", input="unit")
    assert meta["output_removed"] is True and meta["outputs"] == "probabilities"
    assert {"deeplift", "guided_backprop"} <= set(A.applicable_methods(model))  # traceable
    images = test_set[0][:16]
    logits = predict_logits(model, images)
    assert not torch.allclose(logits.sum(dim=1), torch.ones(16))  # not probabilities
    torch.testing.assert_close(logits.softmax(dim=1), net(images), rtol=0, atol=1e-6)


class Branching(nn.Module):
    """conv -> BN -> ReLU, plus the conv's own output added back (a residual sum)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        y = self.conv(x)
        return self.head((self.relu(self.bn(y)) + y).flatten(1))


def test_folding_batch_norm_keeps_a_branching_networks_function(test_set):
    """The conv's output also feeds the sum, so folding the BN into the conv would
    change the sum's other term: fold(m)(x) equals m(x)."""
    torch.manual_seed(0)
    net = Branching().eval()
    with torch.no_grad():  # statistics far from the identity, so a wrong fold shows
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.2, 3)
        net.bn.weight.uniform_(0.5, 2)
    images = test_set[0][:8]
    expected = net(images)
    torch.testing.assert_close(
        fold_batchnorm(net)(images), expected, rtol=0, atol=1e-5 * float(expected.abs().max())
    )


class OlderExample(nn.Module):
    """PyTorch's older examples/mnist order: conv -> max-pool -> F.relu."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc(x.flatten(1))


def test_grad_cam_hooks_the_relu_after_pooling_not_the_raw_conv(test_set):
    """Grad-CAM's layer is the last conv block's rectified output, here the functional
    ReLU after the pooling (made a module), and the maps are those of that layer."""
    torch.manual_seed(0)
    net = OlderExample().eval()
    rewritten = with_relu_modules(net)
    layer = analyze(rewritten).cam_layer
    assert isinstance(rewritten.get_submodule(layer), nn.ReLU)
    assert analyze(rewritten).layers[-3].name == layer  # relu, then flatten and fc
    images = test_set[0][:4]
    maps = A.grad_cam(net, images)
    hooked = A.grad_cam(rewritten, images, layer=layer)
    torch.testing.assert_close(maps, hooked)
    raw = A.grad_cam(rewritten, images, layer="conv2")
    assert not torch.allclose(maps, raw)


def test_completeness_error_of_a_map_summing_to_twice_the_gap_is_one():
    """f(x) = w.x: a map summing to 2 (f(x) - f(0)) is off by exactly the gap: 1.0."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=True)).eval()
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 4, 9])
    weights = net[1].weight[target].detach().reshape(3, 1, 28, 28)
    exact = images * weights  # sums to f(x) - f(0): the bias cancels
    error = completeness_error(net, images, exact, target)
    torch.testing.assert_close(error, torch.zeros(3), rtol=0, atol=1e-5)
    error = completeness_error(net, images, 2 * exact, target)
    torch.testing.assert_close(error, torch.ones(3), rtol=0, atol=1e-5)
    grey = torch.full((1, 1, 28, 28), 0.5)  # against another baseline, another gap
    from_grey = (images - grey) * weights  # sums to f(x) - f(grey)
    error = completeness_error(net, images, from_grey, target, baseline=grey)
    torch.testing.assert_close(error, torch.zeros(3), rtol=0, atol=1e-5)
    assert bool((completeness_error(net, images, from_grey, target) > 0.01).all())


def test_a_digit_photographed_on_grey_paper_reads_as_mnist(tmp_path, test_set, cnn):
    """Dark ink on light-grey paper, with some grain, four times MNIST's size: the
    picture becomes white ink on black and the CNN reads the digit it shows."""
    images, labels = test_set
    generator = np.random.default_rng(0)
    for i in (0, 1, 2):  # a 7, a 2, a 1
        ink = images[i, 0].numpy()
        photo = 0.78 - 0.65 * ink + generator.normal(0, 0.03, ink.shape)
        photo = np.kron(photo, np.ones((4, 4)))  # (112, 112)
        path = tmp_path / f"photo{i}.png"
        Image.fromarray((photo.clip(0, 1) * 255).astype(np.uint8)).save(path)
        digit = load_digit_image(path)
        corners = digit[0, [0, 1, 2, -3, -2, -1]][:, [0, 1, 2, -3, -2, -1]]
        assert float(corners.max()) == 0.0 and float(digit.median()) == 0.0  # black paper
        assert float(digit.max()) > 0.9  # white ink
        assert int(predict_logits(cnn, digit[None]).argmax()) == int(labels[i])


@pytest.mark.slow
def test_explain_all_with_a_target_explains_that_class_everywhere(tmp_path, shipped, test_set):
    """`explain --all --target 3` on softmax regression: every map is IG's closed form
    for class 3, the input times the class's (constant) input gradient (exact at any
    number of steps: the logit is linear in the input, so 4 steps, not 50, for the
    10,000 images)."""
    out = tmp_path / "maps.npy"
    args = ["explain", "--model", "linear.pt", "--all", "--method", "ig", "--target", "3"]
    args += ["--steps", "4"]
    assert cli.main([*args, "--out", str(out)]) == 0
    maps = torch.from_numpy(np.load(out)).reshape(-1, 1, 28, 28)  # saved as (N, 28, 28)
    model = shipped["linear"][0]
    images = test_set[0]
    x = torch.zeros(1, 1, 28, 28, requires_grad=True)
    model(x)[0, 3].backward()
    expected = images * x.grad  # (10000, 1, 28, 28)
    assert maps.shape == expected.shape
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))
