"""mnistlens.data: real MNIST in memory, the input convention, clear errors."""

import pytest
import torch

from mnistlens import MnistlensError
from mnistlens.data import (
    data_checksums,
    default_data_dir,
    get_test_image,
    load_mnist,
    resolve_data_dir,
)

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_test_split_shapes_dtypes_and_range(test_set):
    """The test split is 10k (1, 28, 28) float32 images in [0, 1] with int64 labels."""
    images, labels = test_set
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    # original MNIST order: the first test digits are 7, 2, 1, 0, 4
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_train_split_label_counts_and_pixel_statistics():
    """The train split has MNIST's published label counts and pixel mean/std."""
    images, labels = load_mnist("train")
    assert images.shape == (60_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == TRAIN_LABEL_COUNTS
    assert images.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert images.std().item() == pytest.approx(0.3081, abs=1e-4)


def test_loaded_tensors_are_copies(test_set):
    """Changing a returned tensor does not change what the next caller gets."""
    images, labels = load_mnist("test")
    images.zero_()
    labels.zero_()
    again, again_labels = load_mnist("test")
    assert again.sum() > 0 and again_labels[0] == 7


def test_get_test_image_matches_the_split(test_set):
    images, labels = test_set
    image, label = get_test_image(42)
    assert image.shape == (1, 28, 28)
    assert torch.equal(image, images[42]) and label == labels[42].item()


@pytest.mark.parametrize("index", [-1, 10_000])
def test_get_test_image_out_of_range(index):
    with pytest.raises(MnistlensError, match=r"out of range.*0 to 9999"):
        get_test_image(index)


def test_unknown_split():
    with pytest.raises(MnistlensError, match="unknown split 'val'; choose one of train, test"):
        load_mnist("val")


def test_missing_files_error_names_directory_and_files(tmp_path):
    """An empty data dir offline: one line naming the dir, the missing files and the fix."""
    with pytest.raises(MnistlensError) as info:
        load_mnist("test", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "t10k-images-idx3-ubyte" in message and "MNISTLENS_DATA" in message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_offline_env_var_prevents_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLENS_OFFLINE", "1")
    with pytest.raises(MnistlensError, match="download is switched off"):
        load_mnist("test", data_dir=tmp_path)


def test_data_dir_precedence(tmp_path, monkeypatch):
    """--data-dir beats $MNISTLENS_DATA, which beats the user cache directory."""
    monkeypatch.setenv("MNISTLENS_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("MNISTLENS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == default_data_dir() == tmp_path / "cache" / "mnistlens"


def test_data_checksums_are_stable_and_distinct():
    sums = data_checksums()
    assert sums == data_checksums()
    assert set(sums) == {"train", "test"} and sums["train"] != sums["test"]
    assert all(len(v) == 64 for v in sums.values())
