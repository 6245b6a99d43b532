"""How the explorer's server process runs torch and Python's garbage collector.

Settings for the whole process, made once (`configure`, which the router calls on
every run); the timings behind them are in benchmarks/README.md ("The explorer in a
real browser"). Streamlit's own collection after every run is off in
.streamlit/config.toml.
"""

from __future__ import annotations

import atexit
import functools
import gc

import torch


@functools.cache
def configure() -> None:
    """One torch thread, and no final garbage collections when the server stops."""
    # A click explains one image, too small to gain from parallel kernels, and Streamlit
    # serves its sessions from threads of this one process: with more torch threads than
    # idle cores, OpenMP's threads wait for each other's cores and a click slows down
    # many times over.
    torch.set_num_threads(1)
    # Stopping the server would walk every object torch, Streamlit and the models made;
    # frozen, they are left to the OS, as the `mnistlens` command does before it exits.
    atexit.register(gc.freeze)
