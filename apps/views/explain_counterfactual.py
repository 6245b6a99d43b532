"""Explain a digit, its last panel: what would make the model say another digit?

The smallest change of the digit that makes the model say the chosen class
(`mnistlens.counterfactual.counterfactuals`), drawn as the library draws it
(`figures.plot_counterfactual`: the digit, what it became, the ink added and removed,
the probabilities before and after), with the search's numbers in one line. The
class starts at the model's runner-up for each new digit; the modes are the
library's. A pertinent positive reaches no other class (the least of the digit's
own ink that keeps its answer), so in that mode the class picker is disabled. For a
digit that is not digit-like, the figure carries the page's warning (`cache.counterfactual`).
explain.py calls `draw` below the invariance strip.
"""

from __future__ import annotations

import streamlit as st
import torch

from mnistlens.counterfactual import MODES
from mnistlens.errors import MnistlensError

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import charts
import defaults
import keys
from sidebar import Choice

KEEP = "pertinent-positive"  # the mode with no class to reach
MODE_HELP = (
    "proto: the change drawn by the shipped autoencoder, pulled towards real digits of "
    "the class (other models tend to agree with it); plain: the least pixel change "
    "(elastic net), often speckle only this model reads; pertinent-negative: ink only "
    "added; pertinent-positive: the least of the digit's own ink that keeps its answer."
)
CHANGE = {"pertinent-negative": "ink added", KEEP: "ink removed"}  # else "change"


def summary(record: dict, model_name: str) -> str:
    """The one-line caption of a `Counterfactuals.record`: reached or not, the answer
    and its probability, the change's L1 and L0, plausibility, seconds."""
    if record["mode"] == KEEP:
        verdict = (
            f"Pertinent positive: {model_name} still says {record['prediction']} "
            f"({record['probability']:.1%})"
            if record["valid"]
            else f"Pertinent positive not found: {model_name} says {record['prediction']} "
            f"({record['before']} at {record['probability']:.1%})"
        )
    elif record["valid"]:
        verdict = (
            f"Reached: {model_name} now says {record['prediction']} ({record['probability']:.1%})"
        )
    else:
        verdict = (
            f"Not reached: {model_name} says {record['prediction']} "
            f"({record['target']} at {record['probability']:.1%})"
        )
    plausibility = record["plausibility"]
    return (
        f"{verdict}; {CHANGE.get(record['mode'], 'change')}: L1 {record['l1']:.1f}, "
        f"L0 {record['l0']} pixels; plausibility "
        + ("-" if plausibility is None else f"{plausibility:.4f}")
        + f" (the autoencoder's error: lower is more like a real digit); "
        f"{record['seconds']:.2f} s."
    )


def class_picker(choice: Choice, probs: torch.Tensor, disabled: bool, column) -> int:
    """The class to reach, among the nine the model does not say; a new digit (or
    model) starts again from its own runner-up rather than keep the last digit's."""
    others = [d for d in range(10) if d != int(probs.argmax())]
    state, here = st.session_state, (choice.model_name, choice.digit)
    if state.get(keys.CF_FOR) != here or state.get(keys.CF_TARGET) not in others:
        state[keys.CF_TARGET] = defaults.explain_cf_target(probs)
        state[keys.CF_FOR] = here
    return column.selectbox(
        "Make it a",
        others,
        key=keys.CF_TARGET,
        disabled=disabled,
        help="A pertinent positive keeps the model's own answer: no class to reach."
        if disabled
        else "Default: the model's runner-up for this digit.",
        persist_state="session",
    )


def draw(choice: Choice, image: torch.Tensor, probs: torch.Tensor) -> None:
    """The panel for the chosen digit (1, 28, 28) and the model's (10,) probabilities."""
    heading = st.empty()  # filled once the pickers are read: it names the class
    left, right, _ = st.columns([1, 1, 2])
    st.session_state.setdefault(keys.CF_MODE, defaults.EXPLAIN_CF_MODE)
    mode = right.selectbox("Mode", MODES, key=keys.CF_MODE, help=MODE_HELP, persist_state="session")
    keep = mode == KEEP
    target = class_picker(choice, probs, keep, left)
    prediction = int(probs.argmax())
    if keep:
        heading.subheader(f"What does it need to stay a {prediction}?")
        st.caption(
            "A pertinent positive keeps the model's own answer, so there is no class to "
            "choose: the least of the digit's ink for which the model still says "
            f"{prediction}."
        )
    else:
        heading.subheader(f"What would make it a {target}?")
    # A search costs 0.3-1 s of CPU on every new digit, which every other session on
    # the server waits for too: it runs when asked, and stays on once asked.
    if not st.toggle("Search", key=keys.CF_ON, help="Find the change for each digit shown"):
        st.caption("Switch on to search it (0.3-1 s a digit; then for every digit shown).")
        return
    try:
        found, png = cache.counterfactual(
            choice.model_name, choice.digit, image, None if keep else target, mode
        )
    except MnistlensError as err:  # e.g. a model the search cannot differentiate
        st.info(f"No counterfactual for {choice.model_name}: {err}")
        return
    record = found.record(0)
    st.image(png, output_format="PNG")
    st.caption(summary(record, choice.model_name))
    stem = f"{choice.model_name.removesuffix('.pt')}-{choice.digit.replace(' ', '')}-{mode}"
    charts.save_buttons(
        "counterfactual",
        f"counterfactual-{stem}" + ("" if keep else f"-to{target}"),
        lambda: png,  # the shown PNG: a download draws nothing again
        lambda: {
            "model": choice.model_name,
            "digit": choice.what,
            "digit_like": cache.digit_like(choice.model_name, choice.digit, image),
            **record,
        },
    )
