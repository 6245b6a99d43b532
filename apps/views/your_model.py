"""Your model: explain a model mnistlens did not make.

Upload a `torch.export` program (.pt2), or a state_dict for a registered architecture
(no code upload: a Python class cannot come through the browser). `mnistlens.load`
reads it without running anything from the file, detects its input convention and
output kind, and `conventions.describe` says what it found. The model then joins this
session's model choices in the sidebar, and every page works on it (or says why not).
A bad file is an error in this session only.
"""

from __future__ import annotations

import streamlit as st

from mnistlens import models
from mnistlens.commands._common import parse_value
from mnistlens.errors import MnistlensError
from mnistlens.loading import conventions

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import state

KINDS = ("torch.export program (.pt2)", "state_dict of a registered architecture")

st.header("Your model")
st.write(
    "Export it with `torch.export.save(torch.export.export(model.eval(), "
    "(torch.zeros(1, 1, 28, 28),)), 'model.pt2')`, or upload `model.state_dict()` saved "
    "with `torch.save` for one of mnistlens' architectures. Nothing in the file can run code."
)
kind = st.radio("File", KINDS, key="yours_kind", horizontal=True)
upload = st.file_uploader("Model file", type=["pt2", "pt", "pth"], key="yours_file")
arch, arch_kwargs = None, {}
if kind == KINDS[1]:
    left, right = st.columns(2)
    arch = left.selectbox("Architecture", models.list_models(), key="yours_arch")
    text = right.text_input(
        "Constructor arguments", key="yours_kwargs", placeholder="hidden=256, dropout=0.1"
    )
    for item in text.replace(";", " ").split():
        key, _, value = item.partition("=")
        try:
            arch_kwargs[key] = parse_value(value)
        except ValueError as err:
            st.error(f"{key}: {err}")
            st.stop()
convention = st.selectbox(
    "Input pixels",
    ["auto", *conventions.CONVENTIONS],
    key="yours_input",
    help="auto tries [0, 1], MNIST-standardized and 0-255 on 1,000 test images and keeps "
    "the one with clearly the lowest loss.",
)


def load(upload, arch: str | None, arch_kwargs: dict, convention: str) -> None:
    """The Load button's callback. It runs before the page reruns, so it may choose the
    model in the sidebar's box (setting a widget's key after the widget was drawn in the
    same run is an error: StreamlitWidgetAlreadyInstantiatedError)."""
    try:
        name = state.add_upload(upload.name, upload.getvalue(), arch, arch_kwargs, convention)
    except MnistlensError as err:
        st.session_state["yours_error"] = str(err)  # this session only: nothing was added
        return
    st.session_state["yours_loaded"] = name
    st.session_state["model"] = name


if upload is not None:
    st.button(
        "Load",
        key="yours_load",
        type="primary",
        on_click=load,
        args=(upload, arch, arch_kwargs, convention),
    )
if error := st.session_state.pop("yours_error", None):
    st.error(error)
    st.stop()

name = st.session_state.get("yours_loaded")
if name is None:
    st.info("Upload a file and press Load.")
    st.stop()
model, meta = state.get_model(name)


@st.cache_data(show_spinner="Inspecting ...")
def facts(model_name: str) -> dict:
    return conventions.describe(*state.get_model(model_name))


found = facts(name)
st.success(f"{name} is loaded and chosen in the sidebar: every page now explains it.")
st.markdown(
    f"- format: **{found['format']}**\n"
    f"- input: **{found['input']}** ({found['input_reason']})\n"
    f"- outputs: **{found['outputs']}**"
    + (" (removed: methods attribute the logits)" if found["output_removed"] else "")
    + "\n"
    + f"- test accuracy: **{found['test_accuracy']:.2%}**, {found['parameters']:,} parameters\n"
    + f"- methods: {', '.join(found['methods'])}"
)
for method, why in found["methods_skipped"].items():
    st.caption(f"not {method}: {why}")
for note in found["notes"]:
    st.warning(note)
st.dataframe(found["layers"], hide_index=True, key="yours_layers")
