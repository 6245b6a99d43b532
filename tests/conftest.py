"""Fixtures shared by the test files: real MNIST, the shipped checkpoints, a fresh
interpreter, and what several files read from the run's user cache (computed once per run).

What makes the suite fast (xdist workers, file order, threads, malloc, the run's
temporary cache, gc at exit) is the plugin in speed.py, registered here.
"""

import fcntl
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["speed"]

ROOT = Path(__file__).resolve().parent.parent
# Tests read the real MNIST files beside the project unless told otherwise.
os.environ.setdefault("MNISTLENS_DATA", str(ROOT.parent / "shared" / "data" / "mnist"))
# Tests compute what they check: the results shipped beside the checkpoints
# (checkpoints/cache, mnistlens.results) are read only where a test asks for them
# (test_results.py), which also checks them against what the code computes now.
os.environ["MNISTLENS_SHIPPED_CACHE"] = ""
CHECKPOINTS = ROOT / "checkpoints"


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


def save_user_model(folder: Path, n_images: int) -> Path:
    """A user's own network in `folder`: tests/nets.py's TinyNet (a functional-ReLU,
    log-softmax net on [0, 1] pixels), trained (seeded) on the first `n_images` of a
    shuffled training set, saved as net.pt (a state_dict) beside its source net.py and
    as net.pt2 (a torch.export program). -> folder."""
    import inspect

    import nets
    import torch

    from mnistlens.data import load_mnist

    (folder / "net.py").write_text(inspect.getsource(nets))
    torch.manual_seed(0)
    net = nets.TinyNet()
    images, labels = load_mnist("train")
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(0))
    for idx in order.split(100):
        loss = torch.nn.functional.nll_loss(net(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    torch.save(net.state_dict(), folder / "net.pt")
    program = torch.export.export(
        net, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, folder / "net.pt2")
    return folder


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


# ---------------------------------------------------------------- the run's user cache
# One temporary cache per run (speed.py), shared by the xdist workers. What several test
# files read from it is put there by the session fixtures below, once per run: under
# xdist each worker is a process of its own and runs a session fixture once, so a file
# lock in the cache decides which worker computes and makes the others wait and read.
# A test then gets the same thing whichever worker and file came first.


@contextmanager
def once_per_run(name: str):
    """-> True in the first test process of the run to get here (it computes `name`
    inside the block), False in every later one (which waits until that is done)."""
    cache = Path(os.environ["MNISTLENS_TEST_CACHE"])
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = cache / f".{name}.done"
        first = not done.exists()
        yield first
        if first:
            done.touch()


@pytest.fixture(scope="session")
def mlp_training_index() -> Path:
    """The shipped MLP's index of the 60,000 training images, with its TracIn factors,
    in the run's cache where `influence.training_index(mlp)` and the explorer's
    Training page look: -> that folder (`influence.default_cache_dir()`).

    Read by test_influence.py (its tests of the full index and of TracIn over it) and
    by the explorer's tests (test_app.py, test_app_browser.py); building and reading an
    index are tested on subsets in test_influence.py."""
    from mnistlens import influence, load_model

    with once_per_run("mlp-training-index") as first:
        if first:
            influence.training_index(load_model("mlp.pt")[0])
    return influence.default_cache_dir()


# The methods the explorer's Explain page shows when they pass the sanity check
# (CANDIDATES in apps/views/explain.py).
EXPLAIN_PAGE_METHODS = ("saliency", "integrated_gradients", "grad_cam")


@pytest.fixture(scope="session")
def explorer_cache(mlp_training_index) -> Path:
    """The run's cache as the explorer finds it once its first pages have been shown:
    the sanity verdicts of the Explain page's methods on the shipped CNN and MLP
    (computed with the app's own `cache.sanity`, which keeps them on disk) and the MLP's
    training index. Every explorer the tests open (AppTest in this process, a served
    one in another) reads them, so what a page shows does not depend on which test or
    worker came first. -> the cache (XDG_CACHE_HOME). Computing the verdicts, writing
    and reading them are tested by test_app.py on an empty cache of its own."""
    with once_per_run("explorer-verdicts") as first:
        if first:
            sys.path.insert(0, str(ROOT / "apps"))  # as Streamlit does for the app
            import cache as explorer  # apps/cache.py

            for model in ("cnn.pt", "mlp.pt"):
                for method in EXPLAIN_PAGE_METHODS:
                    if explorer.why_not(model, method) is None:
                        explorer.sanity(model, method, layers=1)
    return Path(os.environ["XDG_CACHE_HOME"])


@pytest.fixture(scope="module", autouse=True)
def _explorer_tests_read_a_filled_cache(request):
    """The explorer's test files get `explorer_cache` before their first test."""
    if request.path.name in ("test_app.py", "test_app_browser.py"):
        request.getfixturevalue("explorer_cache")


# ---------------------------------------------------------------- markers


def pytest_runtest_setup(item):
    """`@pytest.mark.cuda`: skipped where torch sees no CUDA device."""
    if item.get_closest_marker("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")


# ---------------------------------------------------------------- helpers


class WritesAFile:
    """A pickle payload that, when unpickled by plain pickle, creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.fixture
def canvas(monkeypatch) -> dict:
    """The explorer's drawing canvas replaced by one that returns what the test puts in
    the dict under "drawn" ((252, 252, 4) RGBA; None: nothing drawn): AppTest cannot
    drive a custom component, and the explorer imports it only when drawing."""
    import types

    held = {"drawn": None}
    fake = types.ModuleType("streamlit_drawable_canvas")
    fake.st_canvas = lambda **_: types.SimpleNamespace(image_data=held["drawn"])
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", fake)
    return held


@pytest.fixture()
def apps_on_path(monkeypatch):
    """apps/ on sys.path for the test, as Streamlit puts it for the app's runs: its
    modules (and those they import by bare name, as warm.py does) are then the objects
    those runs import (sys.modules keeps them)."""
    monkeypatch.syspath_prepend(str(ROOT / "apps"))


# ---------------------------------------------------------------- the command line, in process


@dataclass
class Result:
    """What a run of the command left: exit code and its text output."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys):
    """run(*args) -> Result: `mnistlens ARGS` in this process, output captured."""

    def run(*args) -> Result:
        capsys.readouterr()  # start from nothing
        from mnistlens import cli

        code = cli.main([str(a) for a in args])
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def assert_clean_error(result, *fragments):
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mnistlens")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
