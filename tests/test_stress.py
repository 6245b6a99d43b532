"""Stress tests: every model's accuracy under each change is the accuracy `evaluate`
measures on the changed images; pairs, seeds, the command line and its errors."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mnistlens import MnistlensError
from mnistlens.metrics import evaluate as accuracy_of
from mnistlens.metrics import predict_logits
from mnistlens.perturb import (
    default_pairs,
    evaluate,
    get_transform,
    list_transforms,
    parse_severities,
    resolve_transforms,
)
from mnistlens.perturb import run as run_stress
from mnistlens.perturb import transforms as T
from mnistlens.perturb.causes import gap_causes, normalize_for, sentence
from mnistlens.perturb.invariance import invariance
from mnistlens.perturb.normalize import FACTORS
from mnistlens.perturb.registry import with_severities
from mnistlens.perturb.stress import combine

from conftest import assert_clean_error

SWEEPS = ["translate", "rotate", "scale", "shear", "thickness", "elastic", "occlude"]


@pytest.fixture(scope="module")
def digits(test_set):
    return test_set[0][:600], test_set[1][:600]


@pytest.fixture(scope="module")
def models(shipped):
    return {name: shipped[name][0] for name in ("linear", "mlp", "cnn")}


@pytest.fixture(scope="module")
def swept(models, digits):
    """The shipped models under translation and rotation, on 600 test digits."""
    return evaluate(models, ["translate", "rotate"], *digits, progress=False)


@pytest.mark.slow
def test_each_accuracy_is_evaluates_on_the_changed_images(models, digits, swept):
    images, labels = digits
    for name in ("translate", "rotate"):
        t = get_transform(name)
        for k, severity in enumerate(t.severities):
            changed = t(images, severity, seed=0)
            for model_name, model in models.items():
                expected = accuracy_of(model, changed, labels)["accuracy"]
                assert swept.accuracy[model_name][name][k] == pytest.approx(expected, abs=1e-9)


@pytest.mark.slow
def test_the_unchanged_severity_is_the_clean_accuracy(models, digits, swept):
    for name in models:
        expected = accuracy_of(models[name], *digits)["accuracy"]
        assert swept.clean[name] == pytest.approx(expected, abs=1e-9)
        assert swept.accuracy[name]["translate"][0] == swept.clean[name]
        assert swept.accuracy[name]["rotate"][0] == swept.clean[name]
        assert swept.correct[name]["translate"].shape == (5, len(digits[1]))


@pytest.mark.slow
def test_convolution_holds_where_the_dense_models_lose_the_digit(swept):
    # The property the stress test exists to show: the CNN's lead over the MLP grows as
    # the digit moves off its place, and the linear model falls furthest.
    far = swept.transforms["translate"].severities.index(4)
    acc = {m: swept.accuracy[m]["translate"][far] for m in swept.models}
    assert acc["cnn"] > acc["mlp"] > acc["linear"]
    gaps = swept.gaps("mlp", "cnn")["translate"]
    assert gaps[far] > gaps[0] + 0.1
    widest = swept.widest("mlp", "cnn")
    assert widest["transform"] in ("translate", "rotate")
    brute = max(
        (g - widest["clean_gap"], t, s)
        for t, per in swept.gaps("mlp", "cnn").items()
        for g, s in zip(per, swept.transforms[t].severities, strict=True)
    )
    assert (widest["widening"], widest["transform"], widest["severity"]) == pytest.approx(brute)
    narrowest = swept.pair("mlp", "cnn")["narrowest"]
    least = min(
        (g - widest["clean_gap"], t, s)
        for t, per in swept.gaps("mlp", "cnn").items()
        for g, s in zip(per, swept.transforms[t].severities, strict=True)
    )
    if least[0] < 0:  # a change under which the CNN's lead shrinks
        assert (narrowest["widening"], narrowest["transform"]) == (
            pytest.approx(least[0]),
            least[1],
        )
    else:
        assert narrowest["transform"] is None


@pytest.mark.slow
def test_each_changed_set_is_made_once_for_all_models(models, digits):
    calls = []
    rotate = get_transform("rotate")

    def counted(images, severity, seed):
        calls.append(severity)
        return rotate.apply(images, severity, seed)

    probe = dataclasses.replace(rotate, apply=counted)
    evaluate(models, [probe], *digits, progress=False)
    assert sorted(calls) == [s for s in rotate.severities if s != 0]  # not once per model


def test_the_seed_draws_the_directions_and_is_recorded(models, digits):
    one = {"mlp": models["mlp"]}
    a = evaluate(one, ["translate"], *digits, seed=1, progress=False)
    b = evaluate(one, ["translate"], *digits, seed=1, progress=False)
    c = evaluate(one, ["translate"], *digits, seed=2, progress=False)
    assert torch.equal(a.correct["mlp"]["translate"], b.correct["mlp"]["translate"])
    assert not torch.equal(a.correct["mlp"]["translate"], c.correct["mlp"]["translate"])
    assert a.to_json()["seed"] == 1


def test_sweeps_draw_a_sign_or_direction_per_image(digits):
    images = digits[0][:64]
    turned = get_transform("rotate")(images, 30, seed=0)
    is_right = (turned - T.rotate(images, 30)).flatten(1).abs().amax(1) < 1e-6
    is_left = (turned - T.rotate(images, -30)).flatten(1).abs().amax(1) < 1e-6
    assert bool((is_right | is_left).all()) and 10 < int(is_right.sum()) < 54


def test_names_groups_and_severities_resolve_or_say_what_is_known():
    assert list_transforms("sweep") == SWEEPS
    assert [t.name for t in resolve_transforms(["rotate", "sweeps"])][:2] == ["rotate", "translate"]
    with pytest.raises(MnistlensError, match="unknown transform 'twist'.*translate"):
        get_transform("twist")
    assert with_severities(get_transform("rotate"), [30, 10]).severities == (0, 10, 30)
    assert with_severities(get_transform("scale"), [0.5]).severities == (0.5, 1.0)
    for name, bad in [("translate", 2.5), ("scale", 0), ("thickness", 0.5), ("occlude", 40)]:
        with pytest.raises(MnistlensError, match=f"{name} at severity"):
            with_severities(get_transform(name), [bad])
    assert parse_severities("rotate=0,10 scale=0.8,1.2") == {
        "rotate": [0, 10],
        "scale": [0.8, 1.2],
    }
    for text in ["rotate", "rotate=", "rotate=a,b", "rotate=1 rotate=2", "spin=1", "rotate=nan"]:
        with pytest.raises(MnistlensError):
            parse_severities(text)


def test_default_pairs_are_neighbours_and_the_best_dense_against_the_best_cnn(models):
    clean = {"linear": 0.92, "mlp": 0.99, "cnn": 0.995}
    assert default_pairs(models, clean) == [("linear", "mlp"), ("mlp", "cnn")]
    reordered = {"cnn": models["cnn"], "linear": models["linear"], "mlp": models["mlp"]}
    assert default_pairs(reordered, clean) == [("cnn", "linear"), ("linear", "mlp"), ("mlp", "cnn")]


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
def test_stress_json_holds_the_table_and_the_pairs(run):
    result = run(
        "stress", "--models", "mlp.pt,cnn.pt", "--transforms", "translate",
        "--limit", "300", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["n_images"] == 300 and [m["name"] for m in found["models"]] == ["mlp", "cnn"]
    assert [t["name"] for t in found["transforms"]] == ["translate"]
    assert len(found["accuracy"]["cnn"]["translate"]) == 5
    (pair,) = found["pairs"]
    assert (pair["a"], pair["b"]) == ("mlp", "cnn")
    mlp, cnn = (found["accuracy"][m]["translate"] for m in ("mlp", "cnn"))
    gaps = [b - a for a, b in zip(mlp, cnn, strict=True)]
    assert pair["gaps"]["translate"] == pytest.approx(gaps)


@pytest.mark.slow
def test_stress_out_writes_the_figures_and_the_table(run, tmp_path):
    result = run(
        "stress", "--models", "linear.pt,mlp.pt", "--transforms", "rotate,scale",
        "--severities", "rotate=0,20,40", "--limit", "200", "--out", tmp_path / "s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "linear -> mlp" in result.stdout
    for name in ("stress_curves.png", "stress_examples.png", "stress.json"):
        assert (tmp_path / "s" / name).is_file()
        assert f"wrote {tmp_path / 's' / name}" in result.stdout
    saved = json.loads((tmp_path / "s" / "stress.json").read_text())
    assert saved["transforms"][0]["severities"] == [0, 20, 40]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--transforms", "twist"], "unknown transform 'twist'"),
        (["--severities", "translate=1.5"], "translate at severity 1.5"),
        (["--severities", "rotate"], "bad severities 'rotate'"),
        (["--pair", "mlp,lenet"], "a pair is two different tested models"),
        (["--limit", "0"], "limit takes a number of images"),
    ],
)
def test_bad_transforms_severities_and_pairs_are_one_line_errors(run, args, fragment):
    result = run("stress", "--models", "linear.pt,mlp.pt", *args)
    assert_clean_error(result, fragment)


def test_help_names_the_command(run):
    result = run("stress", "--help")
    assert result.returncode == 0 and "MNIST-C" in result.stdout


@pytest.mark.cuda
def test_cuda_gives_the_cpus_accuracies(models, digits):
    cpu = evaluate(models, ["rotate"], *digits, device="cpu", progress=False)
    gpu = evaluate(models, ["rotate"], *digits, device="cuda", progress=False)
    for name in models:  # a prediction on the boundary may flip between kernels
        assert gpu.accuracy[name]["rotate"] == pytest.approx(cpu.accuracy[name]["rotate"], abs=0.01)


# ---------------------------------------------------------------- naming a gap's cause


@pytest.fixture(scope="module")
def causes(models, digits):
    images, labels = digits
    return gap_causes(models["mlp"], models["cnn"], images, labels, names=("mlp", "cnn"))


@pytest.mark.slow
def test_cause_counts_are_recounted_by_hand(models, digits, causes):
    images, labels = digits
    mlp, cnn = (models[m] for m in ("mlp", "cnn"))

    a = predict_logits(mlp, images).argmax(1) == labels
    b = predict_logits(cnn, images).argmax(1) == labels
    gap = (b & ~a).nonzero().squeeze(1)
    assert causes["n_gap"] == len(gap) and causes["gap_indices"] == gap.tolist()
    assert [r["factor"] for r in causes["factors"]] == [*FACTORS, "all"]
    for row in causes["factors"]:
        normalized = normalize_for(row["factor"], images[gap])  # a subset: the same digits
        fixed = int((predict_logits(mlp, normalized).argmax(1) == labels[gap]).sum())
        assert row["fixed"] == fixed
        assert row["share"] == pytest.approx(fixed / len(gap))
        if row["factor"] in FACTORS:  # the control: the same-sized change the other way
            opposite = FACTORS[row["factor"]](images[gap], strength=-1.0)
            expected = int((predict_logits(mlp, opposite).argmax(1) == labels[gap]).sum())
            assert row["opposite_fixed"] == expected
        for index in row["fixed_indices"]:
            assert int(index) in causes["gap_indices"]


@pytest.mark.slow
def test_a_factor_taken_away_undoes_that_factors_damage(models, digits):
    # Shift every digit 3 px: the MLP loses many the CNN keeps. Re-centring must give
    # the MLP back most of those, and deslanting (another factor) far fewer.
    images, labels = digits
    shifted = T.translate(images, 3, "down-right")
    found = gap_causes(models["mlp"], models["cnn"], shifted, labels, names=("mlp", "cnn"))
    share = {r["factor"]: r["share"] for r in found["factors"]}
    assert found["n_gap"] > 20
    assert share["position"] > 0.8 and share["position"] > share["slant"] + 0.5
    assert found["largest"] == "position"
    assert "re-centring" in sentence(found) and f"Of the {found['n_gap']} images" in sentence(found)


@pytest.mark.slow
def test_stress_run_names_each_pairs_causes(models, tmp_path):
    found = run_stress(
        {m: models[m] for m in ("mlp", "cnn")}, ["rotate"], limit=300, out=tmp_path, progress=False
    )
    (pair,) = found["pairs"]
    assert pair["causes"]["a"] == "mlp" and pair["causes"]["n_images"] == 300
    assert Path(found["plots"]["causes"]).name == "causes_mlp_cnn.png"


@pytest.mark.slow
def test_the_invariance_strip_gives_each_copy_the_models_answer(models, digits):
    image = digits[0][42:43]
    strip = invariance(models["cnn"], image)
    assert len(strip.changes) == len(strip.images) == 14 and strip.changes[0]["label"] == "original"
    probs = predict_logits(models["cnn"], strip.images).softmax(1)
    assert [c["prediction"] for c in strip.changes] == probs.argmax(1).tolist()
    assert strip.kept == pytest.approx(
        sum(c["prediction"] == strip.changes[0]["prediction"] for c in strip.changes[1:]) / 13
    )
    torch.testing.assert_close(strip.images[2], T.translate(image, 4, "right")[0])


@pytest.mark.slow
def test_stress_series_tests_every_member_in_order(run):
    from mnistlens import series

    result = run("stress", "--series", "--transforms", "rotate", "--limit", "200", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    names = series.list_series()
    assert [m["name"] for m in found["models"]] == names
    pairs = [(p["a"], p["b"]) for p in found["pairs"]]
    assert pairs[: len(names) - 1] == list(zip(names, names[1:], strict=False))


@pytest.mark.slow
def test_tables_of_models_tested_apart_combine_side_by_side(models, digits):
    apart = [
        evaluate({m: models[m]}, ["rotate"], *digits, progress=False).to_json() for m in models
    ]
    together = evaluate(models, ["rotate"], *digits, progress=False).to_json()
    combined = combine(apart)
    assert combined["models"] == together["models"]
    assert combined["accuracy"] == together["accuracy"]
    other = evaluate({"mlp": models["mlp"]}, ["rotate"], *digits, seed=3, progress=False)
    with pytest.raises(MnistlensError, match="differ in seed"):
        combine([apart[0], other.to_json()])
