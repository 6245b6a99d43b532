"""Concepts: does the idea of a closed loop (a bar, a stroke, ...) push the model
towards a digit? TCAV (`mnistlens.concepts.run`), tested against random strokes.

The built-in concepts, and one of your own from 5 or more pictures, uploaded (read like
an uploaded digit) or drawn on the canvas (prepared like a drawn digit): your_concept.py.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mnistlens.concepts import list_concepts
from mnistlens.concepts.sets import describe
from mnistlens.errors import MnistlensError

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import concept_cache
import defaults
import keys
import sidebar
import your_concept

choice = sidebar.current()
st.header("Concepts")
st.write(
    "Does the idea of a *closed loop* push the model towards 9? A concept is a set of "
    "pictures drawn by code; its direction in a layer (a CAV) separates their activations "
    "from random strokes'. A digit's TCAV score is the share of its test images whose "
    "logit grows along that direction, over 10 CAVs against different random sets, "
    "tested against random-vs-random CAVs (two-sided t-test, Holm-corrected over the "
    "digits)."
)
default_layers, reason = concept_cache.concept_layers(choice.model_name)
if reason is not None:
    st.warning(f"{reason[0].upper()}{reason[1:]}.")
    st.stop()
hidden = cache.layers(choice.model_name)[1]
st.session_state.setdefault(keys.CONCEPTS, list(defaults.CONCEPTS))
if not set(st.session_state.get(keys.CONCEPT_LAYERS) or []) <= set(hidden):
    st.session_state[keys.CONCEPT_LAYERS] = default_layers  # another model's layers
st.session_state.setdefault(keys.CONCEPT_LAYERS, default_layers)
st.session_state.setdefault(keys.CONCEPT_FAST, defaults.CONCEPT_FAST)
st.session_state.setdefault(keys.CONCEPT_NAME, defaults.CONCEPT_NAME)
left, middle, right = st.columns([2, 1, 1])
names = left.multiselect(
    "Concepts",
    list_concepts(),
    key=keys.CONCEPTS,
    format_func=lambda n: n.replace("_", " "),
    persist_state="session",
)
layers = middle.multiselect("Layers", hidden, key=keys.CONCEPT_LAYERS, persist_state="session")
fast = right.toggle("Fast (mean-difference CAVs)", key=keys.CONCEPT_FAST, persist_state="session")
pictures, drawings, yours = your_concept.draw()
if not (names or pictures or drawings) or not layers:
    st.info("Choose at least one concept and one layer.")
    st.stop()
ordered = tuple(n for n in list_concepts() if n in names)
try:
    found = concept_cache.concept_scores(
        choice.model_name,
        ordered,
        tuple(name for name in hidden if name in layers),
        fast,
        pictures,
        yours,
        drawings,
    )
except MnistlensError as err:  # a picture that does not read, a name already taken
    st.error(f"{err}.")
    st.stop()

st.subheader("Which digits each concept pushes towards")
table = pd.DataFrame(found["rows"])
summary = (
    table.groupby(["concept", "layer"], sort=False)
    .apply(
        lambda g: pd.Series(
            {
                "towards": ", ".join(str(k) for k in g[g.verdict == "towards"]["class"]) or "-",
                "against": ", ".join(str(k) for k in g[g.verdict == "against"]["class"]) or "-",
                "CAV accuracy": g["cav_accuracy"].iloc[0],
            }
        ),
        include_groups=False,
    )
    .reset_index()
)
st.dataframe(summary, hide_index=True, key="concept_summary")
st.image(found["figure"], output_format="PNG")
st.caption(
    "Mean TCAV score per digit; ▲ significantly towards the digit, ▼ against (Holm, "
    "alpha 0.05). A score near 1 or 0 that is not marked: random directions score as "
    "high for that digit."
)
with st.expander("Every score with its p-value"):
    st.dataframe(table, hide_index=True, key="concept_rows")

st.subheader("The concept images")
described = [f"{n.replace('_', ' ')}: {describe(n)}" for n in ordered]
st.caption("; ".join(described + ([f"{yours}: your pictures"] if pictures or drawings else [])))
st.image(found["examples"], output_format="PNG")
