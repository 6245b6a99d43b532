"""mnistlens.faithfulness: the measures agree with what is known about the methods."""

import pytest
import torch

from mnistlens import MnistlensError
from mnistlens import attribution as A
from mnistlens import faithfulness as F
from mnistlens.faithfulness import curves, methods, sanity
from mnistlens.metrics import predict_logits


@pytest.fixture(scope="module")
def batch(test_set, cnn):
    """The first 50 test digits: the measured margins are as wide as on 100 (e.g. IG's
    deletion area 0.14 against 0.35 allowed, the inverted maps' 0.83)."""
    images = test_set[0][:50]
    return images, predict_logits(cnn, images).argmax(dim=1)


@pytest.fixture(scope="module")
def ig_maps(cnn, batch):
    """IG maps (16 steps) of the 50 digits: the faithful method several tests score."""
    return A.integrated_gradients(cnn, *batch, n_steps=16)


@pytest.fixture(scope="module")
def reference(cnn, batch):
    """The seeded random ranking's areas for the 50 digits: what every map must beat."""
    return F.random_reference(cnn, *batch)


def test_curves_start_and_end_where_they_must(cnn, batch):
    images, target = batch
    maps = A.saliency(cnn, images)
    deletion = F.perturbation_curve(cnn, images, maps, target, "deletion", steps=10)
    insertion = F.perturbation_curve(cnn, images, maps, target, "insertion", steps=10)
    probs = predict_logits(cnn, images).softmax(dim=1).gather(1, target[:, None])[:, 0]
    blank = predict_logits(cnn, torch.zeros_like(images)).softmax(dim=1).gather(1, target[:, None])
    assert deletion.shape == insertion.shape == (50, 11)
    torch.testing.assert_close(deletion[:, 0], probs)
    torch.testing.assert_close(insertion[:, -1], probs)
    torch.testing.assert_close(deletion[:, -1], blank[:, 0])
    torch.testing.assert_close(insertion[:, 0], blank[:, 0])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient", "occlusion"])
def test_faithful_methods_beat_a_random_ranking(cnn, batch, ig_maps, reference, method):
    """Deleting what the map ranks first hurts the class far more than deleting at random;
    inserting it first restores the class far sooner (areas per image, mean of 50)."""
    images, target = batch
    if method == "integrated_gradients":
        maps = ig_maps
    else:
        maps = A.attribute(
            method, cnn, images, target, **({"stride": 4} if method == "occlusion" else {})
        )
    scores = F.score_maps(cnn, images, maps, target, reference=reference).summary()
    assert scores["deletion_auc"] < 0.7 * scores["random_deletion_auc"]
    assert scores["insertion_auc"] > scores["random_insertion_auc"] + 0.1


def test_random_reference_is_the_area_of_random_maps(cnn, batch, reference):
    """The shared reference is exactly the curve areas of `random_maps` (checked on 10)."""
    images, target = batch
    shuffled = F.random_maps(images[:10])
    for mode in ("deletion", "insertion"):
        curve = F.perturbation_curve(cnn, images[:10], shuffled, target[:10], mode)
        torch.testing.assert_close(reference[f"random_{mode}_auc"][:10], F.area_under_curve(curve))


@pytest.mark.slow
def test_completeness_error_separates_ig_from_saliency(cnn, batch):
    images, target = batch[0][:40], batch[1][:40]
    ig = A.integrated_gradients(cnn, images, target, n_steps=64)
    sal = A.saliency(cnn, images, target)
    assert F.completeness_error(cnn, images, ig, target).median() < 0.01
    assert F.completeness_error(cnn, images, sal, target).median() > 0.5


def test_area_under_curve():
    assert F.area_under_curve(torch.ones(2, 5)).tolist() == [1.0, 1.0]
    assert F.area_under_curve(torch.linspace(0, 1, 11)[None]).item() == pytest.approx(0.5)


def test_spearman():
    x = torch.rand(3, 50)
    torch.testing.assert_close(sanity._spearman(x, x), torch.ones(3))
    torch.testing.assert_close(sanity._spearman(x, -x), -torch.ones(3))
    # ties share a rank, so a block of equal values is not ordered by position
    assert sanity._ranks(torch.tensor([3.0, 1.0, 1.0, 2.0])).tolist() == [3.0, 0.5, 0.5, 2.0]


def test_randomization_check_saliency_depends_on_the_weights(cnn, batch):
    """Saliency maps decorrelate as the layers are randomized; the model is left intact."""
    images, target = batch
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    scores = F.randomization_check(cnn, images[:20], "saliency", target[:20])
    assert list(scores) == ["head", "fc1", "conv3", "conv2", "conv1"]
    assert scores["conv1"] < 0.5 and scores["conv1"] < scores["head"]
    assert all(torch.equal(v, cnn.state_dict()[k]) for k, v in before.items())


def test_guided_backprop_ignores_the_top_layer(cnn, batch):
    """Adebayo et al.'s finding, reproduced: randomizing the classifier head barely
    changes guided backprop (it recovers the input's edges), unlike saliency."""
    images, target = batch
    guided = F.randomization_check(cnn, images[:20], "guided_backprop", target[:20])
    plain = F.randomization_check(cnn, images[:20], "saliency", target[:20])
    assert guided["head"] > 0.8 > plain["head"]


@pytest.mark.slow
def test_score_maps_is_per_image_chunk_independent_and_matches_the_curves(cnn, batch):
    """Per-image scores equal the curve areas computed directly, whatever the chunk size,
    and the random reference of an image does not depend on its batch-mates."""
    images, target = batch
    images, target = images[:30], target[:30]
    maps = A.integrated_gradients(cnn, images, target, n_steps=16)
    scores = F.score_maps(cnn, images, maps, target, "ig", batch_size=7, n_steps=16)
    direct = F.area_under_curve(F.perturbation_curve(cnn, images, maps, target, "deletion"))
    torch.testing.assert_close(scores.deletion_auc, direct)
    alone = F.score_maps(cnn, images[3:4], maps[3:4], target[3:4])
    torch.testing.assert_close(alone.random_deletion_auc, scores.random_deletion_auc[3:4])
    assert scores.completeness_error is not None and scores.completeness_error.median() < 0.05
    summary = scores.summary()
    assert summary["n_images"] == 30
    assert summary["deletion_auc"] == pytest.approx(float(scores.deletion_auc.mean()))
    assert summary["beats_random_deletion"] > 0.8
    assert set(scores.image(0)) == {
        "deletion_auc",
        "insertion_auc",
        "random_deletion_auc",
        "random_insertion_auc",
        "completeness_error",
    }


def test_negative_control_an_inverted_map_fails_the_measures(cnn, batch, ig_maps, reference):
    """A measure that cannot fail proves nothing: the same IG maps, ranked upside down
    (least important first), must do worse than random on deletion."""
    images, target = batch
    good = F.score_maps(cnn, images, ig_maps, target, reference=reference).summary()
    bad = F.score_maps(cnn, images, -ig_maps, target, reference=reference).summary()
    assert good["deletion_auc"] < good["random_deletion_auc"]
    assert bad["deletion_auc"] > bad["random_deletion_auc"]
    assert bad["insertion_auc"] < bad["random_insertion_auc"]


def test_completeness_uses_the_reference_the_method_used(cnn, batch):
    """DeepLIFT against the blurred image is measured against f(blurred), not f(black):
    measured against black, the same maps miss by far more."""
    images, target = batch
    images, target = images[:20], target[:20]
    maps = A.deeplift(cnn, images, target, baseline="blur")
    right = F.method_completeness_error("deeplift", cnn, images, maps, target, baseline="blur")
    wrong = F.completeness_error(cnn, images, maps, target)  # black reference
    assert right.median() < 0.1 < wrong.median()
    assert F.method_completeness_error("saliency", cnn, images, maps, target) is None


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curves_run_each_distinct_image_once_and_equal_step_by_step(
    cnn, batch, ig_maps, mode, monkeypatch
):
    """A step that changes no pixel (they already hold the baseline) is not run again,
    and every blank image is one: the model sees exactly the distinct images of the
    steps. The curve is what running every step's images on their own gives."""
    images, target = batch[0][:20], batch[1][:20]
    maps, steps = ig_maps[:20], 14
    shown = []

    def counting(model, x, **options):
        shown.append(len(x))
        return predict_logits(model, x, **options)

    monkeypatch.setattr(curves, "predict_logits", counting)
    curve = F.perturbation_curve(cnn, images, maps, target, mode, steps=steps)
    # The steps' images, built one by one from the ranking.
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    counts = torch.linspace(0, 784, steps + 1).round().long().tolist()
    by_step, distinct = [], set()
    for k in counts:
        x = images.flatten(1).clone() if mode == "deletion" else torch.zeros(20, 784)
        picked = order[:, :k]
        x.scatter_(1, picked, 0.0 if mode == "deletion" else images.flatten(1).gather(1, picked))
        by_step.append(x)
        distinct |= {(i, bytes(row.numpy())) for i, row in enumerate(x) if row.any()}
    blank = any(not row.any() for x in by_step for row in x)
    assert sum(shown) == len(distinct) + blank < 0.5 * 20 * (steps + 1)  # IG: most repeat
    expected = torch.stack(
        [predict_logits(cnn, x.view(-1, 1, 28, 28)).softmax(dim=1) for x in by_step], dim=1
    ).gather(2, target.view(-1, 1, 1).expand(20, steps + 1, 1))[..., 0]
    torch.testing.assert_close(curve, expected, atol=1e-6, rtol=1e-5)


def test_perturbation_curve_bad_mode_is_the_library_error(cnn, batch):
    images, target = batch
    with pytest.raises(MnistlensError, match="mode must be deletion or insertion"):
        F.perturbation_curve(cnn, images[:2], images[:2], target[:2], "sideways")


@pytest.mark.slow
def test_sanity_verdicts_separate_the_known_cases(cnn, batch):
    """Saliency, IG and input x gradient pass the model-randomization check; guided
    backprop fails it. Over all 784 pixels IG would look as insensitive as guided
    backprop (the shared zero background): the verdict correlates over the ink."""
    images, target = batch
    images, target = images[:20], target[:20]
    verdicts = {}
    for method in ("saliency", "integrated_gradients", "input_x_gradient", "guided_backprop"):
        options = {"n_steps": 16} if method == "integrated_gradients" else {}
        cascade = F.randomization_check(cnn, images, method, target, **options)
        verdicts[method] = F.sanity_verdict(cascade)
    assert verdicts == {
        "saliency": "pass",
        "integrated_gradients": "pass",
        "input_x_gradient": "pass",
        "guided_backprop": "fail",
    }
    everywhere = F.randomization_check(cnn, images, "input_x_gradient", target, region="all")
    assert F.sanity_verdict(everywhere) == "fail"  # why the rule looks at the ink only


def test_compare_methods_reports_the_verdict_and_its_rule(cnn, batch):
    images, _ = batch
    report, curves = F.compare_methods(
        cnn, images[:10], ["saliency", "gbp"], randomization=True, randomization_images=5
    )
    assert list(report) == ["random", "saliency", "guided_backprop"]
    assert report["saliency"]["sanity"] == "pass"
    assert report["guided_backprop"]["sanity"] == "fail"
    assert "0.7" in report["saliency"]["sanity_rule"]
    assert curves["saliency"]["deletion"].shape == (10, 29)


@pytest.mark.slow
def test_captum_metrics_are_reported_with_a_random_reference(cnn, batch):
    """infidelity and sensitivity_max come from captum.metrics: finite, non-negative,
    and occlusion's coarse windows are more stable under small noise than saliency
    (sensitivity 0.03 against 0.68 on 3 digits; 0.03 against 0.67 on 6)."""
    images, _ = batch
    report, _ = F.compare_methods(
        cnn, images[:3], ["saliency", "occlusion"], captum_metrics=True, randomization_images=3
    )
    assert report["random"]["infidelity"] > 0
    for name in ("saliency", "occlusion"):
        assert report[name]["infidelity"] >= 0 and report[name]["sensitivity_max"] >= 0
    assert report["occlusion"]["sensitivity_max"] < report["saliency"]["sensitivity_max"]


def test_data_randomization_model_gives_maps_far_from_the_real_ones(test_set):
    """Adebayo et al.'s second check, on shipped tiny CNNs (checkpoints/sanity/): the same
    architecture trained on true labels (two seeds) and on permuted labels. Grad-CAM and
    occlusion agree across seeds of real models but not with the permuted-label model;
    no method's maps of the permuted-label model resemble the real model's."""
    from mnistlens import load_model

    from conftest import CHECKPOINTS

    real, _ = load_model(CHECKPOINTS / "sanity" / "labels-true.pt")
    other_seed, _ = load_model(CHECKPOINTS / "sanity" / "labels-true-seed1.pt")
    shuffled, meta = load_model(CHECKPOINTS / "sanity" / "labels-shuffled.pt")
    assert meta["config"]["shuffle_labels"] and meta["test_accuracy"] < 0.15
    images = test_set[0][::500]
    for method in ("grad_cam", "occlusion"):
        same = F.data_randomization_check(real, other_seed, images, method).mean()
        fake = F.data_randomization_check(real, shuffled, images, method).mean()
        assert fake < same - 0.3, (method, same, fake)
    for method in ("saliency", "integrated_gradients", "guided_backprop", "grad_cam"):
        options = {"n_steps": 16} if method == "integrated_gradients" else {}
        fake = F.data_randomization_check(real, shuffled, images, method, **options).mean()
        assert fake < 0.35, (method, fake)


def test_a_shared_random_reference_scores_like_a_fresh_one(cnn, batch):
    """The random reference computed once and passed to several methods gives the
    scores each method would get computing its own; one for other images is refused."""
    images, target = batch
    images, target = images[:12], target[:12]
    reference = F.random_reference(cnn, images, target, keep_curves=True)
    for method in ("saliency", "input_x_gradient"):
        maps = A.attribute(method, cnn, images, target)
        fresh = F.score_maps(cnn, images, maps, target, keep_curves=True)
        shared = F.score_maps(cnn, images, maps, target, keep_curves=True, reference=reference)
        for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
            torch.testing.assert_close(getattr(shared, key), getattr(fresh, key))
        torch.testing.assert_close(
            shared.curves["random_deletion"], fresh.curves["random_deletion"]
        )
    with pytest.raises(MnistlensError, match="random reference covers 12 images"):
        F.score_maps(cnn, images[:5], maps[:5], target[:5], reference=reference)


@pytest.mark.slow
def test_compare_methods_takes_the_reference_once_computed(cnn, batch, monkeypatch):
    """Methods measured one call at a time (as the explorer adds them) reuse one random
    reference: the same report as computing it, which then is not computed again."""
    images, target = batch[0][:12], batch[1][:12]
    reference = F.random_reference(cnn, images, target, keep_curves=True)
    fresh, fresh_curves = F.compare_methods(cnn, images, ["saliency"])
    monkeypatch.setattr(methods, "random_reference", None)  # calling it would fail
    given, given_curves = F.compare_methods(cnn, images, ["saliency"], reference=reference)
    assert list(given) == list(fresh) == ["random", "saliency"]
    for name in given:
        assert given[name] == pytest.approx(fresh[name])
    torch.testing.assert_close(given_curves, fresh_curves)
    short = {k: v for k, v in reference.items() if k.endswith("_auc")}
    with pytest.raises(MnistlensError, match="reference computed with keep_curves=True"):
        F.compare_methods(cnn, images, ["saliency"], reference=short)


def test_randomization_check_can_stop_after_the_top_layer(cnn, batch):
    """layers=1 re-initializes the head only and gives the same top correlation (and so
    the same verdict) as the full cascade, which goes on down to conv1."""
    images, target = batch
    images, target = images[:10], target[:10]
    top = F.randomization_check(cnn, images, "saliency", target, layers=1)
    full = F.randomization_check(cnn, images, "saliency", target)
    assert list(top) == ["head"] and len(full) == 5
    assert top["head"] == pytest.approx(full["head"], abs=1e-6)
    assert F.sanity_verdict(top) == F.sanity_verdict(full)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MnistlensError, match="layers must be"):
            F.randomization_check(cnn, images, "saliency", target, layers=bad)
