"""mnistlens.series and the linear recipe: the series builds, trains resumably, and the
shipped softmax regression's templates look like digits (its weights are read as
pictures of the digits, so noise on the never-inked border would mislead)."""

import os

import pytest
import torch

from mnistlens import MnistlensError, load_model, metrics, models, series
from mnistlens.data import load_mnist
from mnistlens.internals import weights

QUICK = {"epochs": 1, "train_subset": 2048}  # seconds per member


@pytest.fixture(scope="module")
def train_set():
    return load_mnist("train")


# ---------------------------------------------------------------- the series


def test_series_has_at_least_ten_distinct_members_that_build_and_validate():
    names = series.list_series()
    assert len(names) >= 10 and len(set(names)) == len(names)
    assert names[0] == "linear" and names[-1] == "cnn"
    for name in names:
        member = series.get_member(name)
        member.config.validate()
        model = models.build(member.config.arch, **member.config.arch_kwargs)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10), name
        size_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
        assert size_mb < 2.5, f"{name} would add {size_mb:.1f} MB to git"


def test_series_varies_what_the_article_varies():
    """Width, depth, regularization on/off and convolution each have members."""
    hidden = {
        n: series.get_member(n).config.arch_kwargs.get("hidden")
        for n in series.list_series()
        if series.get_member(n).config.arch == "mlp"
    }
    assert {"mlp-32", "mlp-128", "mlp-512"} <= set(hidden)
    assert [32] in hidden.values() and [256, 256, 256] in hidden.values()
    noreg = series.get_member("lenet-noreg").config
    assert noreg.arch_kwargs["dropout"] == 0 and not noreg.augment
    assert series.get_member("lenet").config.augment
    assert series.get_member("linear").config.optimizer == "sgd"


@pytest.mark.parametrize("name", ["mlp", "cnn", "linear"])
def test_shipped_members_are_the_shipped_files_made_with_the_member_recipe(name):
    """The series reuses a shipped checkpoint only if its recorded config is the recipe."""
    member = series.get_member(name)
    path = series.checkpoint_path(name, "/nonexistent/series")
    assert path.name == member.shipped
    assert series.is_finished(path, member.config)


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_train_command_is_the_command_that_made_the_shipped_file(name):
    member = series.get_member(name)
    _, meta = load_model(series.checkpoint_path(name))
    assert series.train_command(member.config, f"checkpoints/{name}.pt") == meta["command"]


def test_train_command_writes_options_as_the_cli_reads_them():
    command = series.train_command(series.get_member("lenet-noreg").config, "x.pt")
    assert command == (
        "mnistlens train --arch cnn --arch-kwargs channels=6,16 kernel_size=5 "
        "batch_norm=false hidden=120 dropout=0.0 --epochs 10 --no-augment --seed 0 --out x.pt"
    )
    assert "--arch-kwargs hidden=32, normalize=false dropout=0.1 " in series.train_command(
        series.get_member("mlp-32").config, "x.pt"
    )  # a list of one int takes a trailing comma


def test_unknown_member_lists_the_known_ones():
    with pytest.raises(MnistlensError, match=r"no series member 'resnet'; members: linear, mlp-32"):
        series.get_member("resnet")
    with pytest.raises(MnistlensError, match="no series member 'resnet'"):
        series.train_series("/nonexistent", only=["linear", "resnet"], progress=False)


def test_bad_overrides_fail_before_any_training(tmp_path):
    with pytest.raises(MnistlensError, match=r"unknown training options \['epoch'\]"):
        series.train_series(tmp_path, only=["mlp-32"], overrides={"epoch": 1}, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_train_series_end_to_end_and_resumable(tmp_path, monkeypatch):
    """Two members trained into a tmp dir; a second call trains nothing; force retrains."""
    only = ["linear", "mlp-32"]
    paths = series.train_series(tmp_path, only=only, overrides=QUICK, progress=False)
    assert paths == [tmp_path / "linear.pt", tmp_path / "mlp-32.pt"]
    for name, path in zip(only, paths, strict=True):
        model, meta = load_model(path)
        assert meta["series_name"] == name
        assert meta["config"]["epochs"] == 1 and meta["config"]["train_subset"] == 2048
        assert meta["config"]["arch_kwargs"] == series.get_member(name).config.arch_kwargs
        arch = series.get_member(name).config.arch
        assert meta["command"].startswith(f"mnistlens train --arch {arch} ")
        assert " --epochs 1 " in meta["command"] and " --train-subset 2048 " in meta["command"]
        assert meta["command"].endswith(f" --seed 0 --out {path}")
        assert f"train_member({name!r}" in meta["series_command"]
        assert "'epochs': 1" in meta["series_command"]
        assert meta["test_accuracy"] > 0.5 and "data_checksums" in meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linear.pt", "mlp-32.pt"]  # no temp
    mtimes = [os.stat(p).st_mtime_ns for p in paths]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished member was trained again")

    monkeypatch.setattr(series, "train", no_training)
    again = series.train_series(tmp_path, only=only, overrides=QUICK, progress=False)
    assert again == paths and [os.stat(p).st_mtime_ns for p in paths] == mtimes
    with pytest.raises(AssertionError, match="trained again"):  # a changed recipe is stale
        stale = {**QUICK, "seed": 1}
        series.train_series(tmp_path, only=["mlp-32"], overrides=stale, progress=False)
    monkeypatch.undo()
    series.train_series(tmp_path, only=["mlp-32"], overrides=QUICK, force=True, progress=False)
    assert os.stat(paths[1]).st_mtime_ns != mtimes[1]


def test_a_broken_checkpoint_is_retrained(tmp_path):
    (tmp_path / "mlp-32.pt").write_text("not a checkpoint")
    assert not series.is_finished(tmp_path / "mlp-32.pt", series.get_member("mlp-32").config)
    (path,) = series.train_series(tmp_path, only=["mlp-32"], overrides=QUICK, progress=False)
    assert load_model(path)[1]["series_name"] == "mlp-32"


def test_load_series_names_the_missing_members(tmp_path):
    with pytest.raises(MnistlensError, match="not trained yet: mlp-32, lenet"):
        series.load_series(tmp_path, only=["mlp-32", "cnn", "lenet"])
    loaded = series.load_series(tmp_path, only=["cnn"])  # a shipped member needs no training
    assert list(loaded) == ["cnn"] and loaded["cnn"][1]["test_accuracy"] > 0.99


# ---------------------------------------------------------------- the linear recipe


def test_linear_without_normalization_has_no_norm_buffers():
    """normalize=False: `norm` is the identity, so the model sees the raw [0, 1] pixels."""
    plain = models.build("linear", normalize=False)
    assert isinstance(plain.norm, torch.nn.Identity)
    assert set(plain.state_dict()) == {"fc.weight", "fc.bias"}
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(plain(x), plain.fc(x.flatten(1)))
    assert {"norm.mean", "norm.std"} <= set(models.build("linear").state_dict())  # old files


def test_shipped_linear_templates_look_like_digits(shipped, test_set, train_set):
    """>= 92% accuracy, <= 20% of the weight energy on the border, correlation >= 0.6."""
    model, meta = shipped["linear"]
    assert metrics.evaluate(model, *test_set)["accuracy"] >= 0.920
    quality = weights.template_quality(model, *train_set)
    assert quality["border_energy"] <= 0.20
    assert quality["correlation"] >= 0.60
    assert min(quality["per_digit_correlation"]) > 0.5
    assert meta["config"]["optimizer"] == "sgd" and meta["series_name"] == "linear"


def test_series_mlps_keep_their_first_layer_off_the_empty_border():
    """The MLP recipe (SGD on raw pixels) leaves at most a quarter of each
    first-layer unit's squared weight on the outer 4 pixels, where a random init has
    49% (and the earlier AdamW recipe 27-30%); the shipped mlp.pt included."""
    mlps = [n for n in series.list_series() if series.get_member(n).config.arch == "mlp"]
    assert len(mlps) == 8
    for name in mlps:
        model, meta = load_model(series.checkpoint_path(name))
        assert meta["config"]["optimizer"] == "sgd" and not meta["arch_kwargs"]["normalize"]
        assert float(weights.unit_border_energy(model).mean()) < 0.25, name
    torch.manual_seed(0)
    fresh = models.build("mlp", hidden=[256], normalize=False)
    assert float(weights.unit_border_energy(fresh).mean()) > 0.45  # the negative control


def test_mlp_without_normalization_sees_raw_pixels():
    plain = models.build("mlp", hidden=[8], dropout=0.0, normalize=False)
    assert isinstance(plain.norm, torch.nn.Identity)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(plain(x), plain.head(plain.relu1(plain.fc1(x.flatten(1)))))


def test_template_quality_of_a_random_linear_model_is_poor(train_set):
    """Negative control: random weights spread over all pixels, correlate with nothing."""
    torch.manual_seed(0)
    quality = weights.template_quality(models.build("linear"), *train_set)
    assert quality["border_energy"] > 0.4  # 384 of the 784 pixels are border pixels
    assert abs(quality["correlation"]) < 0.1


def test_template_quality_of_the_class_contrasts_themselves_is_perfect(train_set):
    """Positive control: templates = class mean - overall mean gives correlation 1."""
    images, labels = train_set
    flat = images.flatten(1)  # (N, 784)
    means = torch.stack([flat[labels == d].mean(dim=0) for d in range(10)])  # (10, 784)
    model = models.build("linear", normalize=False)
    with torch.no_grad():
        model.fc.weight.copy_(means - flat.mean(dim=0))
    quality = weights.template_quality(model, images, labels)
    assert quality["correlation"] == pytest.approx(1.0, abs=1e-5)
    assert quality["border_energy"] < 0.05  # MNIST has almost no ink on the border


def test_template_quality_checks_its_input(shipped):
    with pytest.raises(MnistlensError, match="give both images and labels"):
        weights.template_quality(shipped["linear"][0], images=torch.zeros(1, 1, 28, 28))
    with pytest.raises(MnistlensError, match="single linear layer"):
        weights.template_quality(shipped["mlp"][0])
