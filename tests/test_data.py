"""mnistlens.data: real MNIST in memory, the input convention, clear errors."""

from pathlib import Path

import pytest
import torch

from mnistlens import MnistlensError
from mnistlens.data import data_checksums, get_test_image, load_mnist, resolve_data_dir
from mnistlens.paths import cache_dir

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
    assert resolve_data_dir() == cache_dir() == tmp_path / "cache" / "mnistlens"


def test_data_checksums_hash_the_pixels_and_labels(test_set):
    """The checksum recorded in checkpoints is SHA-256 of the split's bytes, recomputed
    here from the loaded tensors."""
    import hashlib

    sums = data_checksums()
    images, labels = test_set
    digest = hashlib.sha256((images[:, 0] * 255).round().to(torch.uint8).numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    assert sums["test"] == digest.hexdigest()
    assert sums["train"] != sums["test"]


def _copy_raw(tmp_path) -> Path:
    """A writable copy of the real MNIST raw files (symlinks for the big train images)."""
    source = resolve_data_dir() / "MNIST" / "raw"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes((source / name).read_bytes())
    (raw / "train-images-idx3-ubyte").symlink_to(source / "train-images-idx3-ubyte")
    return raw


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: data[:-784], "truncated"),
        (lambda data: data[:16] + bytes([255 - data[16]]) + data[17:], "corrupted"),
        (lambda data: b"PK\x03\x04" + data[4:], "not an IDX images file"),
    ],
)
def test_damaged_mnist_files_are_named_never_read(tmp_path, damage, problem):
    """A truncated, corrupted or foreign test-images file: one line naming the file, the
    problem and the fix; never a silently different dataset."""
    raw = _copy_raw(tmp_path)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(MnistlensError) as info:
        load_mnist("test", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and problem in message
    assert "download it again" in message


# ---------------------------------------------------------------- our IDX reader


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_reader_equals_torchvision(split):
    """Our IDX reader gives torchvision's MNIST tensors exactly: uint8 (N, 28, 28) images,
    int64 labels, same values and order."""
    from torchvision.datasets import MNIST

    from mnistlens.data import _read_split

    root = resolve_data_dir().resolve()
    reference = MNIST(root=str(root), train=split == "train", download=False)
    images, labels = _read_split(split, root)
    assert images.dtype == reference.data.dtype == torch.uint8
    assert labels.dtype == reference.targets.dtype == torch.int64
    assert torch.equal(images, reference.data) and torch.equal(labels, reference.targets)


def _gz_only(tmp_path) -> Path:
    """A data dir holding only the four .gz originals (symlinks to the real ones)."""
    source = resolve_data_dir() / "MNIST" / "raw"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        gz = f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz"
        (raw / gz).symlink_to(source / gz)
    return raw


def test_gz_originals_are_read_when_the_files_are_not_there(tmp_path, test_set):
    """With only the .gz originals in MNIST/raw/, the split is the same, offline."""
    _gz_only(tmp_path)
    images, labels = load_mnist("test", data_dir=tmp_path, download=False)
    assert torch.equal(images, test_set[0]) and torch.equal(labels, test_set[1])


def test_damaged_gz_is_named(tmp_path):
    """A truncated .gz original: one line naming the file, the problem and the fix."""
    raw = _gz_only(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MnistlensError) as info:
        load_mnist("test", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "not a readable gzip file" in message and "download it again" in message


def test_images_and_labels_must_agree_in_count(tmp_path):
    """A self-consistent subset of the labels beside the full images is refused by name."""
    raw = _copy_raw(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:4] + (100).to_bytes(4, "big") + data[8:108])  # 100 labels
    with pytest.raises(MnistlensError, match=r"10,000 images but 100 labels"):
        load_mnist("test", data_dir=tmp_path, download=False)


# `mnistlens explain` must answer quickly: torchvision is slow to import (it pulls in
# torch._dynamo) and nothing on this path needs it. An import-set check, not a
# time threshold, so it holds on a loaded machine. Captum is imported by the methods
# that run, not by importing the library. (The explain command itself is checked in
# test_cli.py's end-to-end run, with -X importtime.)
NO_TORCHVISION_SCRIPT = """
import json, sys
import mnistlens, mnistlens.attribution, mnistlens.data
mnistlens.data.load_mnist("test")
print(json.dumps([m for m in ("torchvision", "captum") if m in sys.modules]))
"""


@pytest.mark.slow
@pytest.mark.process
def test_library_and_data_never_import_torchvision_or_captum(fresh_python):
    """Importing the library and loading MNIST import neither torchvision nor Captum."""
    assert fresh_python(NO_TORCHVISION_SCRIPT) == []


@pytest.mark.parametrize("kernel_size, sigma", [(13, 4.0), (3, 0.5), (5, 1.3)])
def test_gaussian_blur_equals_torchvisions(kernel_size, sigma):
    """Our blur (no torchvision import on the explain path) is torchvision's, within
    float tolerance, on real digits; a bad kernel is refused."""
    from torchvision.transforms.functional import gaussian_blur as theirs

    from mnistlens.data import gaussian_blur, load_mnist

    images = load_mnist("test")[0][:16]
    expected = theirs(images, [kernel_size, kernel_size], [sigma, sigma])
    torch.testing.assert_close(
        gaussian_blur(images, kernel_size, sigma), expected, atol=1e-6, rtol=0
    )
    with pytest.raises(MnistlensError, match="odd kernel_size"):
        gaussian_blur(images, 4, sigma)
