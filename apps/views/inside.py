"""Inside the network, for this digit: what each layer does with the chosen image.

Its feature maps at each conv stage (`weights.feature_maps`); its activation of the
units of a hidden layer against each unit's mean per digit (`activations.class_profile`
over test images, cached per model and layer); for its most active units, the test
images that excite them most (`activations.top_images`); and feature visualizations
(`featureviz.maximize`) of its predicted class and of those units. Models without
conv layers show their weights as pictures instead (class templates, MLP units).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from mnistlens.internals import activations, weights
from mnistlens.metrics import predict_logits

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import catalog
import charts
import keys
import sidebar

SHOWN_UNITS = 16  # rows of the unit table
TOP_UNITS = 4  # units shown with their top images and visualizations
TOP_IMAGES = 8

choice = sidebar.current()
model, name = choice.model, choice.model_name
stem = f"{name.removesuffix('.pt')}-{choice.digit.replace(' ', '')}"


def feature_maps(image) -> None:
    """Every conv stage's rectified output for this digit, one mosaic per stage."""
    st.subheader("Its feature maps, stage by stage")
    stages = weights.feature_maps(model, image)  # {layer: (C, H, W)}
    pictures = [
        charts.mosaic(
            maps, 16 if len(maps) <= 64 else 32, signed=False, scale=max(1, 56 // maps.shape[1])
        )
        for maps in stages.values()
    ]
    for picture, (layer, maps) in zip(pictures, stages.items(), strict=True):
        c, h, w = maps.shape
        st.image(
            picture,
            caption=f"{layer}: {c} maps of {h} x {w}, after the ReLU (white = strongest, "
            "one scale per stage)",
            output_format="PNG",
        )
    width = max(p.shape[1] for p in pictures)
    sheet = np.concatenate(  # the stages one under the other, for the download
        [
            np.pad(p, ((0, 8), (0, width - p.shape[1]), (0, 0)), constant_values=255)
            for p in pictures
        ]
    )
    charts.save_buttons(
        "feature_maps",
        f"{stem}-feature-maps",
        lambda: sheet,
        lambda: {layer: charts.listed(maps) for layer, maps in stages.items()},
    )
    with st.expander("First-layer filters (weights: the same for every digit)"):
        st.image(charts.mosaic(weights.conv_filters(model), 16, scale=6), output_format="PNG")


def weight_pictures(image, has_hidden: bool) -> None:
    """No conv layer: the weights as pictures, with this digit's outline over them."""
    if not has_hidden:
        st.subheader("Class templates: the whole model")
        tiles, captions = weights.linear_templates(model), [f"digit {d}" for d in range(10)]
        peak = float(tiles.abs().max())
        peaks = [peak] * 10  # one scale: the templates compete for the same pixels
    else:
        st.subheader("First-layer units driving each digit")
        ranked = weights.units_by_class(model, per_class=2)
        tiles = weights.first_layer_units(model)[[u for _, us in ranked for u in us]]
        captions = [f"{d}: unit {u}" for d, us in ranked for u in us]
        peaks = [float(t.abs().max()) for t in tiles]
    st.image(
        [charts.map_rgb(t, True, p, image, 3) for t, p in zip(tiles, peaks, strict=True)],
        caption=captions,
        output_format="PNG",
    )
    st.caption(
        f"Red weight: ink there raises the score; blue: lowers it. The outline is {choice.what}."
        + ("" if has_hidden else " This model has no hidden layer: these weights are all of it.")
    )
    charts.save_buttons(
        "weights",
        f"{name.removesuffix('.pt')}-weights",
        lambda: charts.mosaic(tiles, 10, scale=4),
        lambda: dict(zip(captions, (charts.listed(t) for t in tiles), strict=True)),
    )


def units(image, layers: list[str], prediction: int) -> tuple[str, list[int]]:
    """This digit's strongest units of a chosen layer against their usual response;
    -> the layer and its TOP_UNITS strongest units."""
    st.subheader("Its hidden units against their usual response")
    st.session_state.setdefault(keys.LAYER, layers[-1])
    layer = st.selectbox("Hidden layer", layers, key=keys.LAYER, persist_state="session")
    seen, profile = cache.unit_activations(name, layer)  # (N, U), (10, U)
    mine = activations.unit_activations(activations.layer_activations(model, image[None], layer))[0]
    top = mine.topk(min(SHOWN_UNITS, len(mine))).indices.tolist()
    selectivity, preferred = activations.selectivity(profile)
    table = pd.DataFrame(
        {
            "unit": top,
            "this digit": mine[top].tolist(),
            f"mean for {prediction}s": profile[prediction, top].tolist(),
            "mean, all digits": profile[:, top].mean(dim=0).tolist(),
            "preferred digit": preferred[top].tolist(),
            "selectivity": selectivity[top].tolist(),
            "mean per digit 0-9": profile[:, top].T.tolist(),
        }
    )
    st.dataframe(  # its toolbar saves the numbers as CSV
        table,
        hide_index=True,
        key="unit_table",
        column_config={"mean per digit 0-9": st.column_config.BarChartColumn(y_min=0)},
    )
    st.caption(
        f"The {len(top)} units of {layer} this digit drives hardest (conv channels: mean over "
        f"positions), against their mean over the first {cache.PROFILE_IMAGES} test images. "
        "Selectivity: (preferred - rest) / (preferred + rest), Morcos et al. 2018."
    )
    top_images(layer, top[:TOP_UNITS], seen, mine)
    return layer, top[:TOP_UNITS]


def top_images(layer: str, units: list[int], seen, mine) -> None:
    """For each unit, the test images that excite it most, labelled."""
    st.subheader("What excites its most active units")
    images, labels = catalog.get_test_set()
    found = {u: activations.top_images(seen, u, TOP_IMAGES) for u in units}  # indices, values
    for unit, (indices, values) in found.items():
        st.image(
            [charts.digit_rgb(images[i], 2) for i in indices],
            caption=[f"#{int(i)}: a {int(labels[i])}" for i in indices],
            output_format="PNG",
        )
        st.caption(
            f"{layer} unit {unit}: its {TOP_IMAGES} strongest test images (of the first "
            f"{cache.PROFILE_IMAGES}), activation {float(values[-1]):.2f} to "
            f"{float(values[0]):.2f}; this digit: {float(mine[unit]):.2f}"
        )
    charts.save_buttons(
        "top_images",
        f"{stem}-{layer}-top-images",
        lambda: charts.mosaic(
            images[torch.cat([i for i, _ in found.values()])][:, 0], TOP_IMAGES, False, 3
        ),
        lambda: {
            f"{layer} unit {u}": {
                "test_indices": i.tolist(),
                "labels": labels[i].tolist(),
                "activations": charts.listed(v),
                "this_digit": float(mine[u]),
            }
            for u, (i, v) in found.items()
        },
    )


def dreams(prediction: int, layer: str | None, units: list[int]) -> None:
    """Feature visualization of the predicted class and of the top units."""
    st.subheader("What the model would draw")
    with st.spinner("Feature visualization ..."):
        pictures = [cache.dream(name, prediction)] + [cache.dream(name, u, layer) for u in units]
    captions = [f"class {prediction}"] + [f"{layer} unit {u}" for u in units]
    st.image([charts.digit_rgb(p, 4) for p in pictures], caption=captions, output_format="PNG")
    st.caption(
        "Inputs optimized to raise the predicted class's score (against the others), or a "
        f"unit's activation: `featureviz.maximize` with {cache.FEATUREVIZ_STEPS} steps instead "
        "of its default 300, to answer within a second; the full run is one notebook line."
    )
    charts.save_buttons(
        "dreams",
        f"{stem}-feature-visualization",
        lambda: charts.mosaic(torch.cat(pictures), len(pictures), False, 4),
        lambda: {c: charts.listed(p[0]) for c, p in zip(captions, pictures, strict=True)},
    )


st.header("Inside the network")
image = sidebar.require_digit(choice)
sidebar.warn_if_not_a_digit(choice, image)
prediction = int(predict_logits(model, image[None]).argmax())
st.write(f"{choice.what}, predicted **{prediction}** by {name}.")
conv_layers, hidden = cache.layers(name)
if conv_layers:
    feature_maps(image)
else:
    weight_pictures(image, bool(hidden))
layer, top = units(image, hidden, prediction) if hidden else (None, [])
dreams(prediction, layer, top)
