"""`comparison.run`: the whole comparison `mnistlens compare` makes, from Python, report
included, on two shipped models."""

import json
import re

import pytest
import torch

from mnistlens import MnistlensError, comparison
from mnistlens.metrics import predict_logits


@pytest.fixture(scope="module")
def two(shipped):
    return {"linear": shipped["linear"], "mlp": shipped["mlp"]}


@pytest.mark.slow
def test_run_writes_the_figures_and_the_report_it_lists(two, test_set, tmp_path, monkeypatch):
    """The report's table has a row per model and links only figures written beside
    it; the pair's images are exactly those softmax regression gets right and the MLP
    wrong (B right, A wrong: few images, so the maps are quick); the maps drawn into
    both folders are computed once."""
    from mnistlens import explain
    from mnistlens.comparison import maps

    calls = []

    def counted(function):
        def wrapper(*args, **kwargs):
            calls.append(function.__name__)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(explain, "class_mean_maps", counted(explain.class_mean_maps))
    monkeypatch.setattr(maps, "where_b_beats_a", counted(maps.where_b_beats_a))
    docs, out = tmp_path / "docs", tmp_path / "out"
    report = comparison.run(
        two,
        out=out,
        maps=True,
        pair=["mlp", "linear"],
        report_dir=docs,
        questions={"mlp": "Q"},
        digit_map_images=100,
        faithfulness_every=500,
        stress_images=300,
    )
    assert sorted(calls) == ["class_mean_maps"] * 2 + ["where_b_beats_a"]  # 2 models, 1 pair
    for name in ("pair_maps.png", "digit_maps.png"):
        assert (out / name).read_bytes() == (docs / name).read_bytes()
    assert [m["name"] for m in report["models"]] == ["linear", "mlp"]
    page = (docs / "architectures.md").read_text()
    assert report["report"] == str(docs / "architectures.md")
    assert re.search(r"\| `mlp` \| Q \| 9\d\.\d\d% \|", page)
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page):
        assert (docs / name).is_file(), name
    assert set(report["faithfulness"]) == {"linear", "mlp"}
    # what each tolerates: a row per model, and the pair's sentence from stress.json
    stress = json.loads((docs / "stress.json").read_text())
    assert stress["n_images"] == 300 and "## What each architecture tolerates" in page
    assert re.search(r"\| `linear` \| \d\d\.\d\d% \| \d\d\.\d% \|", page)
    (pair,) = stress["pairs"]
    assert f"{100 * pair['clean_gap']:+.2f} points on the clean digits" in page
    assert f"Of the {pair['causes']['n_gap']} images `mlp` gets right" in page
    images, labels = test_set
    right = {
        name: predict_logits(model, images).argmax(dim=1) == labels
        for name, (model, _) in two.items()
    }
    expected = torch.nonzero(right["linear"] & ~right["mlp"]).flatten()
    shown = torch.tensor(report["pair_maps"]["indices"])
    assert len(shown) > 0 and bool(torch.isin(shown, expected).all())


def test_a_bad_pair_is_named_before_comparing(two, monkeypatch, tmp_path):
    from mnistlens.comparison import stats

    def never(*args, **kwargs):
        raise AssertionError("compare_models ran before the error")

    monkeypatch.setattr(stats, "compare_models", never)
    with pytest.raises(MnistlensError, match="pair needs two different compared models"):
        comparison.run(two, out=tmp_path, pair=["linear", "cnn"])
    with pytest.raises(MnistlensError, match="say where with out="):
        comparison.run(two, maps=True)
    with pytest.raises(MnistlensError, match="two or more models"):
        comparison.load_models(["cnn.pt"])


def row(name: str, accuracy: float, convolutional: bool) -> dict:
    """A model's row as compare_models makes it, with only what observations read."""
    return {
        "name": name,
        "accuracy": accuracy,
        "convolutional": convolutional,
        "parameters": 1000,
        "per_digit": [accuracy] * 10,
        "train_test_gap": None,
    }


def test_observations_follow_the_studies_given_and_the_weights_not_the_names():
    """Width is discussed for the models the studies name, whatever they are called; the
    convolution finding sets the best dense model against the best convolutional one,
    known from their weights (here the conv model is called "plain")."""
    from mnistlens.comparison.report import observations

    names = ["small", "large", "plain"]
    report = {
        "models": [row("small", 0.97, False), row("large", 0.98, False), row("plain", 0.99, True)],
        "pairs": [
            {"a": a, "b": b, "mcnemar_p": 0.01} for i, a in enumerate(names) for b in names[i + 1 :]
        ],
    }
    found = observations(report, studies={"width": ("small", "large")})
    assert any(f.startswith("**Width**") and "`small`" in f and "`large`" in f for f in found)
    convolution = [f for f in found if f.startswith("**Convolution**")]
    assert len(convolution) == 1 and "`large` 98.00% vs `plain` 99.00%" in convolution[0]
    assert not any(f.startswith("**Width**") for f in observations(report))
