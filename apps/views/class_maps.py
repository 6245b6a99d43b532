"""Per-digit maps: what the model looks at for each digit, averaged over the test set.

`explain.class_mean_maps`: for each digit, the mean map over its correctly classified
test images, cached per (model, method, number of images).
"""

from __future__ import annotations

import streamlit as st
import torch

from mnistlens import plots

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import charts
import defaults
import keys
import sidebar

METHODS = list(defaults.CLASS_METHODS)

choice = sidebar.current()
st.header("Per-digit maps")
st.write("For each digit, the mean map over its correctly classified test images.")
st.session_state.setdefault(keys.CLASS_METHOD, METHODS[0])
st.session_state.setdefault(keys.CLASS_IMAGES, defaults.CLASS_IMAGES)
left, right, _ = st.columns([1, 1, 2])
method = left.selectbox("Method", METHODS, key=keys.CLASS_METHOD, persist_state="session")
n_images = right.select_slider(
    "Test images", [200, 500, 1000, 2000], key=keys.CLASS_IMAGES, persist_state="session"
)
reason = cache.why_not(choice.model_name, method)
if reason is not None:
    st.warning(f"{reason[0].upper()}{reason[1:]}.")
    st.stop()
maps = cache.class_maps(choice.model_name, method, n_images)  # (10, 28, 28), NaN: no digit
shown = torch.nan_to_num(maps)
signed = charts.is_signed(method, shown)
peak = float(shown.abs().max()) or 1.0  # one scale for the row, as plot_class_maps has
st.image(
    [charts.map_rgb(shown[d], signed, peak, scale=4) for d in range(10)],
    caption=[f"digit {d}" for d in range(10)],
    output_format="PNG",
)
st.caption(
    f"{method.replace('_', ' ')} on the first {n_images} test images of {choice.model_name}; "
    + ("red = towards the digit, blue = against, " if signed else "")
    + f"one colour scale for all ten (peak {peak:.2g})."
)
charts.save_buttons(
    "class_maps",
    f"{choice.model_name.removesuffix('.pt')}-class-maps-{method}",
    lambda: plots.plot_class_maps({method: maps}, f"{choice.model_name}, {n_images} test images"),
    lambda: {
        "model": choice.model_name,
        "method": method,
        "n_images": n_images,
        "maps": {str(d): charts.listed(maps[d]) for d in range(10)},
    },
)
