"""How the explorer's server process runs torch, Python's garbage collector and its warm-up.

Settings for the whole process, made once (`configure`, which the router calls on
every run); the timings behind them are in benchmarks/README.md ("The explorer in a
real browser", "Many users at once"). Streamlit's own collection after every run is off
in .streamlit/config.toml.

Streamlit runs every session's script in a thread of this one process. `serving`
counts the runs in progress, so that the warm-up (warm.py) computes only while no user
waits for the server.
"""

from __future__ import annotations

import atexit
import functools
import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_runs = 0  # script runs in progress, all sessions
_last = 0.0  # time.monotonic() when one last started or ended
_changed = threading.Condition()


@functools.cache
def configure() -> None:
    """One torch thread, no final garbage collections when the server stops, and the
    warm-up started (once per process; not under AppTest, whose tests time and count
    what each run computes)."""
    # A click explains one image, too small to gain from parallel kernels, and Streamlit
    # serves its sessions from threads of this one process: with more torch threads than
    # idle cores, OpenMP's threads wait for each other's cores and a click slows down
    # many times over.
    torch.set_num_threads(1)
    # Stopping the server would walk every object torch, Streamlit and the models made;
    # frozen, they are left to the OS, as the `mnistlens` command does before it exits.
    atexit.register(gc.freeze)
    from streamlit import config

    if not config.get_option("global.appTest"):
        import warm

        warm.start()


@contextmanager
def serving() -> Iterator[None]:
    """Around a session's script run: counted while it lasts (`wait_until_idle`)."""
    global _runs, _last
    with _changed:
        _runs, _last = _runs + 1, time.monotonic()
    try:
        yield
    finally:
        with _changed:
            _runs, _last = _runs - 1, time.monotonic()
            _changed.notify_all()


def wait_until_idle(quiet: float = 0.3) -> None:
    """Return once no script run has started or been in progress for `quiet` seconds
    (a user's click often brings a second run right after the first)."""
    with _changed:
        while True:
            _changed.wait_for(lambda: _runs == 0)
            left = _last + quiet - time.monotonic()
            if left <= 0:
                return
            _changed.wait(left)
