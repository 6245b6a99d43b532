"""What every session can look at: the MNIST sets and the models shipped with mnistlens.

The same for all sessions of the server, so held once per process (the data sets) or
read from the checkpoint folder when asked (the model names). A session's own models,
its copies and its uploads, are in session.py.
"""

from __future__ import annotations

import streamlit as st
import torch

from mnistlens import series
from mnistlens.data import load_mnist
from mnistlens.paths import checkpoint_dir


@st.cache_resource(show_spinner=False)
def get_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("test")


@st.cache_resource(show_spinner=False)
def get_train_set() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("train")


def shipped_models() -> list[str]:
    """The checkpoint files the sidebar offers, by file name ("cnn.pt")."""
    return sorted(p.name for p in checkpoint_dir().glob("*.pt"))


def compare_choices() -> list[str]:
    """The models the Compare page offers: the series members whose checkpoint exists,
    in series order, then the other shipped files."""
    names = [n for n in series.list_series() if series.checkpoint_path(n).is_file()]
    return names + [m for m in shipped_models() if m.removesuffix(".pt") not in names]
