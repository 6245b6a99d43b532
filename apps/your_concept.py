"""The Concepts page's concept of your own: pictures uploaded, and drawings made on a
canvas and kept in the session (keys.CONCEPT_DRAWINGS) until cleared.

`draw` draws its widgets and returns what `concept_cache.concept_scores` takes for it.
"""

from __future__ import annotations

import streamlit as st

from mnistlens.concepts.sets import MIN_PICTURES, PICTURE_SUFFIXES

# isort: split
import defaults
import keys
import sidebar


def draw() -> tuple[tuple[tuple[str, bytes], ...], bytes | None, str]:
    """The expander of your concept: -> (the uploaded pictures as (file name, bytes),
    the drawings as float32 bytes of their (N, 1, 28, 28) images or None, its name); no
    pictures and no drawings while there are fewer than 5 of them together."""
    drawn = st.session_state.setdefault(keys.CONCEPT_DRAWINGS, [])
    with st.expander("A concept of your own: 5 or more pictures of it, uploaded or drawn"):
        left, right = st.columns(2)
        uploads = left.file_uploader(
            "Pictures (dark ink on light or light on dark; each is centred and sized like a digit)",
            type=[suffix.lstrip(".") for suffix in PICTURE_SUFFIXES],
            accept_multiple_files=True,
            key=keys.CONCEPT_PICTURES,
        )
        yours = left.text_input("Its name", key=keys.CONCEPT_NAME).strip() or defaults.CONCEPT_NAME
        with right:
            _canvas(drawn)
    pictures = tuple((upload.name, upload.getvalue()) for upload in uploads or [])
    if 0 < len(pictures) + len(drawn) < MIN_PICTURES:
        st.warning(
            f"{len(pictures)} pictures uploaded, {len(drawn)} drawn; your concept needs "
            f"at least {MIN_PICTURES}."
        )
        return (), None, yours
    return pictures, b"".join(image.numpy().tobytes() for image in drawn) or None, yours


def _canvas(drawn: list) -> None:
    """The canvas, its Add button, the drawings added so far and their Clear button.
    Each drawing added gets a fresh canvas: its key counts the drawings."""
    st.caption("Or draw them, one at a time (white on black).")
    image = sidebar.drawing(f"{keys.CONCEPT_CANVAS}_{len(drawn)}")
    if st.button("Add this drawing to my concept", key="concept_add"):
        if image is None:
            st.info("Nothing drawn yet: draw on the canvas, then add it.")
        else:
            st.session_state[keys.CONCEPT_DRAWINGS] = [*drawn, image]  # (1, 28, 28)
            st.rerun()
    if drawn:
        st.image([image[0].numpy() for image in drawn], width=42)
        if st.button("Clear", key="concept_clear", help="Remove every drawing added"):
            st.session_state[keys.CONCEPT_DRAWINGS] = []
            st.rerun()
