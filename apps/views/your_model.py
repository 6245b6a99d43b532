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
from mnistlens.errors import MnistlensError
from mnistlens.loading import conventions
from mnistlens.options import parse_options

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import keys
import session

KINDS = ("torch.export program (.pt2)", "state_dict of a registered architecture")

st.header("Your model")
st.write(
    "Export it with `torch.export.save(torch.export.export(model.eval(), "
    "(torch.zeros(1, 1, 28, 28),)), 'model.pt2')`, or upload `model.state_dict()` saved "
    "with `torch.save` for one of mnistlens' architectures. Nothing in the file can run code."
)
kind = st.radio("File", KINDS, key=keys.YOURS_KIND, horizontal=True)
upload = st.file_uploader("Model file", type=["pt2", "pt", "pth"], key=keys.YOURS_FILE)
arch, arch_kwargs = None, {}
if kind == KINDS[1]:
    left, right = st.columns(2)
    arch = left.selectbox("Architecture", models.list_models(), key=keys.YOURS_ARCH)
    text = right.text_input(
        "Constructor arguments", key=keys.YOURS_KWARGS, placeholder="hidden=256, dropout=0.1"
    )
    try:
        arch_kwargs = parse_options(text)  # the grammar of `mnistlens train --arch-kwargs`
    except ValueError as err:
        st.error(str(err))
        st.stop()
convention = st.selectbox(
    "Input pixels",
    ["auto", *conventions.CONVENTIONS],
    key=keys.YOURS_INPUT,
    help="auto tries [0, 1], MNIST-standardized and 0-255 on 1,000 test images and keeps "
    "the one with clearly the lowest loss.",
)


def load(upload, arch: str | None, arch_kwargs: dict, convention: str) -> None:
    """The Load button's callback. It runs before the page reruns, so it may choose the
    model in the sidebar's box (setting a widget's key after the widget was drawn in the
    same run is an error: StreamlitWidgetAlreadyInstantiatedError)."""
    try:
        name = session.add_upload(upload.name, upload.getvalue(), arch, arch_kwargs, convention)
    except MnistlensError as err:
        st.session_state[keys.YOURS_ERROR] = str(err)  # this session only: nothing was added
        return
    st.session_state[keys.YOURS_LOADED] = name
    st.session_state[keys.MODEL] = name


if upload is not None:
    st.button(
        "Load",
        key="yours_load",
        type="primary",
        on_click=load,
        args=(upload, arch, arch_kwargs, convention),
    )
if error := st.session_state.pop(keys.YOURS_ERROR, None):
    st.error(error)
    st.stop()

name = st.session_state.get(keys.YOURS_LOADED)
if name not in session.uploads():  # none yet, or dropped for newer ones (session.MAX_UPLOADS)
    st.info("Upload a file and press Load.")
    st.stop()


@st.cache_data(show_spinner="Inspecting ...", max_entries=32)
def facts(model_name: str) -> dict:
    return conventions.describe(*session.get_model(model_name))


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
