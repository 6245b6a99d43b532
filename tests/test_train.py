"""mnistlens.train: short real runs learn, are reproducible, and round-trip through a file."""

import importlib.metadata

import pytest
import torch

from mnistlens import MnistlensError, load_model, save_checkpoint
from mnistlens.train import TrainConfig, random_affine, train

# A small CNN on 2,000 real training images: seconds, yet far above chance.
QUICK = dict(
    arch="cnn",
    arch_kwargs={"channels": [8, 16], "hidden": 32},
    epochs=1,
    batch_size=50,
    lr=5e-3,
    train_subset=2000,
    seed=3,
)


@pytest.fixture(scope="module")
def quick_run():
    return train(TrainConfig(**QUICK), progress=False)


def test_short_run_beats_chance_clearly(quick_run):
    """After one epoch on 2k images the CNN classifies the 10k test images far above 10%."""
    _, meta = quick_run
    assert meta["test_accuracy"] > 0.6
    assert len(meta["per_digit_accuracy"]) == 10
    assert meta["history"][0]["loss"] < 2.3  # below the loss of uniform guessing, ln(10)


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(quick_run):
    model, _ = quick_run
    again, _ = train(TrainConfig(**QUICK), progress=False)
    other, _ = train(TrainConfig(**{**QUICK, "seed": 4}), progress=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not torch.equal(model.conv1.weight, other.conv1.weight)


def test_metadata_records_how_the_model_was_made(quick_run):
    _, meta = quick_run
    assert meta["seed"] == 3 and meta["epochs"] == 1
    assert meta["config"]["arch_kwargs"] == {"channels": [8, 16], "hidden": 32}
    assert meta["config"]["lr"] == 5e-3
    assert set(meta["versions"]) >= {"torch", "torchvision", "mnistlens", "python"}
    assert meta["versions"]["torchvision"] == importlib.metadata.version("torchvision")
    assert set(meta["data_checksums"]) == {"train", "test"}
    assert meta["train_seconds"] >= 0 and "T" in meta["date"]


def test_metadata_records_the_accuracy_on_the_first_training_images(quick_run):
    """The train-test gap's training half, measured once at training time on the first
    10,000 training images (2,000 of them seen in training here, so clearly higher
    there than on the 8,000 unseen)."""
    from mnistlens.data import load_mnist
    from mnistlens.metrics import evaluate

    model, meta = quick_run
    images, labels = load_mnist("train")
    assert meta["train_accuracy_images"] == 10_000
    assert meta["train_accuracy"] == evaluate(model, images[:10_000], labels[:10_000])["accuracy"]
    seen = evaluate(model, images[:2000], labels[:2000])["accuracy"]
    unseen = evaluate(model, images[2000:10_000], labels[2000:10_000])["accuracy"]
    assert seen > unseen


def test_checkpoint_round_trip(quick_run, tmp_path, test_set):
    """save -> load_model gives the same predictions and the recorded metadata."""
    model, meta = quick_run
    path = save_checkpoint(tmp_path / "quick.pt", model, "cnn", QUICK["arch_kwargs"], meta)
    loaded, loaded_meta = load_model(path)
    assert not loaded.training
    images = test_set[0][:256]
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert loaded_meta["test_accuracy"] == meta["test_accuracy"]
    assert loaded_meta["arch"] == "cnn" and loaded_meta["path"] == str(path)
    assert [p.name for p in tmp_path.iterdir()] == ["quick.pt"]  # no temp file left


def test_random_affine_with_zero_bounds_is_identity(test_set):
    images = test_set[0][:16]
    config = TrainConfig(max_shift=0, max_rotation=0, max_scale=0)
    out = random_affine(images, config, torch.Generator().manual_seed(0))
    assert torch.allclose(out, images, atol=1e-5)


def test_random_affine_moves_ink_but_keeps_most_of_it(test_set):
    images = test_set[0][:64]
    out = random_affine(images, TrainConfig(), torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert not torch.allclose(out, images, atol=1e-2)
    ink_ratio = out.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ((ink_ratio > 0.7) & (ink_ratio < 1.3)).all()


def test_config_rejects_unknown_keys():
    with pytest.raises(MnistlensError, match=r"unknown training options \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"arch": "vgg"}, "unknown architecture 'vgg'"),
        ({"epochs": 0}, "epochs"),
        ({"train_subset": 10}, "smaller than batch_size"),
    ],
)
def test_config_validation(changes, pattern):
    with pytest.raises(MnistlensError, match=pattern):
        TrainConfig(**changes).validate()


# ---------------------------------------------------------------- global RNG
# train() draws from its own generators: a notebook that trains a model and then samples
# must get the same samples as without the training.

TINY = dict(arch="mlp", arch_kwargs={"hidden": [16]}, epochs=1, batch_size=64, train_subset=256)


def test_train_leaves_the_callers_global_rng_state_unchanged():
    """A caller's random stream continues as if train() had not run."""
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    expected_next = torch.rand(5)
    torch.set_rng_state(before)
    train(TrainConfig(**TINY, seed=7), progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected_next)


def test_training_is_deterministic_whatever_the_callers_rng_state():
    """Same seed -> identical weights, even when the global RNG was in another state."""
    torch.manual_seed(1)
    first, _ = train(TrainConfig(**TINY), progress=False)
    torch.manual_seed(2)
    torch.rand(100)
    second, _ = train(TrainConfig(**TINY), progress=False)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


# ---------------------------------------------------------------- SGD, zero init
# The linear model's weights are shown as digit templates: plain SGD from zeros on raw
# pixels leaves a pixel no training image inks at exactly zero, so the border stays blank.

LINEAR_SGD = dict(
    arch="linear",
    arch_kwargs={"normalize": False},
    optimizer="sgd",
    zero_init=True,
    augment=False,
    epochs=1,
    lr=0.5,
    weight_decay=1e-3,
    train_subset=2048,
)


def test_sgd_from_zeros_on_raw_pixels_leaves_never_inked_pixels_at_zero():
    """No input, no gradient: a pixel blank in every training image keeps weight exactly 0."""
    from mnistlens.data import load_mnist

    model, meta = train(TrainConfig(**LINEAR_SGD), progress=False)
    assert meta["config"]["optimizer"] == "sgd" and meta["config"]["zero_init"] is True
    assert meta["test_accuracy"] > 0.7
    images, _ = load_mnist("train")
    blank = images[:2048].amax(dim=0).flatten() == 0  # (784,) never inked in the subset
    assert 100 < int(blank.sum()) < 784
    assert (model.fc.weight[:, blank] == 0).all()
    assert (model.fc.weight[:, ~blank] != 0).any()


def test_sgd_momentum_is_used_and_adamw_unchanged():
    """The optimizer option picks the optimizer; momentum changes the SGD trajectory."""
    plain, _ = train(TrainConfig(**LINEAR_SGD), progress=False)
    heavy, _ = train(TrainConfig(**{**LINEAR_SGD, "momentum": 0.5}), progress=False)
    assert not torch.equal(plain.fc.weight, heavy.fc.weight)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"optimizer": "adam"}, r"unknown optimizer 'adam'; choose one of \['adamw', 'sgd'\]"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"arch": "mlp", "zero_init": True}, "zero_init only suits the 'linear' model"),
    ],
)
def test_optimizer_options_are_validated(changes, pattern):
    with pytest.raises(MnistlensError, match=pattern):
        TrainConfig(**changes).validate()


# ---------------------------------------------------------------- snapshots for TracIn
# TracIn sums over checkpoints saved during training: saving them must not change the
# training itself.

# A small CNN with batch norm, dropout and augmentation: every random draw in play.
SNAPSHOT_CNN = dict(
    arch="cnn",
    arch_kwargs={"channels": [8, 16], "hidden": 32},
    epochs=3,
    batch_size=50,
    train_subset=500,
    seed=5,
)


def test_snapshot_epochs_are_evenly_spaced_and_end_at_the_last():
    from mnistlens.train import snapshot_epochs

    assert snapshot_epochs(8, 4) == [2, 4, 6, 8]
    assert snapshot_epochs(8, 3) == [2, 5, 8]
    assert snapshot_epochs(5, 5) == [1, 2, 3, 4, 5]
    assert snapshot_epochs(5, 1) == [5]
    assert snapshot_epochs(5, 0) == []


@pytest.mark.slow
def test_snapshots_leave_training_bit_identical():
    """Keeping snapshots copies weights and draws nothing: same weights, same history."""
    plain, plain_meta = train(TrainConfig(**SNAPSHOT_CNN), progress=False)
    kept, kept_meta = train(TrainConfig(**SNAPSHOT_CNN, snapshots=3), progress=False)
    assert "snapshots" not in plain_meta
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, kept.state_dict()[name]), name
    assert plain_meta["history"] == kept_meta["history"]
    assert plain_meta["test_accuracy"] == kept_meta["test_accuracy"]


@pytest.mark.slow
def test_snapshots_hold_their_epochs_weights_and_learning_rates():
    """2 snapshots of 3 epochs: after epochs 1 and 3, the last = the final weights, each
    with the mean one-cycle learning rate of the steps since the previous snapshot."""
    from mnistlens import models
    from mnistlens.train import make_optimizer

    config = TrainConfig(**SNAPSHOT_CNN, snapshots=2)
    model, meta = train(config, progress=False)
    record = meta["snapshots"]
    assert record["epochs"] == [1, 3] and meta["config"]["snapshots"] == 2
    assert len(record["state_dicts"]) == len(record["learning_rates"]) == 2
    final = model.state_dict()
    for name, tensor in record["state_dicts"][1].items():
        assert torch.equal(tensor, final[name]), name
        assert tensor.data_ptr() != final[name].data_ptr()  # a copy, not the live weights
    assert not torch.equal(record["state_dicts"][0]["head.weight"], final["head.weight"])

    steps = 500 // 50  # per epoch
    optimizer, schedule = make_optimizer(models.build("cnn", **config.arch_kwargs), config, steps)
    rates = []
    for _ in range(3 * steps):  # the rate each step uses, replayed on a fresh schedule
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: changes nothing, keeps the scheduler's order
        schedule.step()
    expected = [sum(rates[:steps]) / steps, sum(rates[steps:]) / (2 * steps)]
    assert record["learning_rates"] == pytest.approx(expected, rel=1e-12)
    assert [h["lr"] for h in meta["history"]][0] == pytest.approx(expected[0], rel=1e-12)
    assert 0 < expected[1] < config.lr


@pytest.mark.parametrize("bad", [-1, 4, True, 1.5])
def test_snapshots_are_validated(bad):
    with pytest.raises(MnistlensError, match=rf"snapshots={bad!r} must be an integer from 0 to"):
        TrainConfig(**{**SNAPSHOT_CNN, "snapshots": bad}).validate()


def test_train_command_writes_snapshots_that_load_as_data(tmp_path, capsys):
    """`mnistlens train --snapshots 2` stores them in the checkpoint; the file loads with
    weights_only=True and through load_model, snapshots included."""
    from mnistlens import cli

    out = tmp_path / "snap.pt"
    argv = ["train", "--arch", "mlp", "--arch-kwargs", "hidden=16,", "--epochs", "2"]
    argv += ["--snapshots", "2", "--train-subset", "256", "--batch-size", "64", "--quiet"]
    assert cli.main([*argv, "--out", str(out)]) in (0, None)
    assert "kept 2 snapshots for TracIn (after epochs 1, 2)" in capsys.readouterr().out
    raw = torch.load(out, weights_only=True)
    record = raw["metadata"]["snapshots"]
    assert record["epochs"] == [1, 2] and len(record["learning_rates"]) == 2
    assert set(record["state_dicts"][0]) == set(raw["state_dict"])
    model, meta = load_model(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(meta["snapshots"]["state_dicts"][-1][name], tensor), name
