"""The address bar is a link to what is on screen.

On a session's first run the URL's query parameters are read into the session state
(`read_url`); after every run the view is written back (`write_url`), so copying the
address bar at any time gives a link that reopens this page, model, digit, methods
and compared models. The page itself is the URL's path (/inside), or ?page=inside in
a link built by hand (the router).

    ?model=cnn.pt&index=42&methods=saliency&methods=grad_cam&models=linear&models=mlp
"""

from __future__ import annotations

import streamlit as st

from mnistlens import attribution
from mnistlens.errors import MnistlensError

# isort: split
import catalog
import keys

# What a link carries: query parameter -> session-state key.
URL_KEYS = {
    "model": keys.MODEL,
    "index": keys.INDEX,
    "methods": keys.METHODS,
    "models": keys.COMPARE_MODELS,
}


def read_url() -> str | None:
    """On a session's first run, copy the URL's valid query parameters into session
    state; -> the page the URL asks for with ?page=, else None. Invalid values are
    dropped silently (a stale link opens the default view, not an error), and so is a
    model name no new session has (an upload belongs to the session that made it)."""
    if st.session_state.get(keys.URL_READ):
        return None
    st.session_state[keys.URL_READ] = True
    params = st.query_params
    if params.get("model") in catalog.shipped_models():
        st.session_state[keys.MODEL] = params["model"]
    try:
        index = int(params.get("index", ""))
        if 0 <= index < 10000:
            st.session_state[keys.INDEX] = index
    except ValueError:
        pass
    methods = []
    for name in params.get_all("methods"):
        try:
            methods.append(attribution.resolve_method(name))  # aliases (ig, gradcam) too
        except MnistlensError:
            continue
    if methods:
        st.session_state[keys.METHODS] = list(dict.fromkeys(methods))
    if wanted := params.get_all("models"):
        choices = catalog.compare_choices()  # lists the checkpoint files: once, not per name
        compared = [name for name in wanted if name in choices]
        if compared:
            st.session_state[keys.COMPARE_MODELS] = list(dict.fromkeys(compared))
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
        if value is None:
            continue
        if key == keys.INDEX and st.session_state.get(keys.SOURCE) != keys.TEST_IMAGE:
            continue
        view[param] = [str(v) for v in value] if isinstance(value, list) else str(value)
    now = {k: st.query_params.get_all(k) for k in st.query_params}
    if now != {k: v if isinstance(v, list) else [v] for k, v in view.items()}:
        st.query_params.from_dict(view)  # only on change: each write is a message
