"""Fuzzed inputs (Hypothesis) for the public functions of attribution, activations,
faithfulness and metrics: every valid batch gives finite results of the right shape;
every invalid one raises MnistlensError naming the problem.

Valid: N from 1 to 64, float32 or float64, contiguous or not, pixels anywhere in [0, 1].
Invalid: wrong dimensions or size, NaN/inf, integer dtype, empty batch, 3 channels,
a target outside 0-9, a target of the wrong length.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlens import MnistlensError, faithfulness, metrics
from mnistlens import attribution as A
from mnistlens.internals import activations

# Many generated inputs per test: the whole suite runs them, the quick core does not.
pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=25,
    deadline=None,  # shared CPUs: timing is not what is tested here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CHEAP = {  # settings that keep each example fast; the maths is the same
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 2},
    "gradient_shap": {"n_samples": 2},
    "occlusion": {"window": 14, "stride": 14},
}


@st.composite
def batches(draw, max_n: int = 64):
    """A valid batch: (N, 1, 28, 28) in [0, 1], float32 or float64, maybe non-contiguous."""
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 28, 28, generator=gen, dtype=dtype)
    if draw(st.booleans()):  # a blank or saturated image is valid too
        images[0] = draw(st.sampled_from([0.0, 1.0]))
    if draw(st.booleans()):
        images = images.transpose(2, 3)  # same shape, not contiguous
    return images


@pytest.fixture(scope="module")
def models(shipped):
    return {name: model for name, (model, _) in shipped.items()}


@pytest.mark.parametrize("method", A.list_methods())
@FUZZ
@given(images=batches(max_n=16))
def test_every_method_gives_finite_maps_of_the_right_shape(models, method, images):
    model = models["cnn" if A.get_spec(method).needs_conv else "mlp"]
    maps = A.attribute(method, model, images, **CHEAP.get(method, {}))
    assert maps.shape == (len(images), 1, 28, 28) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()


@FUZZ
@given(images=batches(), target=st.integers(0, 9))
def test_measures_and_metrics_on_any_valid_batch(models, images, target):
    model = models["linear"]
    n = len(images)
    targets = torch.full((n,), target)
    maps = A.saliency(model, images, targets)
    scores = faithfulness.score_maps(model, images, maps, targets, "saliency", steps=7)
    for values in (scores.deletion_auc, scores.insertion_auc, scores.random_deletion_auc):
        assert values.shape == (n,) and torch.isfinite(values).all()
        assert ((values >= 0) & (values <= 1)).all()
    report = metrics.evaluate(model, images, targets)
    assert report["n_images"] == n and 0 <= report["accuracy"] <= 1
    assert sum(map(sum, report["confusion"])) == n


@FUZZ
@given(images=batches())
def test_activations_on_any_valid_batch(models, images):
    model = models["mlp"]
    acts = activations.layer_activations(model, images.float(), "relu2")
    assert acts.shape == (len(images), 256) and (acts >= 0).all()
    units = activations.unit_activations(acts)
    profile = activations.class_profile(units, torch.arange(len(images)) % 10)
    assert profile.shape == (10, 256) and torch.isfinite(profile).all()


def _bad(kind: str, n: int) -> tuple[torch.Tensor, str]:
    images = torch.rand(n, 1, 28, 28)
    if kind == "nan":
        images[n - 1, 0, 3, 3] = float("nan")
        return images, "finite"
    if kind == "inf":
        images[0, 0, 0, 0] = float("inf")
        return images, "finite"
    if kind == "integer":
        return (images * 255).to(torch.uint8), "must be float"
    if kind == "empty":
        return images[:0], "empty batch"
    if kind == "three channels":
        return torch.rand(n, 3, 28, 28), r"\(N, 1, 28, 28\)"
    if kind == "no batch axis":
        return images[0], "unsqueeze"
    if kind == "wrong size":
        return torch.rand(n, 1, 32, 32), r"\(N, 1, 28, 28\)"
    raise AssertionError(kind)


BAD = ["nan", "inf", "integer", "empty", "three channels", "no batch axis", "wrong size"]


@pytest.mark.parametrize("kind", BAD)
@FUZZ
@given(n=st.integers(1, 8), method=st.sampled_from(["saliency", "ig", "occlusion", "gcxi"]))
def test_invalid_images_are_named(models, kind, n, method):
    images, problem = _bad(kind, n)
    with pytest.raises(MnistlensError, match=problem):
        A.attribute(method, models["cnn"], images)
    with pytest.raises(MnistlensError, match=problem):
        faithfulness.score_maps(models["linear"], images, images, torch.zeros(n).long())
    with pytest.raises(MnistlensError, match=problem):
        metrics.evaluate(models["linear"], images, torch.zeros(n).long())


@FUZZ
@given(
    n=st.integers(1, 8),
    bad=st.one_of(st.integers(10, 1000), st.integers(-1000, -1)),
)
def test_targets_outside_the_classes_are_named(models, n, bad):
    images = torch.rand(n, 1, 28, 28)
    with pytest.raises(MnistlensError, match=f"target class {bad} is out of range"):
        A.saliency(models["mlp"], images, bad)
    with pytest.raises(MnistlensError, match=f"class {bad}, outside 0-9"):
        metrics.evaluate(models["linear"], images, torch.full((n,), bad))


@FUZZ
@given(n=st.integers(1, 8), extra=st.integers(1, 5))
def test_targets_of_the_wrong_length_are_named(models, n, extra):
    images = torch.rand(n, 1, 28, 28)
    with pytest.raises(MnistlensError, match=f"tensor of {n} classes"):
        A.saliency(models["mlp"], images, torch.zeros(n + extra).long())
    with pytest.raises(MnistlensError, match="one per image"):
        metrics.evaluate(models["linear"], images, torch.zeros(n + extra).long())
    with pytest.raises(MnistlensError, match="integer classes"):
        A.saliency(models["mlp"], images, torch.zeros(n))


def test_confusion_helpers_by_hand():
    """The confusion matrix, per-digit accuracy and top confusions on a case worked out
    by hand (3 classes)."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0, 0, 2])
    confusion = metrics.confusion_matrix(predictions, labels, n=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 1]]
    assert metrics.per_class_accuracy(confusion).tolist() == pytest.approx([0.5, 1.0, 1 / 3])
    assert metrics.top_confusions(confusion, k=5) == [(2, 0, 2), (0, 1, 1)]
