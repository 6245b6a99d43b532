"""A run killed at any moment leaves no half-written output: a user who stops a long
`train` or `explain --all` (or whose machine stops it) never finds a truncated file
where a checkpoint or maps were, which a later command would load as if it were whole.

`mnistlens train` and `mnistlens explain --all` run as real processes and get SIGKILL
(nothing can clean up after it) at chosen moments: while loading and computing, while
the output is being written, just before and just after it is renamed into place.
Afterwards the output path holds the previous file, untouched, or the complete new one;
whatever else is left in the folder is a hidden `.NAME.*.tmp` temporary that nothing
would take for output, and that the next write of the same output removes.

"Just before/after the rename" is made exact, not timed: the process pauses inside
`os.replace` for the output path (a slow disk, in effect) and says so in a marker file;
the test kills it there. The processes are forked from a server that has imported torch
once (`cli_child.py`), so they start at once instead of importing torch again.
"""

import os
import re
import shutil
import signal
import threading
import time

import cli_child
import numpy as np
import pytest
import torch

from mnistlens import attribution as A
from mnistlens import cli, load_model
from mnistlens.io import OLD_TEMPORARY_SECONDS, atomic_write

from conftest import CHECKPOINTS

TIMEOUT = 120  # seconds a run may take before the test gives up on it

# Each test starts runs in other processes and waits for them: the whole suite runs
# them, the quick core does not.
pytestmark = pytest.mark.slow


def start(args, tmp_path, pause_when=None, target=None):
    """Start `mnistlens ARGS` (pausing at the rename of `target` if pause_when is given);
    output goes to files, so that nothing fills up while the test waits."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    pause = None
    if pause_when:
        pause = {
            "when": pause_when,
            "target": str(target),
            "marker": str(tmp_path / "paused.marker"),
        }
    return cli_child.start(
        cli_child.run_command,
        [str(a) for a in args],
        str(logs / "out.txt"),
        str(logs / "err.txt"),
        pause,
    )


def kill(process):
    """SIGKILL (if still running) and reap: -> the return code."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    return process.wait(timeout=TIMEOUT)


def wait_for(process, ready, poll=0.002):
    """Poll until ready() or the process ends: -> whether ready() came true first."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return True
        if process.poll() is not None:
            return ready()
        time.sleep(poll)
    kill(process)
    raise AssertionError(f"no result within {TIMEOUT} s")


def temporaries(folder, name):
    """Entries of the output's folder other than the output `name`."""
    return [p.name for p in folder.iterdir() if p.name != name]


def assert_leftovers_are_temporaries(folder, name):
    """Anything left beside the output is a hidden temporary named after it, which no
    `*.pt` / `*.npy` listing (series, compare) would pick up."""
    for left in temporaries(folder, name):
        assert re.fullmatch(rf"\.{re.escape(name)}\..+\.tmp", left), left
    suffix = os.path.splitext(name)[1]
    assert [p.name for p in folder.glob(f"*{suffix}")] in ([], [name])


def run_pausing(args, tmp_path, when, target):
    """Run until it pauses at the rename of `target` (before or after), then kill it."""
    process = start(args, tmp_path, when, target)
    paused = wait_for(process, (tmp_path / "paused.marker").exists, poll=0.02)
    code = kill(process)
    log = (tmp_path / "logs" / "err.txt").read_text()[-2000:]
    assert paused, f"the output was never renamed into place (not atomic?): {code}, {log}"
    assert code == -signal.SIGKILL
    return process


# ---------------------------------------------------------------- train


def train_args(out):
    return [
        "train", "--arch", "linear", "--epochs", "1", "--train-subset", "2000",
        "--quiet", "--force", "--out", out,
    ]  # fmt: skip


@pytest.fixture
def old_checkpoint(tmp_path):
    """A shipped-looking checkpoint at the output path, to be replaced with --force."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "linear.pt"
    shutil.copyfile(CHECKPOINTS / "linear.pt", path)
    return path


def assert_old_or_new_checkpoint(path, old_bytes):
    """The path holds the old checkpoint byte for byte, or a complete new one."""
    data = path.read_bytes()
    if data == old_bytes:
        return "old"
    model, meta = load_model(path)  # complete: it loads and has its record
    assert meta["config"]["train_subset"] == 2000 and meta["config"]["epochs"] == 1
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    return "new"


@pytest.mark.process
@pytest.mark.parametrize("when", ["before", "after"])
def test_train_killed_at_the_rename(tmp_path, old_checkpoint, when):
    """Killed just before the rename: the old checkpoint is untouched (the complete new
    one is a stray temporary); just after: the new one is complete."""
    old_bytes = old_checkpoint.read_bytes()
    run_pausing(train_args(old_checkpoint), tmp_path, when, old_checkpoint)
    state = assert_old_or_new_checkpoint(old_checkpoint, old_bytes)
    assert state == {"before": "old", "after": "new"}[when]
    assert_leftovers_are_temporaries(old_checkpoint.parent, "linear.pt")


@pytest.mark.process
def test_train_killed_while_loading_and_training(tmp_path, old_checkpoint):
    """Killed early: the old checkpoint stays as it was."""
    old_bytes = old_checkpoint.read_bytes()
    process = start(train_args(old_checkpoint), tmp_path)
    time.sleep(0.3)  # early: most likely still loading (a finished run is allowed for)
    code = kill(process)
    assert code in (0, -signal.SIGKILL)
    found = assert_old_or_new_checkpoint(old_checkpoint, old_bytes)  # never anything else
    if code == 0:  # it finished before the kill (killed after the rename, it may be new too)
        assert found == "new"
    assert_leftovers_are_temporaries(old_checkpoint.parent, "linear.pt")


def test_train_without_force_leaves_an_existing_checkpoint_alone(capsys, old_checkpoint):
    """A shipped-looking checkpoint at --out is refused (exit 2, one line), not replaced."""
    before = (old_checkpoint.read_bytes(), old_checkpoint.stat().st_mtime_ns)
    args = train_args(old_checkpoint)
    args.remove("--force")
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "exists; pass --force" in err and str(old_checkpoint) in err
    assert (old_checkpoint.read_bytes(), old_checkpoint.stat().st_mtime_ns) == before
    assert temporaries(old_checkpoint.parent, "linear.pt") == []


# ---------------------------------------------------------------- explain --all


SAMPLE = np.arange(0, 10_000, 37)  # the test images whose maps are compared


@pytest.fixture(scope="module")
def saliency_maps(shipped, test_set):
    """What a finished `explain --model linear.pt --all --method saliency` writes, for
    the SAMPLE images: (len(SAMPLE), 28, 28)."""
    return A.saliency(shipped["linear"][0], test_set[0][SAMPLE])[:, 0].numpy()


@pytest.fixture
def old_maps(tmp_path):
    """An earlier, different .npy at the output path."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "maps.npy"
    np.save(path, np.arange(6, dtype=np.float32).reshape(2, 3))
    return path


def explain_args(out):
    """--force: an earlier .npy at `out` is to be replaced (without it the run refuses)."""
    return [
        "explain",
        "--model",
        "linear.pt",
        "--all",
        "--method",
        "saliency",
        "--out",
        out,
        "--force",
    ]


def assert_old_or_complete_maps(path, expected):
    maps = np.load(path)
    if maps.shape == (2, 3):
        np.testing.assert_array_equal(maps, np.arange(6, dtype=np.float32).reshape(2, 3))
        return "old"
    assert maps.shape == (10_000, 28, 28) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and (np.abs(maps).sum(axis=(1, 2)) > 0).all()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(maps[SAMPLE], expected, rtol=1e-5, atol=1e-6 * scale)
    return "new"


@pytest.mark.slow
@pytest.mark.process
def test_explain_all_killed_while_writing(tmp_path, old_maps, saliency_maps):
    """Killed as soon as anything new shows in the output folder (a temporary being
    filled, or the output itself changing): the output is the old file or complete."""
    folder, before = old_maps.parent, old_maps.stat()
    process = start(explain_args(old_maps), tmp_path)

    def writing():
        now = old_maps.stat()
        changed = (now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )
        return changed or bool(temporaries(folder, "maps.npy"))

    wait_for(process, writing, poll=0.001)
    code = kill(process)
    assert code in (0, -signal.SIGKILL)
    state = assert_old_or_complete_maps(old_maps, saliency_maps)
    assert state == "new" or code == -signal.SIGKILL
    assert_leftovers_are_temporaries(folder, "maps.npy")


@pytest.mark.slow
@pytest.mark.process
def test_explain_all_killed_while_computing_then_run_to_the_end(tmp_path, saliency_maps):
    """Killed mid-run with no earlier file: no output at all; run again to the end, the
    output equals the library's maps and no temporary is left."""
    out = tmp_path / "out" / "maps.npy"
    out.parent.mkdir()
    process = start(explain_args(out), tmp_path)
    time.sleep(0.3)  # early: most likely still loading (a finished run is allowed for)
    code = kill(process)
    assert code in (0, -signal.SIGKILL)
    if code == -signal.SIGKILL:
        assert not out.exists() or assert_old_or_complete_maps(out, saliency_maps) == "new"
    assert_leftovers_are_temporaries(out.parent, "maps.npy")
    out.unlink(missing_ok=True)  # a stray temporary stays: the next run removes it
    finished = start(explain_args(out), tmp_path)
    assert finished.wait(timeout=TIMEOUT) == 0, (tmp_path / "logs" / "err.txt").read_text()
    assert assert_old_or_complete_maps(out, saliency_maps) == "new"
    assert temporaries(out.parent, "maps.npy") == []


# ---------------------------------------------------------------- abandoned temporaries


def hanging_writer(target, tmp_path):
    """A process stopped in the middle of atomic_write(target): -> (process, the name of
    its temporary). Its marker file goes in tmp_path, which must not be target's folder."""
    marker = tmp_path / f"{target.name}.writing"
    before = set(temporaries(target.parent, target.name))
    process = cli_child.start(cli_child.hang_in_atomic_write, str(target), str(marker))
    assert wait_for(process, marker.exists, poll=0.02), "the writer ended before writing"
    [temporary] = set(temporaries(target.parent, target.name)) - before
    assert re.fullmatch(rf"\.{re.escape(target.name)}\.[^.]+\.{process.pid}\.tmp", temporary)
    return process, temporary


def dead_pid():
    """The id of a process that has exited (and been reaped)."""
    process = cli_child.start(cli_child.exit_at_once)
    process.wait(timeout=TIMEOUT)
    return process.pid


def fake_temporary(folder, name, age=0.0, directory=False):
    """A temporary named `name` in `folder`, last modified `age` seconds ago."""
    path = folder / name
    path.mkdir() if directory else path.write_bytes(b"partial")
    os.utime(path, (time.time() - age,) * 2)
    return name


@pytest.mark.process
def test_a_write_removes_the_temporary_of_a_killed_write(tmp_path):
    """SIGKILL mid-write leaves the temporary behind; the next write of the same target
    removes it, and writes the output."""
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "maps.npy"
    target.write_bytes(b"old")
    writer, temporary = hanging_writer(target, tmp_path)
    assert kill(writer) == -signal.SIGKILL
    assert temporaries(folder, "maps.npy") == [temporary]  # the kill left it
    assert target.read_bytes() == b"old"
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert temporaries(folder, "maps.npy") == []


@pytest.mark.process
def test_a_write_keeps_the_temporary_of_a_living_writer(tmp_path):
    """Another process still writing the same target keeps its temporary (it removes it
    only once that process is gone)."""
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "maps.npy"
    writer, temporary = hanging_writer(target, tmp_path)
    try:
        atomic_write(target, lambda f: f.write(b"ours"))
        assert temporaries(folder, "maps.npy") == [temporary]
    finally:
        kill(writer)
    atomic_write(target, lambda f: f.write(b"again"))
    assert temporaries(folder, "maps.npy") == []


def test_a_write_keeps_the_temporary_of_a_concurrent_write_in_this_process(tmp_path):
    """A thread of this very process, writing the same target, keeps its temporary and
    renames it into place after our write."""
    target = tmp_path / "maps.npy"
    writing, finish = threading.Event(), threading.Event()

    def slow(f):
        f.write(b"thread")
        writing.set()
        finish.wait(TIMEOUT)

    thread = threading.Thread(target=atomic_write, args=(target, slow))
    thread.start()
    try:
        assert writing.wait(TIMEOUT)
        [theirs] = temporaries(tmp_path, "maps.npy")
        assert theirs.endswith(f".{os.getpid()}.tmp")
        atomic_write(target, lambda f: f.write(b"main"))
        assert target.read_bytes() == b"main"
        assert temporaries(tmp_path, "maps.npy") == [theirs]
    finally:
        finish.set()
        thread.join(TIMEOUT)
    assert target.read_bytes() == b"thread"  # its rename still found its temporary
    assert temporaries(tmp_path, "maps.npy") == []


@pytest.mark.process
def test_another_users_writer_counts_as_alive(tmp_path, monkeypatch):
    """os.kill(pid, 0) -> PermissionError: the process exists under another user, so
    its temporary is kept; once it is gone, the temporary goes."""
    target = tmp_path / "maps.npy"
    theirs = fake_temporary(tmp_path, f".maps.npy.k3j_8x2a.{dead_pid()}.tmp")

    def not_yours(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_yours)
    atomic_write(target, lambda f: f.write(b"new"))
    assert temporaries(tmp_path, "maps.npy") == [theirs]
    monkeypatch.undo()
    atomic_write(target, lambda f: f.write(b"new"))
    assert temporaries(tmp_path, "maps.npy") == []


@pytest.mark.process
def test_other_targets_temporaries_are_kept(tmp_path):
    """Only the target's own temporaries are candidates, even when another target's
    name starts with it (`maps.npy.1`) and its writer is dead."""
    dead, old = dead_pid(), 2 * OLD_TEMPORARY_SECONDS
    others = {
        fake_temporary(tmp_path, f".other.npy.k3j_8x2a.{dead}.tmp", age=old),
        fake_temporary(tmp_path, ".other.npy.k3j_8x2a.tmp", age=old),
        fake_temporary(tmp_path, f".maps.npy.1.k3j_8x2a.{dead}.tmp", age=old),
        fake_temporary(tmp_path, ".maps.npy.1.k3j_8x2a.tmp", age=old),
        fake_temporary(tmp_path, f".xmaps.npy.k3j_8x2a.{dead}.tmp", age=old),
        fake_temporary(tmp_path, f"maps.npy.k3j_8x2a.{dead}.tmp", age=old),  # not hidden
    }
    atomic_write(tmp_path / "maps.npy", lambda f: f.write(b"new"))
    assert set(temporaries(tmp_path, "maps.npy")) == others
    atomic_write(tmp_path / "maps.npy.1", lambda f: f.write(b"new"))  # its own go
    assert set(temporaries(tmp_path, "maps.npy")) == others - {
        f".maps.npy.1.k3j_8x2a.{dead}.tmp",
        ".maps.npy.1.k3j_8x2a.tmp",
    } | {"maps.npy.1"}


def test_old_format_temporaries_go_only_when_old(tmp_path):
    """A temporary without a pid (written before pids were recorded) is removed once
    untouched for longer than the limit; a fresher one may still be being written."""
    stale = fake_temporary(tmp_path, ".maps.npy.k3j_8x2a.tmp", age=OLD_TEMPORARY_SECONDS + 60)
    fresh = fake_temporary(tmp_path, ".maps.npy.p0q_9zzb.tmp", age=OLD_TEMPORARY_SECONDS - 60)
    atomic_write(tmp_path / "maps.npy", lambda f: f.write(b"new"))
    assert temporaries(tmp_path, "maps.npy") == [fresh]
    assert stale not in temporaries(tmp_path, "maps.npy")


@pytest.mark.process
def test_odd_names_are_kept_and_failures_to_remove_ignored(tmp_path):
    """Names that do not parse stay; a temporary that cannot be removed (here a folder)
    does not make the write fail."""
    dead, old = dead_pid(), 2 * OLD_TEMPORARY_SECONDS
    kept = {
        fake_temporary(tmp_path, f".maps.npy.a.b.{dead}.tmp", age=old),
        fake_temporary(tmp_path, f".maps.npy.k3j_8x2a.{dead}x.tmp", age=old),
        fake_temporary(tmp_path, f".maps.npy.{dead}.tmp.bak", age=old),
        fake_temporary(tmp_path, ".maps.npy..tmp", age=old),
        fake_temporary(tmp_path, f".maps.npy.k3j_8x2a.{dead}.tmp", age=old, directory=True),
    }
    atomic_write(tmp_path / "maps.npy", lambda f: f.write(b"new"))
    assert (tmp_path / "maps.npy").read_bytes() == b"new"
    assert set(temporaries(tmp_path, "maps.npy")) == kept
