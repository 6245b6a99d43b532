"""What makes the test suite fast, in one place: a pytest plugin that conftest.py
registers (`pytest_plugins = ["speed"]`). Nothing here changes what a test checks. The
measurements behind each choice are in benchmarks/README.md, "The test suite".

1. Parallel only when it pays. `pytest` (the whole suite: the README's and CI's
   command) or `pytest tests/` runs under pytest-xdist: one worker per core, at most
   4 (each holds MNIST and the models). Named files (`pytest tests/test_data.py`, or
   a few files, or tests in them) run in this process: each worker is another
   interpreter that imports torch and collects the tests again, and on a busy 2-core
   machine even three mid-sized files took longer on two workers than in one process.
   `-n N` or `--dist MODE` on the command line win (`-n 0`: one process, `-n auto`:
   parallel); `-p no:xdist` works too.

2. Whole files to each worker, longest first (`--dist loadfile`, LONGEST_FIRST below).
   A file's module fixtures (a fork server, a trained model, a comparison of three
   models) are then made once, not once per worker that gets some of its tests; and
   with the long files handed out first, the workers end at about the same time. The
   order is kept by hand from `pytest --durations=0` (pytest-xdist's own reordering is
   by number of tests, which says little about time; `--dist loadgroup` with pytest
   9.2 and pytest-xdist 3.8 ignores its groups). A file not in the list goes first: a
   new file is not known to be short.

3. One torch thread per test process (OMP_NUM_THREADS=1, unless set already), workers
   and single-process runs alike. Under xdist the workers already use every core; in
   one process on a shared machine, other jobs do. torch's own threads then wait for
   each other's busy core and slow down far more than twofold. The tests check what is
   computed, not how fast torch's kernels run in parallel.

4. glibc keeps freed memory for reuse (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_;
   the same as `mnistlens` does for itself, cli.keep_freed_memory). By default glibc
   maps every block over 128 KB afresh and returns it when freed, so the many
   short-lived tensors of a few MB page-fault on every use (seen as system time in the
   faithfulness tests). glibc reads these variables when a process starts:
   set here, before any worker or child process starts, they reach all of them; this
   process gets the same settings through mallopt.

5. One temporary user cache per run (MNISTLENS_TEST_CACHE, and XDG_CACHE_HOME pointing
   to it): tests never read or write the user's ~/.cache/mnistlens, and a run starts
   from an empty cache, as on a fresh machine. The first process makes it (under xdist
   the controller, which removes it at exit) and the workers share it, as one user's
   app servers and commands share theirs. What several test files read from it is
   put there once per run by session fixtures (conftest.py, `once_per_run`).

6. gc.freeze() once the tests are over. A worker holds ~550,000 objects (torch,
   Streamlit, matplotlib); pytest's last garbage collections and the interpreter's own
   at exit would walk them all while the run waits for the worker. Frozen, they are
   skipped and the OS frees the memory (as `mnistlens` itself does before it exits).
"""

import ctypes
import gc
import os
import shutil
import tempfile

import pytest

# ---------------------------------------------------------------- 1, 2: workers, order

MAX_WORKERS = 4
LONGEST_FIRST = (
    "test_app_browser.py",
    "test_app_users.py",
    "test_cli.py",
    "test_app_counterfactual.py",
    "test_app.py",
    "test_app_stress.py",
    "test_counterfactual.py",
    "test_app_concepts.py",
    "test_concepts.py",
    "test_app_concept_drawing.py",
    "test_stress.py",
    "test_lrp.py",
    "test_faithfulness.py",
    "test_typicality_routes.py",
    "test_train.py",
    "test_pipeline.py",
    "test_explain.py",
    "test_killed_runs.py",
    "test_typicality.py",
    "test_variants.py",
    "test_fuzz.py",
    "test_attribution.py",
    "test_influence.py",
    "test_formats.py",
    "test_device.py",
    "test_method_contracts.py",
    "test_conventions.py",
    "test_internals.py",
    "test_data.py",
    "test_fastig.py",
    "test_compare.py",
    "test_corruptions.py",
    "test_series.py",
    "test_checkpoint.py",
    "test_threads.py",
    "test_prepare.py",
    "test_normalize.py",
    "test_unchanged.py",
    "test_loading.py",
    "test_app_typicality.py",
    "test_predict_images.py",
    "test_packaging.py",
    "test_models.py",
    "test_transforms.py",
    "test_cli_options.py",
    "test_app_keys.py",
    "test_options.py",
    "test_analysis.py",
)


def _folder_files(config) -> int:
    """How many test files the folders on the command line hold (plain `pytest`: the
    testpaths); files named one by one do not count."""
    base = config.invocation_params.dir
    files = set()
    for arg in config.args:
        path = base / arg.split("::")[0]
        if path.is_dir():
            files.update(path.resolve().rglob("test_*.py"))
    return len(files)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads these options
def pytest_cmdline_main(config):
    option = config.option
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return  # no xdist, or this is a worker: the controller has decided
    if option.numprocesses is None and option.dist == "no" and not option.tx:
        files = _folder_files(config)
        if files < 2 or option.usepdb or option.collectonly:
            return  # one process
        option.numprocesses = "auto"  # one per core (xdist counts them) ...
        option.maxprocesses = option.maxprocesses or min(MAX_WORKERS, files)  # ... capped
    if option.numprocesses and option.dist == "no":
        option.dist = "loadfile"
        option.loadscopereorder = False  # keep LONGEST_FIRST


def pytest_collection_modifyitems(config, items):
    """Under xdist, the files in LONGEST_FIRST order (each worker collects, and the
    controller hands out whole files in that order); in one process, pytest's order."""
    if not hasattr(config, "workerinput"):
        return

    def place(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else -1

    items.sort(key=place)  # stable: a file's tests keep their order


# ---------------------------------------------------------------- 3: torch threads

# torch reads it when first imported, which is after this (by the test modules); the
# processes the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# ---------------------------------------------------------------- 4: glibc's malloc

MMAP_THRESHOLD = 32 * 2**20  # the most glibc itself slides the threshold to
TRIM_THRESHOLD = 4 * 2**30
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(TRIM_THRESHOLD))
try:
    _mallopt = ctypes.CDLL("libc.so.6").mallopt
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
    pass
else:
    _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)

# ---------------------------------------------------------------- 5: the run's cache

_made_here: str | None = None  # the cache this process made, and removes at the end


def _the_runs_cache() -> None:
    """Make the run's cache, or take the one the controller made (a worker)."""
    global _made_here
    cache = os.environ.get("MNISTLENS_TEST_CACHE")
    if not cache:
        cache = os.environ["MNISTLENS_TEST_CACHE"] = tempfile.mkdtemp(
            prefix="mnistlens-test-cache-"
        )
        _made_here = cache
    elif not os.path.isdir(cache):  # named, but an earlier run in this process removed it
        os.makedirs(cache)
        _made_here = cache
    os.environ["XDG_CACHE_HOME"] = cache


_the_runs_cache()  # at import: before any test module imports mnistlens


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    _the_runs_cache()  # a second run in the same process (pytest.main twice, mutmut)


# ---------------------------------------------------------------- 6: exit


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    gc.freeze()
    if _made_here:
        shutil.rmtree(_made_here, ignore_errors=True)
