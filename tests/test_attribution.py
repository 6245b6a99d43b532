"""mnistlens.attribution on the shipped checkpoints and real test digits."""

import pytest
import torch
import torch.nn.functional as F

from mnistlens import MnistlensError
from mnistlens import attribution as A
from mnistlens.metrics import predict_logits

# Cheap settings per method, so the parametrized checks stay fast.
FAST = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "gradient_shap": {"n_samples": 4},
    "occlusion": {"window": 7, "stride": 7},
}


@pytest.fixture(scope="module")
def digits(test_set):
    images, labels = test_set
    return images[:6], labels[:6]


@pytest.mark.parametrize("method", A.list_methods())
def test_shape_and_batch_of_n_equals_n_single_calls(method, cnn, digits):
    images, _ = digits
    batch = A.attribute(method, cnn, images, **FAST.get(method, {}))
    assert batch.shape == (6, 1, 28, 28) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and batch.abs().sum() > 0
    singles = torch.cat(
        [A.attribute(method, cnn, images[i : i + 1], **FAST.get(method, {})) for i in range(3)]
    )
    # Batched and single kernels may differ in the last bits on other CPUs: the
    # tolerance is relative to the map's scale, far below anything visible.
    scale = float(batch[:3].abs().max())
    torch.testing.assert_close(batch[:3], singles, atol=1e-4 * scale, rtol=1e-3)


@pytest.mark.parametrize("method", A.list_methods())
def test_model_state_input_and_hooks_are_left_as_found(method, cnn, digits):
    images = digits[0].clone().requires_grad_(True)
    cnn.train()
    hooks_before = sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
        for m in cnn.modules()
    )
    try:
        A.attribute(method, cnn, images, **FAST.get(method, {}))
        assert cnn.training  # restored
        assert all(p.requires_grad for p in cnn.parameters())
        assert images.grad is None
        hooks_after = sum(
            len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
            for m in cnn.modules()
        )
        assert hooks_after == hooks_before
    finally:
        cnn.eval()


def test_saliency_equals_autograd_gradient(cnn, digits):
    images, _ = digits
    x = images.clone().requires_grad_(True)
    logits = cnn(x)
    target = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    torch.testing.assert_close(A.saliency(cnn, images), grad.abs())


def test_input_x_gradient_on_linear_model_is_weight_times_input(shipped, digits):
    """For softmax regression the gradient of logit t is its template row (/ std)."""
    model, _ = shipped["linear"]
    images, _ = digits
    target = torch.tensor([3, 1, 4, 1, 5, 9])
    maps = A.input_x_gradient(model, images, target)
    std = getattr(model.norm, "std", 1.0)  # the shipped linear model takes raw [0, 1] pixels
    expected = images * (model.fc.weight[target] / std).reshape(6, 1, 28, 28)
    torch.testing.assert_close(maps, expected)


def test_target_defaults_to_prediction_and_accepts_int(cnn, digits):
    images, labels = digits
    predicted = predict_logits(cnn, images).argmax(dim=1)
    assert torch.equal(A.saliency(cnn, images), A.saliency(cnn, images, predicted))
    other = A.saliency(cnn, images, 0)
    assert not torch.allclose(other, A.saliency(cnn, images))
    torch.testing.assert_close(other[1:2], A.saliency(cnn, images[1:2], torch.tensor([0])))


def test_integrated_gradients_completeness_improves_with_steps(cnn, digits):
    """|sum(map) - (f(x) - f(0))| is small relative to the logit gap, and shrinks."""
    images, _ = digits
    logits = predict_logits(cnn, images)
    target = logits.argmax(dim=1)
    gap = (logits - predict_logits(cnn, torch.zeros_like(images))).gather(1, target[:, None])[:, 0]
    errors = []
    for steps in (4, 16, 64):
        maps, delta = A.integrated_gradients(cnn, images, n_steps=steps, return_delta=True)
        torch.testing.assert_close(maps.sum(dim=(1, 2, 3)) - gap, delta, atol=1e-3, rtol=1e-3)
        errors.append((delta.abs() / gap.abs()).mean().item())
    assert errors[2] < errors[0]
    assert errors[2] < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["black", "mean", "blur", "noise", 0.5])
def test_integrated_gradients_baselines_are_complete(cnn, digits, baseline):
    images, _ = digits
    base = A.make_baseline(baseline, images)
    assert base.shape == images.shape
    maps, delta = A.integrated_gradients(
        cnn, images, baseline=baseline, n_steps=64, return_delta=True
    )
    target = predict_logits(cnn, images).argmax(dim=1)
    gap = (predict_logits(cnn, images) - predict_logits(cnn, base)).gather(1, target[:, None])[:, 0]
    assert (delta.abs() <= 0.05 * gap.abs() + 0.05).all()


def test_grad_cam_is_non_negative_28x28(cnn, digits):
    maps = A.grad_cam(cnn, digits[0])
    assert maps.shape == (6, 1, 28, 28) and (maps >= 0).all() and maps.sum() > 0
    assert A.default_cam_layer(cnn) == "relu3"  # the last conv block, rectified
    assert not torch.equal(maps, A.grad_cam(cnn, digits[0], layer="conv2"))


@pytest.mark.slow
def test_grad_cam_default_layer_beats_random_and_the_raw_conv(cnn, test_set):
    """On 50 test images (every 200th), Grad-CAM at its default layer deletes the
    class clearly faster than a random ranking, and than Grad-CAM on the raw conv3
    output (before batch norm and ReLU), which explains nothing: its maps rank pixels no
    better than chance, the reason the default is the ReLU after it. Measured
    deletion areas: 0.34, random 0.53, raw conv3 0.54, Grad-CAM x input 0.18."""
    from mnistlens.faithfulness import random_reference, score_maps

    images = test_set[0][::200]
    target = predict_logits(cnn, images).argmax(dim=1)
    ref = random_reference(cnn, images, target)  # the same random ranking for all three
    default = score_maps(cnn, images, A.grad_cam(cnn, images, target), target, reference=ref)
    conv3 = A.grad_cam(cnn, images, target, layer="conv3")
    raw = score_maps(cnn, images, conv3, target, reference=ref)
    cam_x_input = A.grad_cam_x_input(cnn, images, target)
    better = score_maps(cnn, images, cam_x_input, target, reference=ref)
    summary = default.summary()
    assert summary["deletion_auc"] < summary["random_deletion_auc"] - 0.1
    assert summary["deletion_auc"] < raw.summary()["deletion_auc"] - 0.1
    assert better.summary()["deletion_auc"] < summary["deletion_auc"]


def test_grad_cam_layer_by_module_or_name_is_the_same_and_the_model_is_left_alone(cnn, digits):
    """A layer given as the model's module means the same layer as its name (the raw
    conv3, not conv3 with batch norm folded in), no hook is left on the model, and a
    module from another model is refused with the library's error, not Captum's."""
    images, _ = digits
    by_name = A.grad_cam(cnn, images, layer="conv3")
    torch.testing.assert_close(A.grad_cam(cnn, images, layer=cnn.conv3), by_name)
    # Were batch norm folded into conv3, hooking conv3 would give bn3's maps.
    after_norm = A.grad_cam(cnn, images, layer="bn3")
    assert (by_name - after_norm).abs().max() > 0.1 * after_norm.abs().max()
    assert not any(m._forward_hooks for m in cnn.modules())
    with pytest.raises(MnistlensError, match="not part of this model"):
        A.grad_cam(cnn, images, layer=torch.nn.Conv2d(1, 1, 3))


def test_grad_cam_refuses_a_model_without_conv(shipped, digits):
    with pytest.raises(MnistlensError, match="needs a convolutional layer"):
        A.grad_cam(shipped["mlp"][0], digits[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "base", ["saliency", "input_x_gradient", "guided_backprop", "grad_cam", "occlusion"]
)
def test_smoothgrad_with_zero_noise_equals_its_base(cnn, digits, base):
    images, _ = digits
    smooth = A.smoothgrad(cnn, images, base=base, noise=0.0, n_samples=3)
    plain = A.attribute(base, cnn, images)
    # Same maps through two float paths (a batch of 3 copies, then a mean): equal up to
    # the last bits, which differ across CPUs; the tolerance scales with the map.
    scale = float(plain.abs().max())
    torch.testing.assert_close(smooth, plain, atol=1e-5 * scale, rtol=1e-4)


def test_smoothgrad_is_seeded(cnn, digits):
    images, _ = digits
    a = A.smoothgrad(cnn, images, n_samples=4, seed=1)
    assert torch.equal(a, A.smoothgrad(cnn, images, n_samples=4, seed=1))
    assert not torch.equal(a, A.smoothgrad(cnn, images, n_samples=4, seed=2))


def test_occlusion_of_the_ink_lowers_the_score(cnn, digits):
    """With one window over the whole image, each pixel gets f(x) - f(black)."""
    images, _ = digits
    maps = A.occlusion(cnn, images, window=28, stride=28)
    logits = predict_logits(cnn, images)
    target = logits.argmax(dim=1)
    drop = (logits - predict_logits(cnn, torch.zeros_like(images))).gather(1, target[:, None])
    torch.testing.assert_close(maps[:, 0, 0, 0], drop[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "images, pattern",
    [
        (torch.rand(1, 28, 28), r"shape \(N, 1, 28, 28\), got \(1, 28, 28\).*unsqueeze"),
        (torch.rand(2, 3, 28, 28), r"got \(2, 3, 28, 28\)"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "must be float"),
    ],
)
def test_wrong_images_are_refused(cnn, images, pattern):
    with pytest.raises(MnistlensError, match=pattern):
        A.saliency(cnn, images)


def test_unknown_method_and_aliases():
    assert A.resolve_method("IG") == "integrated_gradients"
    assert A.resolve_method("grad-cam") == "grad_cam"
    with pytest.raises(MnistlensError, match=r"unknown attribution method 'lime'; choose from"):
        A.resolve_method("lime")


def test_bad_target_shape(cnn, digits):
    with pytest.raises(MnistlensError, match="target must be an int or a tensor of 6 classes"):
        A.saliency(cnn, digits[0], torch.tensor([1, 2]))


class UserNet(torch.nn.Module):
    """A model written by a user: no Sequential, functional ops, its own names."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 4, 5, padding=2)
        self.act = torch.nn.ReLU()
        self.classifier = torch.nn.Linear(4 * 14 * 14, 10)

    def forward(self, x):
        x = F.max_pool2d(self.act(self.features(x)), 2)
        return self.classifier(x.flatten(1))


@pytest.mark.parametrize("method", A.list_methods())
def test_every_method_works_for_a_user_model(method, test_set):
    torch.manual_seed(0)
    model = UserNet().eval()
    maps = A.attribute(method, model, test_set[0][:3], **FAST.get(method, {}))
    assert maps.shape == (3, 1, 28, 28) and torch.isfinite(maps).all()
    if method == "grad_cam":
        assert A.default_cam_layer(model) == "act"  # the ReLU module after the conv
    ig, delta = A.integrated_gradients(model, test_set[0][:3], n_steps=64, return_delta=True)
    assert delta.abs().max() < 0.05


def test_smoothgrad_of_grad_cam_averages_noisy_copies(cnn, digits):
    """Smoothing a non-gradient method: non-negative like Grad-CAM, seeded, and not equal
    to the plain map once there is noise."""
    images, _ = digits
    smooth = A.smoothgrad(cnn, images, base="gradcam", noise=0.2, n_samples=4)
    assert (smooth >= 0).all()
    assert torch.equal(smooth, A.smoothgrad(cnn, images, base="gradcam", noise=0.2, n_samples=4))
    assert not torch.allclose(smooth, A.grad_cam(cnn, images), atol=1e-4)
    with pytest.raises(MnistlensError, match="cannot smooth itself"):
        A.smoothgrad(cnn, images, base="sg")
