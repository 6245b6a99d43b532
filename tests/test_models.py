"""mnistlens.models: the registry, output shapes, stable layer names."""

import pytest
import torch

from mnistlens import MnistlensError, models

EXPECTED_LAYERS = {
    "linear": {"norm", "flatten", "fc"},
    "mlp": {"norm", "flatten", "fc1", "relu1", "fc2", "relu2", "head"},
    "cnn": {
        "norm",
        "conv1",
        "bn1",
        "relu1",
        "pool1",
        "conv2",
        "bn2",
        "relu2",
        "pool2",
        "flatten",
        "fc1",
        "relu_fc1",
        "head",
    },
}


def test_registry_lists_the_reference_models():
    assert models.list_models() == ["cnn", "linear", "mlp"]


@pytest.mark.parametrize("arch", models.list_models())
def test_output_is_logits_for_each_image(arch):
    """(N, 1, 28, 28) in [0, 1] -> finite (N, 10) logits, for N = 1 and N = 7."""
    torch.manual_seed(0)
    model = models.build(arch).eval()
    for n in (1, 7):
        out = model(torch.rand(n, 1, 28, 28))
        assert out.shape == (n, 10) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", models.list_models())
def test_layer_names_are_stable(arch):
    names = set(models.layer_names(models.build(arch)))
    assert EXPECTED_LAYERS[arch] <= names


def test_relus_are_separate_modules():
    """Captum's DeepLIFT and guided backprop need one nn.ReLU module per use."""
    model = models.build("cnn")
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 3 and len({id(m) for m in relus}) == 3


def test_normalize_layer_uses_mnist_statistics():
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(models.Normalize()(x), (x - 0.1307) / 0.3081)


def test_constructor_arguments_shape_the_model():
    mlp = models.build("mlp", hidden=(64, 32, 16), dropout=0.0)
    widths = [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [64, 32, 16, 10]
    cnn = models.build("cnn", channels=(4, 8, 16), hidden=20)
    assert cnn.conv3.out_channels == 16 and cnn.fc1.in_features == 16 * 3 * 3
    assert cnn.head.in_features == 20


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(MnistlensError, match=r"unknown architecture 'resnet'.*'cnn', 'linear'"):
        models.build("resnet")


@pytest.mark.parametrize(
    "arch, kwargs, pattern",
    [
        ("linear", {"hidden": 3}, "bad arguments for architecture 'linear'"),
        ("mlp", {"hidden": ()}, "at least one hidden layer"),
        ("cnn", {"kernel_size": 4}, "kernel_size must be odd"),
        ("cnn", {"channels": (1, 2, 3, 4, 5)}, "1 to 4 conv stages"),
    ],
)
def test_bad_constructor_arguments(arch, kwargs, pattern):
    with pytest.raises(MnistlensError, match=pattern):
        models.build(arch, **kwargs)


def test_get_layer_unknown_name_lists_valid_ones():
    model = models.build("cnn")
    assert models.get_layer(model, "conv2") is model.conv2
    with pytest.raises(MnistlensError, match=r"no layer 'conv9'; valid layers: norm, conv1"):
        models.get_layer(model, "conv9")


def test_evaluating_restores_each_submodule_and_parameter():
    """A wrapper in training mode around a model in eval mode: both come back as they were."""
    inner = models.build("cnn").eval()
    inner.fc1.weight.requires_grad_(False)
    wrapper = torch.nn.Sequential(inner)  # training mode by default
    with models.evaluating(wrapper, freeze=True):
        assert not wrapper.training and not inner.training
        assert not any(p.requires_grad for p in wrapper.parameters())
    assert wrapper.training and not inner.training
    assert not inner.fc1.weight.requires_grad and inner.conv1.weight.requires_grad


def test_predict_logits_equals_the_model_and_leaves_it_as_it_was(shipped, test_set):
    """The channels-last, small-batch path gives the model's own scores (to float noise,
    relative to their scale), the same predicted digits, and leaves the caller's model in
    its mode with its weights' layout untouched; an empty batch gives (0, 10)."""
    from mnistlens.metrics import predict_logits

    images = test_set[0][:300]
    for name in ("mlp", "cnn"):
        model = shipped[name][0]
        model.train()
        try:
            with torch.no_grad():
                expected = torch.cat([model.eval()(x) for x in images.split(100)])
            model.train()
            got = predict_logits(model, images)
            assert model.training and all(m.training for m in model.modules())
        finally:
            model.eval()
        assert all(p.is_contiguous() for p in model.parameters())
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
        assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1))
        other_batches = predict_logits(model, images, batch_size=7)
        assert (other_batches - got).abs().max() <= 1e-5 * got.abs().max()
    assert predict_logits(shipped["cnn"][0], images[:0]).shape == (0, 10)
    # A handful of images run on the model itself (copying costs more than it saves).
    cnn = shipped["cnn"][0]
    assert models.for_inference(cnn, 1)[0] is cnn
    assert models.for_inference(cnn, models.COPY_FROM_ROWS)[0] is not cnn


def test_predictions_follow_every_change_of_the_model_the_kept_copy_was_made_from(test_set):
    """`predict_logits` reuses one channels-last copy per model (`for_inference(...,
    keep=True)`), made again whenever what the model computes may have changed: weights
    changed in place (an optimizer's step), loaded, replaced, a module's setting changed
    by hand; a model with a hook of its own is copied each time (the hook fires)."""
    from mnistlens.metrics import predict_logits

    images = test_set[0][:40]
    torch.manual_seed(0)
    model = models.cnn(channels=(4, 8), hidden=16).eval()
    first = predict_logits(model, images)
    kept = models.for_inference(model, len(images), keep=True)[0]
    assert kept is models.for_inference(model, len(images), keep=True)[0]  # reused
    assert not kept.training and kept is not model

    def same(a, b) -> bool:
        return bool((a - b).abs().max() <= 1e-5 * b.abs().max())

    with torch.no_grad():
        model.head.bias.add_(1.0)  # in place, as an optimizer's step
    assert same(predict_logits(model, images), first + 1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.head.bias.sub_(1.0)
    model.load_state_dict(state)
    assert same(predict_logits(model, images), first + 1.0)
    model.head.bias = torch.nn.Parameter(state["head.bias"] - 1.0)  # replaced
    assert same(predict_logits(model, images), first)
    model.conv1.padding_mode = "circular"  # a setting: the border now wraps around
    with torch.no_grad():
        expected = model(images)
    assert not same(expected, first)
    assert same(predict_logits(model, images), expected)

    seen = []
    hook = model.head.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    try:
        predict_logits(model, images)
    finally:
        hook.remove()
    assert sum(seen) == len(images)


def test_threads_share_a_kept_copy_and_each_gets_its_own_answers(shipped, test_set):
    """Eight threads predicting with the same model at once (one kept copy, in eval mode
    for good) get what each would get alone, and the model's mode is left as it was."""
    import threading

    from mnistlens.metrics import predict_logits

    cnn = shipped["cnn"][0]
    parts = test_set[0][:320].split(40)
    alone = [predict_logits(cnn, part) for part in parts]
    together = [None] * len(parts)

    def run(i: int) -> None:
        for _ in range(3):
            together[i] = predict_logits(cnn, parts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, expected in zip(together, alone, strict=True):
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert not cnn.training
