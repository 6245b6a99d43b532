"""Shipped checkpoints reach their accuracy; loading never runs code from a file."""

import pickle
import re

import pytest
import torch

from mnistlens import MnistlensError, load_model
from mnistlens.data import data_checksums
from mnistlens.io import atomic_write
from mnistlens.loading.checkpoint import load_checkpoint
from mnistlens.metrics import evaluate
from mnistlens.paths import resolve_checkpoint

from conftest import CHECKPOINTS, REQUIRED_ACCURACY, WritesAFile


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REQUIRED_ACCURACY))
def test_shipped_checkpoint_reaches_its_accuracy(name, shipped, test_set):
    """Each shipped model, on the full 10k test set, meets the bar and its recorded number."""
    model, meta = shipped[name]
    report = evaluate(model, *test_set)
    assert report["n_images"] == 10_000
    assert report["accuracy"] >= REQUIRED_ACCURACY[name]
    assert report["accuracy"] == pytest.approx(meta["test_accuracy"], abs=2e-4)  # +-2 images
    assert report["per_digit_accuracy"] == pytest.approx(meta["per_digit_accuracy"], abs=3e-3)


@pytest.mark.parametrize("name", sorted(REQUIRED_ACCURACY))
def test_shipped_checkpoint_records_how_it_was_made(name, shipped):
    _, meta = shipped[name]
    assert meta["arch"] == name
    assert meta["command"].startswith(f"mnistlens train --arch {name}")
    assert meta["data_checksums"] == data_checksums()  # trained on this very data
    assert meta["versions"]["torch"].startswith("2.")
    assert meta["train_seconds"] > 0 and meta["seed"] == meta["config"]["seed"]
    assert (CHECKPOINTS / f"{name}.pt").stat().st_size < 5 * 2**20


def test_checkpoint_readme_states_the_measured_numbers(shipped):
    """checkpoints/README.md quotes each checkpoint's recorded accuracy and command."""
    readme = (CHECKPOINTS / "README.md").read_text()
    for name, (_, meta) in shipped.items():
        assert f"{meta['test_accuracy']:.2%}" in readme, name
        assert meta["command"] in readme, name


def test_bare_names_resolve_to_the_shipped_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("cnn.pt") == CHECKPOINTS / "cnn.pt"
    assert resolve_checkpoint("mlp") == CHECKPOINTS / "mlp.pt"


def test_missing_checkpoint_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MnistlensError, match=r"no checkpoint 'resnet.pt'.*cnn.pt, linear.pt"):
        load_model("resnet.pt")


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "mnistlens-checkpoint", "payload": WritesAFile(target)}, evil)

    # The payload is live: a plain unpickle of the same object really writes the file ...
    pickle.loads(pickle.dumps(WritesAFile(target)))
    assert target.exists()
    target.unlink()

    # ... but the checkpoint reader refuses the file without running it, and so does
    # `load`, which reads every format.
    with pytest.raises(MnistlensError, match="refusing to load .*would import or run code"):
        load_checkpoint(evil)
    with pytest.raises(MnistlensError, match="refusing to load .*would run code to load"):
        load_model(evil)
    assert not target.exists()


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"hello, I am a text file\n", "not a mnistlens checkpoint"),
        (None, "a torch file but not a mnistlens checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints_are_refused(tmp_path, content, pattern):
    path = tmp_path / "thing.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(MnistlensError, match=pattern) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_weights_that_do_not_fit_the_architecture(tmp_path, shipped):
    model, meta = shipped["mlp"]
    from mnistlens import save_checkpoint

    path = save_checkpoint(tmp_path / "odd.pt", model, "mlp", {"hidden": [10]}, {})
    with pytest.raises(MnistlensError, match=re.escape("do not fit architecture 'mlp'")):
        load_model(path)


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
