"""This session's models: its own copies of the shipped ones, and the ones its user uploaded.

Every page asks for a model by name (`get_model`): a shipped checkpoint's file name,
a series member's name (the Compare page) or an upload's name. The answer is always
an object of this session alone. Streamlit runs sessions in threads of one process,
and the library changes a model while it works on it (forward hooks to record
activations, Captum's hooks for Grad-CAM, eval mode and frozen parameters put back on
exit): with one model object for all sessions, one session's hook recorded another's
forward passes and could show the activations of the other user's digit, and two
overlapping `evaluating(freeze=True)` left the parameters frozen for good.

Outside a session (warm.py's thread computing the first views when the server starts,
a test calling cache.py directly) a thread has its own copies the same way: no thread
ever works on another's model object.

Uploads live in the session that made them, and go with it: at most MAX_UPLOADS at a
time, the oldest dropped first, so no user can fill the server's memory with models.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import threading
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from torch import nn

from mnistlens import load, series

# isort: split
import keys

MAX_UPLOADS = 4  # models one session keeps uploaded
_OUTSIDE = threading.local()  # a thread's own copies when it runs no session


@st.cache_resource(show_spinner=False)
def _shipped(name: str) -> tuple[nn.Module, dict]:
    """A shipped checkpoint by file name or a series member by name, loaded once per
    process; only ever copied (`get_model`), never used itself."""
    if name in series.list_series():
        return series.load_series(only=[name])[name]
    return load(name)


def get_model(name: str) -> tuple[nn.Module, dict]:
    """The model by name, this session's own (outside a session, this thread's): ->
    (model, meta). An upload is the session's already; a shipped model is copied on the
    session's first use of it."""
    if get_script_run_ctx(suppress_warning=True) is None:
        own = _OUTSIDE.__dict__.setdefault("models", {})
    else:
        uploads = st.session_state.get(keys.UPLOADS, {})
        if name in uploads:
            return uploads[name]
        own = st.session_state.setdefault(keys.MODEL_COPIES, {})
    if name not in own:
        own[name] = copy.deepcopy(_shipped(name))
    return own[name]


def uploads() -> list[str]:
    """The names of this session's uploads, oldest first."""
    return list(st.session_state.get(keys.UPLOADS, {}))


def upload_name(
    filename: str, data: bytes, arch: str | None, arch_kwargs: dict, input_convention: str
) -> str:
    """The name an upload goes by: the file's name and a hash of its bytes and the
    options it was loaded with (the same file loaded differently is another model,
    and results cached by model name never mix the two)."""
    options = repr((arch, sorted(arch_kwargs.items()), input_convention)).encode()
    digest = hashlib.sha256(data + options).hexdigest()[:10]
    return f"yours: {Path(filename).name} ({digest})"


def add_upload(
    filename: str, data: bytes, arch: str | None, arch_kwargs: dict, input_convention: str
) -> str:
    """Load a user's model file (`mnistlens.load`: nothing in it can run code) and add
    it to this session's models, dropping the oldest beyond MAX_UPLOADS; -> its name.
    Raises MnistlensError (then nothing is added or dropped)."""
    name = upload_name(filename, data, arch, arch_kwargs, input_convention)
    store = st.session_state.setdefault(keys.UPLOADS, {})
    if name in store:
        store[name] = store.pop(name)  # loaded again: now the newest
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(filename).name
            path.write_bytes(data)
            store[name] = load(
                path, arch=arch, arch_kwargs=arch_kwargs or None, input=input_convention
            )
    while len(store) > MAX_UPLOADS:
        del store[next(iter(store))]
    return name
