"""The shared sidebar: the model and the digit every page looks at.

The router draws it on every run (`draw`), before the page; the page reads what it
chose (`current`). Its widgets start from the session state (keys.py), where the URL
(url.py) or the defaults below put their values.
The pages about the chosen digit warn first when it is not digit-like at all
(`warn_if_not_a_digit`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from mnistlens.errors import MnistlensError
from mnistlens.pictures import prepare_digit

# isort: split
import cache
import catalog
import defaults
import keys
import session

DEFAULT_MODEL = defaults.MODEL
DEFAULTS = {keys.SOURCE: keys.TEST_IMAGE, keys.INDEX: defaults.INDEX}
CANVAS = 252  # px: the sidebar's width, less its padding


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


def drawing(key: str) -> torch.Tensor | None:
    """A drawing canvas, white on black, under widget key `key`: -> what is drawn as an
    MNIST-style (1, 28, 28) image (`prepare_digit`), or None while nothing is. The
    sidebar's digit and the Concepts page's drawings both come from here, alike."""
    from streamlit_drawable_canvas import st_canvas  # imported only when drawing

    canvas = st_canvas(
        stroke_width=20,
        stroke_color="#ffffff",
        background_color="#000000",
        height=CANVAS,
        width=CANVAS,
        drawing_mode="freedraw",
        key=key,
        return_image_data=True,
    )
    if canvas is None or canvas.image_data is None:
        return None
    rgb = torch.from_numpy(canvas.image_data[..., :3].astype("float32")).mean(dim=-1) / 255
    try:
        return prepare_digit(rgb)  # fitted into 20x20 and centred, as MNIST was made
    except MnistlensError:  # nothing drawn yet
        return None


def _drawn_digit() -> torch.Tensor | None:
    """The sidebar canvas; -> the drawing as an MNIST-style (1, 28, 28) image, or None."""
    with st.sidebar:
        st.caption("Draw a digit (white on black).")
        return drawing(keys.CANVAS)


def draw() -> Choice:
    """Draw the sidebar: model and digit. -> the Choice every page reads (`current`)."""
    models = catalog.shipped_models() + session.uploads()
    if st.session_state.get(keys.MODEL) not in models:  # first run, or an upload dropped
        st.session_state[keys.MODEL] = DEFAULT_MODEL if DEFAULT_MODEL in models else models[0]
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.sidebar.title("mnistlens")
    st.sidebar.caption(
        "Why does the model call this digit what it does? The address bar links to this view."
    )
    name = st.sidebar.selectbox("Model", models, key=keys.MODEL)
    source = st.sidebar.radio("Digit", keys.SOURCES, key=keys.SOURCE, horizontal=True)
    index = int(
        st.sidebar.number_input(
            "Test image index", 0, 9999, key=keys.INDEX, disabled=source != keys.TEST_IMAGE
        )
    )
    model, meta = session.get_model(name)
    if source == keys.TEST_IMAGE:
        images, labels = catalog.get_test_set()
        # A copy, not a view: the test set is shared by every session, and a view would
        # carry all 10,000 images into what is cached or pickled with the digit (31 MB
        # for each cached explanation).
        image = images[index].clone()
        choice = Choice(name, model, meta, image, int(labels[index]), index, f"test image {index}")
    else:
        choice = Choice(name, model, meta, _drawn_digit(), None, None, "your drawing")
    st.session_state[keys.CHOICE] = choice
    return choice


def current() -> Choice:
    """The Choice the sidebar made in this run (pages call this)."""
    return st.session_state[keys.CHOICE]


def require_digit(choice: Choice) -> torch.Tensor:
    """The chosen digit's image; stops the page with a hint while nothing is drawn."""
    if choice.image is None:
        st.info("Nothing drawn yet: draw a digit on the canvas in the sidebar.")
        st.stop()
    return choice.image


def warn_if_not_a_digit(choice: Choice, image: torch.Tensor) -> dict:
    """The chosen digit's verdict (`cache.digit_like`), with the warning the Explain page
    shows above its maps when the digit (drawn or a test image) is not digit-like: the
    pages of "This digit" call it under their header. -> the verdict's JSON dict."""
    from mnistlens.typicality import warning_text

    verdict = cache.digit_like(choice.model_name, choice.digit, image)
    warning = warning_text(verdict)
    if warning:
        st.warning(f"{warning}.", icon="⚠️")
    return verdict
