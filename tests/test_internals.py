"""Weights, activations and feature visualization on the shipped models: what is inside
the network, as the explorer's Inside page and `mnistlens weights/units/visualize` show it."""

import pytest
import torch
from torch import nn

from mnistlens import MnistlensError
from mnistlens.internals import activations as act
from mnistlens.internals import weights as W
from mnistlens.internals.featureviz import maximize, total_variation


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_capture_removes_hooks_also_when_the_body_raises(shipped, test_set):
    model, _ = shipped["cnn"]
    before = _hook_count(model)
    with act.capture(model, ["conv1", "fc1"]) as acts:
        model(test_set[0][:3])
        assert _hook_count(model) == before + 2
    assert acts["conv1"].shape == (3, 32, 28, 28) and acts["fc1"].shape == (3, 128)
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with act.capture(model, ["conv2"]):
            raise RuntimeError("boom")
    assert _hook_count(model) == before


def test_capture_unknown_layer_lists_valid_ones_and_sets_no_hook(shipped):
    model, _ = shipped["cnn"]
    before = _hook_count(model)
    with pytest.raises(MnistlensError, match=r"no layer 'fc9'; valid layers: norm, conv1"):
        with act.capture(model, ["conv1", "fc9"]):
            pass
    assert _hook_count(model) == before


@pytest.mark.parametrize(
    "arch, layer, shape",
    [
        ("cnn", "conv1", (32, 28, 28)),
        ("cnn", "pool2", (64, 7, 7)),
        ("cnn", "relu_fc1", (128,)),
        ("mlp", "relu1", (512,)),
        ("mlp", "fc2", (256,)),
        ("linear", "fc", (10,)),
    ],
)
def test_activation_shapes_per_layer(shipped, test_set, arch, layer, shape):
    model, _ = shipped[arch]
    out = act.layer_activations(model, test_set[0][:50], layer, batch_size=16)
    assert out.shape == (50, *shape)


def test_linear_templates_look_like_their_digit(shipped, test_set):
    """Each template correlates best with its own digit's mean image (minus the overall
    mean): the pictures show what the model learned, not a training artifact."""
    model, _ = shipped["linear"]
    templates = W.linear_templates(model)
    assert templates.shape == (10, 28, 28)
    images, labels = test_set
    means = torch.stack([images[labels == d, 0].mean(0) for d in range(10)])
    contrast = (means - images[:, 0].mean(0)).flatten(1)  # (10, 784)
    t = templates.flatten(1)
    t = (t - t.mean(1, keepdim=True)) / t.std(1, keepdim=True)
    c = (contrast - contrast.mean(1, keepdim=True)) / contrast.std(1, keepdim=True)
    correlation = t @ c.T / 783  # (10 templates, 10 digits)
    assert (correlation.argmax(dim=1) == torch.arange(10)).all()
    with pytest.raises(MnistlensError, match="single linear layer"):
        W.linear_templates(shipped["mlp"][0])


def test_linear_template_scores_the_digit(shipped, test_set):
    """Template . (the model's view of the image) + bias is the logit: templates really
    are the model."""
    model, _ = shipped["linear"]
    images = test_set[0][:20]
    templates = W.linear_templates(model).flatten(1)  # (10, 784)
    normalized = model.norm(images).flatten(1)  # identity for the shipped raw-pixel model
    torch.testing.assert_close(
        normalized @ templates.T + model.fc.bias, model(images), atol=1e-4, rtol=1e-4
    )


def test_mlp_unit_influence_is_the_linear_path(shipped):
    """With every later ReLU open, raising unit u of fc1 by 1 moves the logits by
    influence[:, u]: checked by autograd through the model's own layers."""
    model, _ = shipped["mlp"]
    influence = W.unit_class_influence(model)
    assert influence.shape == (10, 512)
    hidden = torch.rand(512, requires_grad=True)
    logits = model.head(model.fc2(hidden))  # the path after fc1 with its ReLUs open
    jacobian = torch.stack(
        [torch.autograd.grad(logits[c], hidden, retain_graph=True)[0] for c in range(10)]
    )
    torch.testing.assert_close(influence, jacobian, atol=1e-5, rtol=1e-4)
    ranked = W.units_by_class(model, per_class=3)
    assert [d for d, _ in ranked] == list(range(10))
    assert all(influence[d, us[0]] == influence[d].max() for d, us in ranked)
    assert W.first_layer_units(model).shape == (512, 28, 28)


def test_cnn_filters_and_feature_maps(shipped, test_set):
    model, _ = shipped["cnn"]
    filters = W.conv_filters(model)
    assert filters.shape == (32, 3, 3)
    assert torch.equal(filters, model.conv1.weight[:, 0])
    raw = W.feature_maps(model, test_set[0][0], rectified=False)
    assert {k: tuple(v.shape) for k, v in raw.items()} == {
        "conv1": (32, 28, 28),
        "conv2": (64, 14, 14),
        "conv3": (128, 7, 7),
    }
    # By default each stage after its ReLU: what the next stage reads, conv -> bn -> relu
    maps = W.feature_maps(model, test_set[0][0])
    assert list(maps) == ["relu1", "relu2", "relu3"]
    for i, (conv, relu) in enumerate(zip(raw.values(), maps.values(), strict=True), start=1):
        assert relu.min() >= 0 and conv.min() < 0
        with torch.no_grad():
            expected = model.get_submodule(f"bn{i}")(conv[None]).clamp(min=0)[0]
        torch.testing.assert_close(relu, expected, atol=1e-5 * float(expected.max()), rtol=0)
    with pytest.raises(MnistlensError, match="no conv layer 'fc1'; conv layers: conv1"):
        W.conv_filters(model, "fc1")


def test_top_images_match_a_brute_force_pass(shipped, test_set):
    model, _ = shipped["cnn"]
    images = test_set[0][:1000]
    units = act.unit_activations(act.layer_activations(model, images, "relu_fc1"))
    unit = int(units.mean(dim=0).argmax())  # a unit that is alive on these images
    indices, values = act.top_images(units, unit, k=8)
    assert values[0] > 0
    # brute force: one image at a time, hooks by hand
    seen = []
    for i in range(len(images)):
        with act.capture(model, "relu_fc1") as a, torch.no_grad():
            model(images[i : i + 1])
        seen.append(float(a["relu_fc1"][0, unit]))
    brute = torch.tensor(seen)
    torch.testing.assert_close(values, brute.sort(descending=True).values[:8], atol=1e-4, rtol=1e-4)
    assert (brute[indices] >= brute.sort(descending=True).values[7] - 1e-4).all()
    with pytest.raises(MnistlensError, match="unit 128 is out of range"):
        act.top_images(units, 128)


def test_selectivity_finds_a_hand_built_unit_for_one_digit(test_set):
    """Unit 2 fires only for sevens; the others fire for everything."""
    images, labels = test_set
    n = 2000
    units = torch.rand(n, 5) + 0.5
    units[:, 2] = (labels[:n] == 7).float() * 3.0
    profile = act.class_profile(units, labels[:n])
    assert profile.shape == (10, 5)
    (unit, digit, value), *_ = act.most_selective(profile, k=5)
    assert (unit, digit) == (2, 7) and value == pytest.approx(1.0)
    index, _ = act.selectivity(profile)
    assert (index[[0, 1, 3, 4]] < 0.2).all()
    profile[:, 4] = profile[:, 2] * 1e-3  # as selective, but nearly dead: left out
    assert 4 not in [u for u, _, _ in act.most_selective(profile, k=5)]


def test_pca_separates_classes_better_deeper(shipped, test_set):
    """Digits cluster more tightly in fc1's PCA plane than in the pixels' one."""
    model, _ = shipped["cnn"]
    images, labels = test_set[0][:1000], test_set[1][:1000]

    def spread_ratio(coords):  # within-class over total variance in the plane
        within = sum(
            ((coords[labels == d] - coords[labels == d].mean(0)) ** 2).sum() for d in range(10)
        )
        return float(within / ((coords - coords.mean(0)) ** 2).sum())

    pixels, ratio = act.pca_2d(images)
    deep, _ = act.pca_2d(act.layer_activations(model, images, "relu_fc1"))
    assert pixels.shape == (1000, 2) and 0 < ratio.sum() < 1
    assert spread_ratio(deep) < spread_ratio(pixels)


def test_pca_matches_svd(test_set):
    x = test_set[0][:300].flatten(1)
    coords, ratio = act.pca_2d(x)
    centered = x - x.mean(0)
    _, s, v = torch.linalg.svd(centered.double(), full_matrices=False)
    exact = (centered.double() @ v[:2].T).float()
    for k in range(2):  # components are defined up to sign
        sign = torch.sign((coords[:, k] * exact[:, k]).sum())
        torch.testing.assert_close(coords[:, k] * sign, exact[:, k], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(ratio, (s[:2] ** 2 / (s**2).sum()).float(), atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize("digit", [3, 8])
def test_class_maximization_makes_the_target_logit_win(shipped, digit):
    model, _ = shipped["cnn"]
    image, history = maximize(model, digit, steps=150)
    assert image.shape == (1, 28, 28) and 0 <= image.min() and image.max() <= 1
    with torch.no_grad():
        logits = model(image.unsqueeze(0))[0]
    assert logits.argmax() == digit
    assert history[-1] > history[0]


def test_maximization_is_smoother_with_regularization(shipped):
    model, _ = shipped["cnn"]
    smooth, _ = maximize(model, 3, steps=100)
    rough, _ = maximize(model, 3, steps=100, tv_weight=0.0, jitter=0, blur_every=0, ink_weight=0.0)
    assert total_variation(smooth[None]) < total_variation(rough[None])


def test_unit_maximization_raises_the_unit(shipped):
    model, _ = shipped["cnn"]
    image, history = maximize(model, 5, "relu_fc1", steps=80)
    assert history[-1] > history[0]
    with pytest.raises(MnistlensError, match="unit 999 is out of range"):
        maximize(model, 999, "relu_fc1", steps=2)


def test_featureviz_adam_steps_like_torch_adam():
    """The hand-written Adam (no torch._dynamo import) follows torch.optim.Adam's
    trajectory on a bumpy function, to float noise relative to the values."""
    from mnistlens.internals.featureviz import Adam

    start = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    mine, reference = Adam(ours, lr=0.05), torch.optim.Adam([theirs], lr=0.05)
    for _ in range(50):
        for x in (ours, theirs):
            (x.sin() * x + 0.1 * x**4).sum().backward()
        mine.step()
        reference.step()
        reference.zero_grad()
        assert ours.grad is None
    assert not torch.equal(ours, start)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))


def test_total_variation_of_flat_image_is_zero():
    assert total_variation(torch.full((1, 1, 28, 28), 0.3)) == 0
    stripes = torch.zeros(1, 1, 28, 28)
    stripes[..., ::2] = 1
    assert total_variation(stripes) == pytest.approx(1.0)


def test_hooks_are_gone_after_internals(shipped, test_set):
    model, _ = shipped["cnn"]
    before = _hook_count(model)
    act.layer_activations(model, test_set[0][:10], "conv2")
    W.feature_maps(model, test_set[0][0])
    maximize(model, 1, "conv3", steps=3)
    assert _hook_count(model) == before
    assert isinstance(model, nn.Module) and not model.training


def test_projections_go_layer_by_layer(shipped, test_set):
    model, _ = shipped["cnn"]
    out = act.projections_by_layer(model, test_set[0][:300], extra=["pool2"])
    assert list(out) == ["pixels", "relu1", "relu2", "pool2", "relu3", "relu_fc1", "logits"]
    assert all(c.shape == (300, 2) and r.shape == (2,) for c, r in out.values())


def test_mlp_unit_border_energy_against_a_random_init(shipped):
    """Trained first-layer units keep less of their weight on the never-inked border than
    a random init does (which spreads it evenly: 384 of 784 pixels, 49%)."""
    from mnistlens.models import build

    trained = W.unit_border_energy(shipped["mlp"][0])
    torch.manual_seed(0)
    fresh = W.unit_border_energy(build("mlp"))
    assert trained.shape == (512,) and ((trained >= 0) & (trained <= 1)).all()
    assert abs(float(fresh.mean()) - 384 / 784) < 0.02
    assert float(trained.mean()) < float(fresh.mean()) - 0.1
