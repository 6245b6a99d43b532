"""The Concepts page's results: its default layers, and the TCAV scores of the built-in
concepts and of a concept of your own. Library calls behind Streamlit's caches, as in
cache.py, which has the digit's and the model's; warm.py calls these at server start."""

from __future__ import annotations

import streamlit as st
import torch

from mnistlens.errors import MnistlensError

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import charts
from kept import kept
from session import get_model


@st.cache_data(show_spinner=False)
def concept_layers(model_name: str) -> tuple[list[str], str | None]:
    """The Concepts page's default layers (`concepts.default_layers`), or [] and why
    the model has none (a linear model)."""
    from mnistlens import concepts

    try:
        return concepts.default_layers(get_model(model_name)[0]), None
    except MnistlensError as err:
        return [], str(err)


@st.cache_data(show_spinner="Testing the concepts against random ...", max_entries=32)
@kept("model_name", unless=("pictures", "drawings"))
def concept_scores(
    model_name: str,
    names: tuple[str, ...],
    layers: tuple[str, ...],
    fast: bool,
    pictures: tuple[tuple[str, bytes], ...],
    yours: str,
    drawings: bytes | None,
):
    """`concepts.run` of built-in concepts and, from 5 or more uploaded `pictures` (file
    name, bytes) and `drawings` together, your concept named `yours`, at these layers
    (10 random runs): -> {"rows": `TCAVResult.table()`, "figure": the score heat maps
    (PNG), "examples": the concept images (PNG)}.

    `drawings`: the canvas's drawings, already prepared, as the float32 bytes of their
    (N, 1, 28, 28) images: bytes, so that the cache keys on what was drawn (None: none;
    an empty bytes object is what the safe loader of kept results refuses). No argument
    has a default: the page and warm.py pass each, so that they key the same entry."""
    from mnistlens import concepts
    from mnistlens.concepts.figures import plot_examples, plot_scores

    own = {yours: _your_concept(pictures, drawings)} if pictures or drawings else None
    result, sets = concepts.run(
        get_model(model_name)[0],
        list(names),
        layers=list(layers),
        yours=own,
        fast=fast,
        device="cpu",
    )
    return {
        "rows": result.table(),
        "figure": charts.png_bytes(plot_scores(result, f"{model_name}: TCAV scores")),
        "examples": charts.png_bytes(plot_examples(sets)),
    }


def _your_concept(pictures: tuple[tuple[str, bytes], ...], drawings: bytes | None) -> torch.Tensor:
    """Your concept's images (`concepts.picture_set`): the uploaded pictures, then the
    drawings, prepared already ((N, 1, 28, 28) float32 bytes): -> (M, 1, 28, 28)."""
    from mnistlens import concepts

    drawn = None
    if drawings:
        drawn = torch.frombuffer(bytearray(drawings), dtype=torch.float32).reshape(-1, 1, 28, 28)
    return concepts.picture_set(list(pictures), drawn)
