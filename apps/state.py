"""What every page of the explorer shares: the sidebar, the loaders, and the URL.

One place for the choices a user makes once and every page reads (the model, the
digit: a test image or a drawing), for the loaders (one copy of the data per process,
one copy of a model per session), and for the link: the URL's query parameters restore
a view on the first run of a session, and each run writes the view back, so the
address bar is always a link to what is on screen (issue 11).

Widgets are created without default arguments: their starting values are put into
`st.session_state` first (from the URL, else the defaults below), which is the one
way Streamlit accepts a value from both places without a warning.
"""

from __future__ import annotations

import atexit
import copy
import gc
import hashlib
from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from mnistlens import attribution, load_model
from mnistlens.data import load_mnist, prepare_digit
from mnistlens.errors import MnistlensError
from mnistlens.paths import checkpoint_dir

SOURCES = ("test image", "draw your own")
DEFAULTS = {"source": "test image", "index": 42}
# What a link carries: query parameter -> session-state key (the page is the URL's
# path, or ?page=, see the router). "models" are the Compare page's chosen models.
URL_KEYS = {"model": "model", "index": "index", "methods": "methods", "models": "compare_models"}
CANVAS = 252  # px: the sidebar's width, less its padding

# One torch thread per process. A click explains one image, too small to gain from
# parallel kernels, and Streamlit serves sessions from threads of one process; with two
# threads on two busy cores, OpenMP's waiting threads made a click's three maps take
# 5.1 s instead of 0.19 s (measured while other jobs ran; issue 11).
torch.set_num_threads(1)
# When the server stops, its last garbage collections would walk every object torch,
# Streamlit and the loaded models made (~1 s after Ctrl-C); frozen, they are skipped
# and the OS frees them, as `mnistlens` does before it exits. (This module is imported
# once per server process; the scripts that import it rerun, it does not.)
atexit.register(gc.freeze)


# Users' own models (the "Your model" page), process-wide, keyed by a hash of the file
# and the options: a session lists only the ones it uploaded (session_state["uploads"]),
# and uses its own copy of them as of every model (`get_model`).
_UPLOADS: dict[str, tuple[nn.Module, dict]] = {}


@st.cache_resource(show_spinner=False)
def _load(name: str) -> tuple[nn.Module, dict]:
    """A shipped checkpoint by file name, an uploaded model, or a series member by name
    (the Compare page), loaded once per process; only ever copied (`get_model`), never
    used itself."""
    from mnistlens import series  # only the Compare page names series members

    if name in _UPLOADS:
        return _UPLOADS[name]
    if name in series.list_series():
        return series.load_series(only=[name])[name]
    return load_model(name)


def get_model(name: str) -> tuple[nn.Module, dict]:
    """The model by name (a shipped checkpoint, an upload or a series member): this
    session's own copy.

    Not one object for all sessions: Streamlit runs sessions in threads of one process,
    and the library changes a model while it works on it (forward hooks to record
    activations, Captum's hooks for Grad-CAM, eval mode and frozen parameters put back
    on exit). With a shared model, session A's hook also recorded session B's forward
    passes, so A could show the activations of B's digit (65 of 9,168 reads wrong with a
    second thread running the model), and two overlapping `evaluating(freeze=True)` left
    the parameters frozen for good (issue 12). A copy costs a few MB and milliseconds.
    """
    own = st.session_state.setdefault("_models", {})
    if name not in own:
        own[name] = copy.deepcopy(_load(name))
    return own[name]


def add_upload(
    filename: str, data: bytes, arch: str | None, arch_kwargs: dict, input_convention: str
) -> str:
    """Load a user's model file (`mnistlens.load`: nothing in it can run code) and add
    it to this session's model choices; -> its name. Raises MnistlensError."""
    import tempfile
    from pathlib import Path

    from mnistlens.loading import load

    options = repr((arch, sorted(arch_kwargs.items()), input_convention)).encode()
    digest = hashlib.sha256(data + options).hexdigest()[:10]
    name = f"yours: {Path(filename).name} ({digest})"
    if name not in _UPLOADS:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(filename).name
            path.write_bytes(data)
            _UPLOADS[name] = load(
                path, arch=arch, arch_kwargs=arch_kwargs or None, input=input_convention
            )
    uploads = st.session_state.setdefault("uploads", [])
    if name not in uploads:
        uploads.append(name)
    return name


@st.cache_resource(show_spinner=False)
def get_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("test")


@st.cache_resource(show_spinner=False)
def get_train_set() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("train")


def shipped_models() -> list[str]:
    return sorted(p.name for p in checkpoint_dir().glob("*.pt"))


def compare_choices() -> list[str]:
    """The models the Compare page offers: the series members whose checkpoint exists,
    in series order, then the other shipped files."""
    from mnistlens import series

    names = [n for n in series.list_series() if series.checkpoint_path(n).is_file()]
    return names + [m for m in shipped_models() if m.removesuffix(".pt") not in names]


@dataclass(frozen=True)
class Choice:
    """The model and the digit every page looks at.

    image: (1, 28, 28) in [0, 1], or None while nothing is drawn; label: the true digit
    of a test image, None for a drawing; index: the test index, None for a drawing;
    what: how captions name the digit ("test image 42", "your drawing").
    """

    model_name: str
    model: nn.Module
    meta: dict
    image: torch.Tensor | None
    label: int | None
    index: int | None
    what: str

    @property
    def digit(self) -> str:
        """A name for the digit that caches can key on: "test 42", or the drawing's hash."""
        if self.index is not None:
            return f"test {self.index}"
        if self.image is None:
            return "nothing drawn"
        return "drawn " + hashlib.sha1(self.image.numpy().tobytes()).hexdigest()[:16]


def read_url() -> str | None:
    """On a session's first run, copy the URL's valid query parameters into session
    state; -> the page the URL asks for with ?page=, else None. Invalid values are
    dropped silently (a stale link opens the default view, not an error)."""
    if st.session_state.get("_url_read"):
        return None
    st.session_state["_url_read"] = True
    params = st.query_params
    if params.get("model") in shipped_models():
        st.session_state["model"] = params["model"]
    try:
        index = int(params.get("index", ""))
        if 0 <= index < 10000:
            st.session_state["index"] = index
    except ValueError:
        pass
    methods = []
    for name in params.get_all("methods"):
        try:
            methods.append(attribution.resolve_method(name))  # aliases (ig, gradcam) too
        except MnistlensError:
            continue
    if methods:
        st.session_state["methods"] = list(dict.fromkeys(methods))
    if wanted := params.get_all("models"):
        choices = compare_choices()  # lists the checkpoint files: once, not per name
        compared = [name for name in wanted if name in choices]
        if compared:
            st.session_state["compare_models"] = list(dict.fromkeys(compared))
    return params.get("page")


def view_params() -> dict[str, list[str]]:
    """The URL's query parameters other than ?page=."""
    return {k: st.query_params.get_all(k) for k in st.query_params if k != "page"}


def write_url() -> None:
    """Put the view into the address bar: model, test index (not for a drawing), the
    chosen methods and the compared models, whichever exist in this session."""
    view: dict[str, str | list[str]] = {}
    for param, key in URL_KEYS.items():
        value = st.session_state.get(key)
        if value is None or (key == "index" and st.session_state.get("source") != SOURCES[0]):
            continue
        view[param] = [str(v) for v in value] if isinstance(value, list) else str(value)
    now = {k: st.query_params.get_all(k) for k in st.query_params}
    if now != {k: v if isinstance(v, list) else [v] for k, v in view.items()}:
        st.query_params.from_dict(view)  # only on change: each write is a message


def _drawn_digit() -> torch.Tensor | None:
    """The sidebar canvas; -> the drawing as an MNIST-style (1, 28, 28) image, or None."""
    from streamlit_drawable_canvas import st_canvas  # imported only when drawing

    with st.sidebar:
        st.caption("Draw a digit (white on black).")
        canvas = st_canvas(
            stroke_width=20,
            stroke_color="#ffffff",
            background_color="#000000",
            height=CANVAS,
            width=CANVAS,
            drawing_mode="freedraw",
            key="canvas",
            return_image_data=True,
        )
    if canvas is None or canvas.image_data is None:
        return None
    rgb = torch.from_numpy(canvas.image_data[..., :3].astype("float32")).mean(dim=-1) / 255
    try:
        return prepare_digit(rgb)  # fitted into 20x20 and centred, as MNIST was made
    except MnistlensError:  # nothing drawn yet
        return None


def current() -> Choice:
    """The Choice the sidebar made in this run (pages call this)."""
    return st.session_state["_choice"]


def sidebar() -> Choice:
    """The shared sidebar: model and digit. -> the Choice every page reads (`current`)."""
    models = shipped_models() + st.session_state.get("uploads", [])
    st.session_state.setdefault("model", "cnn.pt" if "cnn.pt" in models else models[0])
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.sidebar.title("mnistlens")
    st.sidebar.caption(
        "Why does the model call this digit what it does? The address bar links to this view."
    )
    name = st.sidebar.selectbox("Model", models, key="model")
    source = st.sidebar.radio("Digit", SOURCES, key="source", horizontal=True)
    index = int(
        st.sidebar.number_input(
            "Test image index", 0, 9999, key="index", disabled=source != SOURCES[0]
        )
    )
    model, meta = get_model(name)
    if source == SOURCES[0]:
        images, labels = get_test_set()
        choice = Choice(
            name, model, meta, images[index], int(labels[index]), index, f"test image {index}"
        )
    else:
        choice = Choice(name, model, meta, _drawn_digit(), None, None, "your drawing")
    st.session_state["_choice"] = choice
    return choice


def require_digit(choice: Choice) -> torch.Tensor:
    """The chosen digit's image; stops the page with a hint while nothing is drawn."""
    if choice.image is None:
        st.info("Nothing drawn yet: draw a digit on the canvas in the sidebar.")
        st.stop()
    return choice.image
