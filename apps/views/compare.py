"""Compare models: which is better, significantly or not, and where they disagree.

`stats.compare_models` on the full test set for the chosen models (shipped files and
trained series members) and its plots; for a chosen pair, both models' maps on the
images B gets right and A wrong (`maps.where_b_beats_a`); then one disagreement image
through every model (`maps.explain_models`), maps side by side with one colour scale
per method (`figures.plot_model_grid`). Each is computed and drawn once per set of
models (and pair, or image) and kept, so a rerun that changes none of them (another
widget, a download, a page visit) computes nothing.
"""

from __future__ import annotations

import streamlit as st

from mnistlens.attribution import method_options
from mnistlens.comparison import figures, maps, stats
from mnistlens.errors import MnistlensError

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import catalog
import charts
import keys
import session

METHODS = ("saliency", "integrated_gradients", "grad_cam")  # the disagreement grid's
STEPS = 32  # integrated gradients' steps in this page's maps


def models(names: tuple[str, ...]) -> dict:
    """name -> (model, meta): series members by name, shipped files by file name; this
    session's own copies (session.py says why a model is never shared)."""
    return {n: session.get_model(n) for n in names}


@st.cache_data(show_spinner="Comparing on the 10,000 test images ...", max_entries=16)
def report(names: tuple[str, ...]) -> dict:
    images, labels = catalog.get_test_set()
    return stats.compare_models(models(names), images, labels, top=40)


@st.cache_data(show_spinner=False, max_entries=16)
def report_figures(names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """Accuracy against parameters, and per digit: PNG at the explorer's 110 dpi
    (`charts.png_bytes`), as on the other pages (st.pyplot's 200 dpi is three times the
    pixels to draw and send)."""
    result = report(names)
    return (
        charts.png_bytes(figures.plot_accuracy_vs_parameters(result)),
        charts.png_bytes(figures.plot_digit_accuracy(result)),
    )


@st.cache_data(
    show_spinner="Explaining the images B gets right and A gets wrong ...", max_entries=32
)
def pair_maps(names: tuple[str, ...], a: str, b: str) -> tuple[bytes, list[int]] | None:
    """`maps.where_b_beats_a` for models a and b (integrated gradients), drawn:
    -> (PNG, the test images' indices); None if B gets no image right that A gets wrong."""
    images, labels = catalog.get_test_set()
    loaded = models(names)
    indices = stats.only_right(report(names), b, a)  # known from the comparison
    try:
        found = maps.where_b_beats_a(
            loaded[a][0], loaded[b][0], images, labels, n_steps=STEPS, indices=indices
        )
    except MnistlensError:
        return None
    png = charts.png_bytes(figures.plot_pair_maps(found, images, a, b))
    return png, found["indices"].tolist()


@st.cache_data(show_spinner="Explaining the image with every model ...", max_entries=64)
def disagreement_grid(names: tuple[str, ...], index: int) -> bytes:
    """Test image `index` explained by every model (`maps.explain_models`), the methods
    every model supports, as a PNG grid (`figures.plot_model_grid`). Keyed by the model
    names and the index: the models and the image are looked up, not hashed."""
    image = catalog.get_test_set()[0][index]
    loaded = {n: m for n, (m, _) in models(names).items()}
    options = {m: method_options(m, n_steps=STEPS) for m in METHODS}
    results = maps.explain_models(loaded, image[None], list(METHODS), **options)
    shown = [m for m in METHODS if all(m in r.maps for r in results.values())]
    titles = {
        n: f"{n}\npredicts {int(r.predictions[0])} ({float(r.probabilities[0].max()):.0%})"
        for n, r in results.items()
    }
    grid = {n: {m: r.maps[m][0] for m in shown} for n, r in results.items()}
    return charts.png_bytes(figures.plot_model_grid(image, grid, titles, f"test image {index}"))


st.header("Compare models")
choices = catalog.compare_choices()
default = [n for n in ("linear", "mlp", "lenet", "cnn") if n in choices] or choices[:2]
st.session_state.setdefault(keys.COMPARE_MODELS, default)
picked = st.multiselect("Models", choices, key=keys.COMPARE_MODELS, persist_state="session")
if len(picked) < 2:
    st.info("Choose two or more models.")
    st.stop()
names = tuple(picked)
result = report(names)
rows = [
    {
        "model": m["name"],
        "accuracy": f"{m['accuracy']:.2%}",
        "95% interval": f"{m['accuracy_ci95'][0]:.2%} - {m['accuracy_ci95'][1]:.2%}",
        "parameters": m["parameters"],
        "ECE": round(m["ece"], 4),
        "train s": m["train_seconds"],
    }
    for m in result["models"]
]
st.dataframe(rows, hide_index=True, key="compare_table")
pairs = [
    {
        "A": p["a"],
        "B": p["b"],
        "disagree": p["disagreements"],
        "only A right": p["a_only_right"],
        "only B right": p["b_only_right"],
        "McNemar p": f"{p['mcnemar_p']:.2g}",
        "significant": "yes" if p["mcnemar_p"] < 0.05 else "no",
    }
    for p in result["pairs"]
]
st.caption(
    "Is the better model significantly better? McNemar's exact test on the images only "
    "one of the two gets right (p < 0.05: yes)."
)
st.dataframe(pairs, hide_index=True, key="compare_pairs")
left, right = st.columns(2)
for column, png in zip((left, right), report_figures(names), strict=True):
    column.image(png, output_format="PNG")

st.subheader("What one model looks at that the other misses")
default_a, default_b = stats.default_pair(result) or (names[0], names[-1])
left, right = st.columns(2)
a = left.selectbox("A (wrong)", names, index=names.index(default_a), key=keys.COMPARE_A)
b = right.selectbox("B (right)", names, index=names.index(default_b), key=keys.COMPARE_B)
found = pair_maps(names, a, b) if a != b else None
if a == b:
    st.info("Choose two different models.")
elif found is None:
    st.info(f"{b} gets no test image right that {a} gets wrong.")
else:
    pair_png, pair_indices = found
    st.image(pair_png, output_format="PNG")
    st.caption(
        f"The {len(pair_indices)} test images {b} gets right and {a} gets wrong: both "
        "models' integrated-gradients maps for the true class (red: pushes towards it): "
        "first the mean map of each true digit among them (n: how many), then a few "
        "single images (#: the test image). Each row has its own colour scale."
    )
    charts.save_buttons(
        "compare_pair",
        f"compare-{a}-vs-{b}",
        lambda: pair_png,  # the shown PNG: a download draws nothing again
        lambda: {"a": a, "b": b, "indices": pair_indices},
    )

st.subheader("Where they disagree")
records = result["disagreements"]
if not records:
    st.info("These models agree on every test image.")
    st.stop()
labels = [f"#{r['index']} (true {r['label']})" for r in records]
pick = st.selectbox("Disagreement (most confident first)", labels, key=keys.COMPARE_IMAGE)
record = records[labels.index(pick)]
grid_png = disagreement_grid(names, record["index"])
st.image(grid_png, output_format="PNG")
charts.save_buttons(
    "compare",
    f"compare-{record['index']}",
    lambda: grid_png,
    lambda: {"report": {k: v for k, v in result.items() if k != "disagreements"}},
)
