"""Contracts of the attribution methods that a plausible-looking bug would break, while
the maps still look right.

Each test checks a property against a computation made here, independently of the
library: integrated gradients against its closed form on the linear model and against a
hand-written quadrature on the MLP, the baselines against their definitions, the
per-digit mean maps against a manual average, and every bad option against a
one-line MnistlensError that names it (in Python and through the command line).
"""

import numpy as np
import pytest
import torch

from mnistlens import MnistlensError, cli
from mnistlens import attribution as A
from mnistlens.data import resolve_data_dir
from mnistlens.explain import class_mean_maps
from mnistlens.metrics import predict_logits


@pytest.fixture(scope="module")
def linear(shipped):
    """The shipped softmax regression: logits = W x + b on raw [0, 1] pixels."""
    model = shipped["linear"][0]
    assert isinstance(model.norm, torch.nn.Identity)  # the closed forms below rely on it
    return model


@pytest.fixture(scope="module")
def mlp(shipped):
    return shipped["mlp"][0]


@pytest.fixture(scope="module")
def train_mean():
    """The mean training image (1, 1, 28, 28), read from the raw IDX bytes with numpy:
    a second path to the number, not the library's loader."""
    raw = resolve_data_dir() / "MNIST" / "raw" / "train-images-idx3-ubyte"
    pixels = np.frombuffer(raw.read_bytes(), dtype=np.uint8, offset=16)  # 16-byte header
    pixels = pixels.reshape(60_000, 28, 28).astype(np.float64)
    return torch.from_numpy(pixels.mean(axis=0) / 255).float().reshape(1, 1, 28, 28)


def linear_ig(model, images, target, base):
    """IG on W x + b, exactly: (x - x0) * W[t]. -> (N, 1, 28, 28)."""
    weight = model.fc.weight.detach()[target].reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    return (images - base) * weight


def close(actual, expected, rel=1e-5):
    """Equal up to float32 rounding, scaled to the values compared."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=rel * scale, rtol=rel * 10)


class RowCounter:
    """Counts the rows passing forward through a model, and among them those whose output
    autograd can differentiate (gradient evaluations). A context manager; the hook is
    removed on exit. The library explains a folded deep copy of the model, which keeps
    the hook: a plain function, which deepcopy shares rather than copies, so the copy's
    rows are counted here too."""

    def __init__(self, model):
        self.model, self.grad_rows, self.rows = model, 0, 0

    def __enter__(self):
        def count(module, inputs, output):
            self.rows += output.shape[0]
            self.grad_rows += output.shape[0] if output.requires_grad else 0

        self.handle = self.model.register_forward_hook(count)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize("baseline", ["black", "mean", 0.3, "blur", "noise"])
def test_ig_on_the_linear_model_is_its_closed_form(linear, test_set, train_mean, baseline):
    """For logits W x + b, IG of class t from x0 is exactly (x - x0) * W[t], at any number
    of steps and in the adaptive mode, and its completeness error is ~0. The black, mean
    and constant x0 are built here; targets include classes the model does not predict,
    so a method that ignored `target` or swapped the baseline would fail."""
    images, labels = test_set[0][:8], test_set[1][:8]
    target = (labels + torch.arange(8)) % 10  # the label, then 1, 2, ... classes off it
    base = {"black": torch.zeros(1, 1, 28, 28), "mean": train_mean, 0.3: torch.tensor(0.3)}
    base = base.get(baseline, A.make_baseline(baseline, images))
    expected = linear_ig(linear, images, target, base)
    for options in ({"n_steps": 3}, {"n_steps": 20}, {"tol": 0.01}):
        maps, delta = A.integrated_gradients(
            linear, images, target, baseline=baseline, return_delta=True, **options
        )
        close(maps, expected)
        # delta: a sum over 784 float32 terms of the map and two logits.
        size = expected.abs().sum(dim=(1, 2, 3))
        assert (delta.abs() <= 1e-5 * size).all(), (options, delta)


def test_ig_on_the_mlp_is_the_quadrature_not_forced_complete(mlp, test_set):
    """On a non-linear model, few steps leave a real completeness error: IG must equal a
    hand-written 3-point Gauss-Legendre sum of autograd gradients, and its delta must be
    sum(map) - (f(x) - f(0)) measured, not rescaled away."""
    images = test_set[0][:6]
    target = predict_logits(mlp, images).argmax(dim=1)
    nodes, weights = np.polynomial.legendre.leggauss(3)  # on [-1, 1]
    grad_sum = torch.zeros_like(images)
    for node, weight in zip((nodes + 1) / 2, weights / 2, strict=True):
        point = (node * images).requires_grad_(True)  # black baseline: x0 = 0
        score = mlp(point).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, point)
        grad_sum += float(weight) * grad
    expected = images * grad_sum  # (x - 0) * averaged gradient
    with torch.no_grad():
        gap = (mlp(images) - mlp(torch.zeros_like(images))).gather(1, target[:, None])[:, 0]
    maps, delta = A.integrated_gradients(mlp, images, n_steps=3, return_delta=True)
    close(maps, expected, rel=1e-4)
    true_delta = expected.sum(dim=(1, 2, 3)) - gap
    torch.testing.assert_close(delta, true_delta, atol=1e-4 * float(gap.abs().max()), rtol=1e-3)
    assert (true_delta.abs() > 1e-3 * gap.abs()).any()  # there is an error to hide


def test_ig_evaluates_n_steps_gradients_per_image(linear, test_set):
    """n_steps is honored: exactly n_steps gradient rows per image, whatever n_steps."""
    images = test_set[0][:8]
    counted = {}
    for steps in (7, 30):
        with RowCounter(linear) as counter:
            A.integrated_gradients(linear, images, 3, n_steps=steps)
        counted[steps] = counter
    assert counted[7].grad_rows == 7 * 8
    assert counted[30].grad_rows == 30 * 8
    # The other passes (f(x), f(baseline), a target check) do not grow with the steps.
    assert counted[30].rows - counted[7].rows == (30 - 7) * 8


# ---------------------------------------------------------------- baselines


def total_variation(images):
    """Sum of |differences| between neighbouring pixels, per image: -> (N,)."""
    return images.diff(dim=2).abs().sum(dim=(1, 2, 3)) + images.diff(dim=3).abs().sum(dim=(1, 2, 3))


def centre_of_mass(images):
    """(row, column) of each image's ink: -> (N, 2)."""
    grid = torch.arange(28.0)
    mass = images.sum(dim=(1, 2, 3))
    rows = (images * grid[:, None]).sum(dim=(1, 2, 3)) / mass
    columns = (images * grid).sum(dim=(1, 2, 3)) / mass
    return torch.stack([rows, columns], dim=1)


def test_each_baseline_is_what_it_says(test_set, train_mean):
    images = test_set[0][:8]
    assert set(A.BASELINES) == {"black", "mean", "blur", "noise"}  # each is checked here
    assert torch.equal(A.make_baseline("black", images), torch.zeros_like(images))
    close(A.make_baseline("mean", images), train_mean.expand_as(images), rel=1e-5)
    assert torch.equal(A.make_baseline(0.25, images), torch.full_like(images, 0.25))
    one = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(A.make_baseline(one, images), one.expand_as(images))

    blur = A.make_baseline("blur", images)
    assert blur.shape == images.shape
    assert ((blur - images).abs().amax(dim=(1, 2, 3)) > 0.3).all()  # not the image
    assert (total_variation(blur) < 0.5 * total_variation(images)).all()  # strokes gone
    ink = images.sum(dim=(1, 2, 3))
    assert ((blur.sum(dim=(1, 2, 3)) - ink).abs() < 0.05 * ink).all()  # mass kept
    # ... and it is this image's blur: the ink's centre of mass stays where it was.
    assert ((centre_of_mass(blur) - centre_of_mass(images)).abs() < 0.5).all()

    noise = A.make_baseline("noise", images)
    assert noise.min() >= 0 and noise.max() <= 1
    assert ((noise.mean(dim=(1, 2, 3)) - 0.5).abs() < 0.05).all()  # uniform on [0, 1]
    assert torch.equal(noise, A.make_baseline("noise", images))  # seeded
    assert not torch.equal(noise, A.make_baseline("noise", images, seed=1))
    assert not torch.equal(noise[0], noise[1])


def test_noise_baseline_of_an_image_does_not_depend_on_its_batch(mlp, test_set):
    """An image's noise baseline is the same alone or in a batch, so IG in chunks
    integrates from the baseline that its completeness reference (all images at once)
    measures from. (It was drawn per chunk: image 70 of 100 got another baseline.)"""
    images = test_set[0][:10]
    together = A.make_baseline("noise", images)
    alone = torch.cat([A.make_baseline("noise", images[i : i + 1]) for i in range(10)])
    assert torch.equal(together, alone)
    chunked = A.integrated_gradients(mlp, images, baseline="noise", n_steps=8, batch_size=3)
    whole = A.integrated_gradients(mlp, images, baseline="noise", n_steps=8, batch_size=64)
    close(chunked, whole, rel=1e-5)


BASELINE_KINDS = ["black", "mean", "blur", "noise", 0.5]


def test_ig_integrates_from_the_baseline_asked_for(mlp, test_set, train_mean):
    """On the MLP, sum(map) = f(x)_t - f(b)_t for the baseline b asked for. IG runs to a
    completeness tolerance (adaptive steps), tight enough that every other baseline's
    gap lies outside it on most images: a method that used another baseline than the
    one named would fail. The black, mean and constant references are built here."""
    images = test_set[0][:16]
    target = predict_logits(mlp, images).argmax(dim=1)
    references = {
        "black": torch.zeros_like(images),
        "mean": train_mean.expand_as(images),
        "blur": A.make_baseline("blur", images),
        "noise": A.make_baseline("noise", images),
        0.5: torch.full_like(images, 0.5),
    }
    score = predict_logits(mlp, images).gather(1, target[:, None])[:, 0]
    gaps = {
        kind: score - predict_logits(mlp, ref).gather(1, target[:, None])[:, 0]
        for kind, ref in references.items()
    }
    tol = 0.003
    for kind in BASELINE_KINDS:
        maps = A.integrated_gradients(mlp, images, target, baseline=kind, tol=tol)
        error = (maps.sum(dim=(1, 2, 3)) - gaps[kind]).abs()
        # Twice the asked tolerance: measured here, not taken from the library's delta.
        allowed = 2 * tol * gaps[kind].abs() + 0.01
        assert (error <= allowed).all(), (kind, error)
        for other in BASELINE_KINDS:
            if other != kind:  # had `other` been used, these images would have failed
                apart = (gaps[other] - gaps[kind]).abs() > 2 * allowed
                assert apart.sum() >= 4, (kind, other)  # of 16


def test_ig_map_vanishes_when_the_baseline_is_the_image(mlp, test_set, train_mean):
    """x == baseline: nothing to attribute, for a given tensor and for each named
    baseline fed the image it would produce (the mean image itself; a flat grey image,
    which blurs to itself)."""
    images = test_set[0][:4]
    maps = A.integrated_gradients(mlp, images, baseline=images.clone(), n_steps=8)
    assert maps.abs().max() == 0
    scale = float(A.integrated_gradients(mlp, images, n_steps=8).abs().max())
    mean_map = A.integrated_gradients(mlp, train_mean, baseline="mean", n_steps=8)
    assert mean_map.abs().max() <= 1e-5 * scale
    grey = torch.full((1, 1, 28, 28), 0.4)
    assert A.integrated_gradients(mlp, grey, baseline="blur", n_steps=8).abs().max() <= (
        1e-5 * scale
    )


# ---------------------------------------------------------------- class_mean_maps


@pytest.fixture(scope="module")
def slice_300(test_set):
    return test_set[0][:300], test_set[1][:300]


def test_class_mean_maps_is_the_mean_over_correct_images_with_the_options(
    linear, slice_300, train_mean
):
    """Against IG's closed form averaged by hand over the correctly classified images of
    each digit: the baseline option reaches the method (black and mean give their own
    maps) and misclassified images are left out."""
    images, labels = slice_300
    correct = predict_logits(linear, images).argmax(dim=1) == labels
    assert (~correct).sum() >= 5  # the linear model gets some of these wrong
    found = {}
    for kind, base in (("black", torch.zeros(1, 1, 28, 28)), ("mean", train_mean)):
        found[kind] = class_mean_maps(
            linear, images, labels, "ig", batch_size=64, baseline=kind, n_steps=4
        )
        per_image = linear_ig(linear, images, labels, base)[:, 0]  # (300, 28, 28)
        expected = torch.stack([per_image[correct & (labels == d)].mean(dim=0) for d in range(10)])
        close(found[kind], expected)
        everything = torch.stack([per_image[labels == d].mean(dim=0) for d in range(10)])
        assert (found[kind] - everything).abs().max() > 100 * 1e-5 * expected.abs().max()
    assert (found["black"] - found["mean"]).abs().max() > 0.1 * found["black"].abs().max()


def test_class_mean_maps_runs_the_method_asked_for(linear, slice_300):
    """Saliency of W x + b is |W[t]| for every image: the class mean is |W[d]|."""
    maps = class_mean_maps(linear, *slice_300, method="saliency")
    close(maps, linear.fc.weight.detach().abs().reshape(10, 28, 28))


def test_class_mean_maps_batch_size_changes_nothing_and_n_steps_reaches_ig(mlp, test_set):
    images, labels = test_set[0][:120], test_set[1][:120]
    few = class_mean_maps(mlp, images, labels, "ig", batch_size=500, n_steps=2)
    close(class_mean_maps(mlp, images, labels, "ig", batch_size=7, n_steps=2), few)
    correct = predict_logits(mlp, images).argmax(dim=1) == labels
    x, y = images[correct], labels[correct]
    by_hand = A.integrated_gradients(mlp, x, y, n_steps=2)[:, 0]
    close(few, torch.stack([by_hand[y == d].mean(dim=0) for d in range(10)]))
    many = class_mean_maps(mlp, images, labels, "ig", n_steps=32)
    assert (many - few).abs().max() > 0.01 * many.abs().max()


def test_class_mean_maps_digit_without_correct_images_is_nan(linear, slice_300):
    images, labels = slice_300
    keep = labels != 3
    maps = class_mean_maps(linear, images[keep], labels[keep], "saliency")
    assert torch.isnan(maps[3]).all()
    assert torch.isfinite(maps[torch.arange(10) != 3]).all()


# ---------------------------------------------------------------- bad options


BAD_OPTIONS = [
    ("integrated_gradients", {"baseline": "sepia"}, r"unknown baseline 'sepia'; choose one of"),
    ("deeplift", {"baseline": "sepia"}, r"unknown baseline 'sepia'"),
    ("integrated_gradients", {"baseline": torch.zeros(3, 1, 28, 28)}, r"baseline tensor"),
    ("integrated_gradients", {"n_steps": 0}, r"n_steps must be an integer >= 1, got 0"),
    ("integrated_gradients", {"n_steps": 2.5}, r"n_steps must be an integer >= 1, got 2.5"),
    ("integrated_gradients", {"n_steps": "7"}, r"n_steps must be an integer"),
    ("integrated_gradients", {"tol": 0.0}, r"tol must be a number between 0 and 1"),
    ("integrated_gradients", {"tol": -0.01}, r"tol must be"),
    ("integrated_gradients", {"tol": 0.01, "max_steps": 0}, r"max_steps must be"),
    ("integrated_gradients", {"method": "simpson"}, r"unknown integration method 'simpson'"),
    ("occlusion", {"window": 29}, r"occlusion window must be an integer 1-28, got 29"),
    ("occlusion", {"window": 2.5}, r"occlusion window must be an integer"),
    ("occlusion", {"stride": 0}, r"occlusion stride must be an integer 1-28, got 0"),
    ("occlusion", {"stride": -2}, r"occlusion stride must be"),
    ("smoothgrad", {"noise": -0.1}, r"smoothgrad noise must be a number >= 0, got -0.1"),
    ("smoothgrad", {"noise": float("nan")}, r"smoothgrad noise must be"),
    ("smoothgrad", {"n_samples": 0}, r"smoothgrad n_samples must be an integer >= 1, got 0"),
    ("gradient_shap", {"n_samples": 0}, r"gradient_shap n_samples must be"),
    ("gradient_shap", {"stdevs": -1.0}, r"gradient_shap stdevs must be"),
    ("saliency", {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize(
    "method, options, pattern", BAD_OPTIONS, ids=[f"{m}-{o}" for m, o, _ in BAD_OPTIONS]
)
def test_bad_option_is_a_library_error_naming_it(mlp, test_set, method, options, pattern):
    with pytest.raises(MnistlensError, match=pattern) as raised:
        A.attribute(method, mlp, test_set[0][:2], **options)
    assert len(str(raised.value).splitlines()) == 1


@pytest.mark.parametrize("target", [10, -1, torch.tensor([3, 10])])
def test_target_outside_the_classes_is_a_library_error(mlp, test_set, target):
    bad = int(target[-1]) if isinstance(target, torch.Tensor) else target
    for method in ("saliency", "integrated_gradients"):
        with pytest.raises(MnistlensError, match=rf"target class {bad} is out of range.* 0-9"):
            A.attribute(method, mlp, test_set[0][:2], target)


def run_cli(capsys, *args):
    """`mnistlens ARGS` in this process: -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--methods", "ig", "--baseline", "sepia"], "--baseline must be one of black,"),
        (["--methods", "dl", "--baseline", "sepia"], "--baseline must be one of"),
        # checked even when no chosen method takes a baseline: a typo is never ignored
        (["--methods", "saliency", "--baseline", "sepia"], "--baseline must be one of"),
        (["--methods", "ig", "--steps", "0"], "--steps must be a whole number >= 1, got 0"),
        (["--methods", "ig", "--steps", "-3"], "--steps must be a whole number >= 1, got -3"),
        (["--methods", "ig", "--steps", "2.5"], "argument --steps: invalid int value: '2.5'"),
        (["--methods", "ig", "--tol", "0"], "--tol must be between 0 and 1"),
        (["--methods", "ig", "--tol", "1.5"], "--tol must be between 0 and 1"),
        (["--methods", "saliency", "--target", "-1"], "--target must be a digit 0-9, got -1"),
    ],
)
def test_bad_explain_options_through_the_cli(capsys, tmp_path, monkeypatch, options, fragment):
    """Exit code 2, one line on stderr naming the option, no traceback, no file."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "explain", "--model", "mlp.pt", "--index", "1", *options)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnistlens") and fragment in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_bad_steps_with_all_fails_before_writing(capsys, tmp_path):
    out = tmp_path / "maps.npy"
    args = ["explain", "--model", "linear.pt", "--all", "--method", "ig", "--steps", "0"]
    code, _, err = run_cli(capsys, *args, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--steps" in err, err
    assert list(tmp_path.iterdir()) == []
