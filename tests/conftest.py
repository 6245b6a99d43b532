"""Shared fixtures: real MNIST from ../shared/data/mnist and the shipped checkpoints."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests read the real MNIST files beside the project unless told otherwise.
os.environ.setdefault("MNISTLENS_DATA", str(ROOT.parent / "shared" / "data" / "mnist"))
# Under pytest-xdist each worker is one process per core: one torch thread each, or the
# workers' threads fight over the cores (torch's threads slow down far more than
# twofold under contention). Set before any test imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# glibc returns freed memory to the OS early and maps every large block afresh, so the
# many short-lived tensors of a few MB cost page faults on every use (a fifth of the
# faithfulness tests' time was system time). Keeping freed memory for reuse: 23 s ->
# 19.6 s for test_faithfulness.py. Read by glibc when a process starts, so this reaches
# the xdist workers and the processes tests start (conftest is imported before either).
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 * 2**20))  # as far as glibc slides it
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(4 * 2**30))
# Tests never read or write the user's cache (~/.cache/mnistlens: sanity verdicts,
# training indexes): a run starts from an empty one, as on a fresh machine. One for the
# whole run, made by its first process (under xdist the controller, which removes it
# at the end) and shared by the workers, as one user's app servers and commands share
# theirs: what one worker computed (the explorer's sanity verdicts, the MLP's training
# index) another reads. Tests that need an empty cache make their own.
if "MNISTLENS_TEST_CACHE" not in os.environ:
    os.environ["MNISTLENS_TEST_CACHE"] = tempfile.mkdtemp(prefix="mnistlens-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MNISTLENS_TEST_CACHE"], ignore_errors=True)
os.environ["XDG_CACHE_HOME"] = os.environ["MNISTLENS_TEST_CACHE"]
CHECKPOINTS = ROOT / "checkpoints"


# The test files, longest first (seconds each took in one run on 2 cores, 2026-11-26).
# pytest-xdist hands each worker a whole file (`--dist loadfile`, pyproject.toml) in
# this order, the next one when it is nearly done: longest first, the two workers end
# within a second or so of each other, and a file's module fixtures (a fork server, a
# trained model, a comparison) are made once, not once per worker. A file not listed
# runs first.
LONGEST_FIRST = (
    "test_cli.py",  # 37
    "test_app_browser.py",  # 35
    "test_app.py",  # 18
    "test_faithfulness.py",  # 13
    "test_train.py",  # 10
    "test_explain.py",  # 9
    "test_killed_runs.py",  # 7
    "test_attribution.py",  # 6.5
    "test_influence.py",  # 5.6
    "test_fuzz.py",  # 5
    "test_conventions.py",  # 4
    "test_compare.py",  # 3.6
    "test_fastig.py",  # 3.2
    "test_internals.py",  # 2.9
    "test_data.py",  # 2.5
    "test_formats.py",  # 2.3
    "test_method_contracts.py",  # 2.3
    "test_checkpoint.py",  # 2.3
    "test_series.py",  # 1.7
    "test_prepare.py",  # 1.3
    "test_models.py",  # 0.3
)


def pytest_collection_modifyitems(config, items):
    def place(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else -1

    items.sort(key=place)  # stable: a file's tests keep their order


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """The tests are over: freeze the garbage collector's objects, as `mnistlens` does
    before it exits. A worker holds ~550,000 objects (torch, Streamlit, matplotlib),
    and pytest's last collections plus the interpreter's own at exit walked them all,
    ~2 s per worker after its last test while the run waited (py-spy). Garbage made
    from here on is still collected; the OS frees the rest."""
    import gc

    gc.freeze()


# The accuracy each shipped checkpoint must reach on the full 10k test set.
REQUIRED_ACCURACY = {"linear": 0.920, "mlp": 0.980, "cnn": 0.993}


@pytest.fixture(scope="session")
def test_set():
    """The real MNIST test split: (10000, 1, 28, 28) float32 and (10000,) int64."""
    from mnistlens.data import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="session")
def shipped():
    """name -> (model, metadata) for every shipped checkpoint."""
    from mnistlens import load_model

    return {name: load_model(CHECKPOINTS / f"{name}.pt") for name in REQUIRED_ACCURACY}


@pytest.fixture
def fresh_python(tmp_path):
    """Run a Python script in a fresh interpreter (in tmp_path; what it imports is its
    own) and return the JSON object its last printed line holds."""
    import json
    import subprocess
    import sys

    def run(script: str, timeout: float = 600) -> dict:
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture(scope="session")
def mlp_program(tmp_path_factory) -> Path:
    """The shipped MLP as a torch.export program (.pt2, dynamic batch), as a user would
    save it: exported once per test process for the tests that upload or load one."""
    import torch

    from mnistlens import load_model

    model, _ = load_model("mlp.pt")
    batch = torch.export.Dim("batch")
    exported = torch.export.export(
        model.eval(), (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)
    )
    path = tmp_path_factory.mktemp("program") / "mine.pt2"
    torch.export.save(exported, path)
    return path


@pytest.fixture(scope="session")
def cnn(shipped):
    """The shipped CNN, in eval mode."""
    return shipped["cnn"][0]


class WritesAFile:
    """A pickle payload that, when unpickled by plain pickle, creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))
