"""Real child processes that start without importing torch again: `mnistlens ARGS`,
and plain `torch.export.load` on crafted files.

test_killed_runs.py kills runs of the command at chosen moments; test_formats.py runs
crafted .pt2 files the way a user without mnistlens would, to show their payloads are
live. A fresh interpreter spends most of its start importing torch; here each child
is forked from a multiprocessing fork server that has imported torch and the command's
modules once (per test process), so it starts at once. It is still a
process of its own, with its own memory, killed with SIGKILL like any other: what
survives a kill, or what a payload does, is the same. The functions here run in the
child.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import types

# Imported once by the fork server; each child starts with them loaded. torch._dynamo:
# torch.optim imports it when a run makes its optimizer, a large part of every `train`.
PRELOAD = [
    "torch",
    "torch._dynamo",
    "numpy",
    "mnistlens.cli",
    "mnistlens.commands.train",
    "mnistlens.train",
]


class Child:
    """A started child, answering the calls the tests make of a subprocess.Popen."""

    def __init__(self, process: multiprocessing.Process):
        self.process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"child {self.pid}", timeout)
        return self.process.exitcode


_context = None


def start(target, *args) -> Child:
    """Run target(*args) in a new child of the fork server."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    process = _context.Process(target=target, args=args, daemon=True)
    # A child re-imports this process's __main__ before it runs (multiprocessing's spawn
    # preparation). After an AppTest in this process, Streamlit may have left the app's
    # script there (apps/explore.py, whose imports only work under Streamlit), so the
    # children get an empty __main__: they need nothing from it.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        process.start()
    finally:
        sys.modules["__main__"] = main
    return Child(process)


def run_command(args: list[str], out: str, err: str, pause: dict | None = None) -> None:
    """`mnistlens ARGS` with stdout and stderr going to the files `out` and `err`; exits
    with the command's code. pause {"when": "before" or "after", "target": path,
    "marker": path}: when the output is renamed onto `target`, write `marker` and wait
    (a slow disk, in effect) just before or just after the rename, to be killed there."""
    import torch

    from mnistlens import cli

    torch.set_num_threads(1)  # one core each on a shared machine
    sys.stdout = open(out, "w", buffering=1)  # noqa: SIM115 (the process ends with it)
    sys.stderr = open(err, "w", buffering=1)  # noqa: SIM115
    if pause:
        real_replace = os.replace
        target = os.path.abspath(pause["target"])

        def wait_here(when: str) -> None:
            if pause["when"] == when:
                with open(pause["marker"], "w") as marker:
                    marker.write(when)
                time.sleep(300)

        def replace(src, dst, *rest, **options):
            ours = os.path.abspath(dst) == target
            if ours:
                wait_here("before")
            real_replace(src, dst, *rest, **options)
            if ours:
                wait_here("after")

        os.replace = replace
    sys.exit(cli.main(args))


def hang_in_atomic_write(target: str, marker: str) -> None:
    """atomic_write(target) that writes a little, touches `marker`, then hangs mid-write
    until it is killed."""
    from mnistlens.io import atomic_write

    def write(f):
        f.write(b"partial")
        f.flush()
        open(marker, "w").close()
        time.sleep(300)

    atomic_write(target, write)


def exit_at_once() -> None:
    pass


def plain_export_load(files: list[tuple[str, str]], path: str, out: str) -> None:
    """For each (program, marker): torch.export.load(program).module()(x), as a user
    would run it, with `path` first on sys.path (a module a payload may import). Writes
    {program: whether its marker file exists afterwards} as JSON to `out`."""
    import json
    import pathlib

    import torch

    sys.path.insert(0, path)
    done = {}
    for program, marker in files:
        try:
            torch.export.load(program).module()(torch.zeros(2, 1, 28, 28))
        except Exception:
            pass  # many payloads break the program after they have run
        done[program] = pathlib.Path(marker).exists()
    pathlib.Path(out).write_text(json.dumps(done))
