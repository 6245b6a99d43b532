"""mnistlens.train: short real runs learn, are reproducible, and round-trip through a file."""

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
    assert set(meta["data_checksums"]) == {"train", "test"}
    assert meta["train_seconds"] >= 0 and "T" in meta["date"]


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


# ---------------------------------------------------------------- global RNG (issue 8)

TINY = dict(arch="mlp", arch_kwargs={"hidden": [16]}, epochs=1, batch_size=64, train_subset=256)


def test_train_leaves_the_callers_global_rng_state_unchanged():
    """A caller's random stream continues as if train() had not run (issue 8)."""
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


# ---------------------------------------------------------------- SGD, zero init (issue 13)

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
