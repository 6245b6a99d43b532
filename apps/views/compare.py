"""Compare models: which is better, significantly or not, and where they disagree.

`stats.compare_models` on the full test set for the chosen models (shipped files and
trained series members), cached per set of models; the plots of `compare_plots`; then
one disagreement image through every model (`maps.explain_models`), maps side by
side with one colour scale per method (`figures.plot_model_grid`); and for a chosen pair,
both models' maps on the images B gets right and A wrong (`maps.where_b_beats_a`).
"""

from __future__ import annotations

import streamlit as st

from mnistlens.attribution import method_options
from mnistlens.comparison import figures, maps, stats
from mnistlens.errors import MnistlensError

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import charts
import state


def models(names: tuple[str, ...]) -> dict:
    """name -> (model, meta): series members by name, shipped files by file name; this
    session's own copies (`state.get_model` says why a model is never shared)."""
    return {n: state.get_model(n) for n in names}


@st.cache_data(show_spinner="Comparing on the 10,000 test images ...")
def report(names: tuple[str, ...]) -> dict:
    images, labels = state.get_test_set()
    return stats.compare_models(models(names), images, labels, top=40)


@st.cache_data(show_spinner="Explaining the images B gets right and A gets wrong ...")
def pair_maps(names: tuple[str, ...], a: str, b: str) -> dict | None:
    """`maps.where_b_beats_a` for models a and b (IG, 32 steps); None if B gets no
    image right that A gets wrong."""
    images, labels = state.get_test_set()
    loaded = models(names)
    indices = stats.only_right(report(names), b, a)  # known from the comparison
    try:
        return maps.where_b_beats_a(
            loaded[a][0], loaded[b][0], images, labels, n_steps=32, indices=indices
        )
    except MnistlensError:
        return None


st.header("Compare models")
choices = state.compare_choices()
default = [n for n in ("linear", "mlp", "lenet", "cnn") if n in choices] or choices[:2]
st.session_state.setdefault("compare_models", default)
picked = st.multiselect("Models", choices, key="compare_models", persist_state="session")
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
# Figures as PNG at the explorer's 110 dpi (`charts.png_bytes`), as on the other pages;
# st.pyplot draws at 200 dpi, three times the pixels: 1.3 s more for this page.
left, right = st.columns(2)
left.image(charts.png_bytes(figures.plot_accuracy_vs_parameters(result)), output_format="PNG")
right.image(charts.png_bytes(figures.plot_digit_accuracy(result)), output_format="PNG")

st.subheader("What one model looks at that the other misses")
default_a, default_b = stats.default_pair(result) or (names[0], names[-1])
left, right = st.columns(2)
a = left.selectbox("A (wrong)", names, index=names.index(default_a), key="compare_a")
b = right.selectbox("B (right)", names, index=names.index(default_b), key="compare_b")
found = pair_maps(names, a, b) if a != b else None
if a == b:
    st.info("Choose two different models.")
elif found is None:
    st.info(f"{b} gets no test image right that {a} gets wrong.")
else:
    images, _ = state.get_test_set()
    pair_png = charts.png_bytes(figures.plot_pair_maps(found, images, a, b))
    st.image(pair_png, output_format="PNG")
    st.caption(
        f"The {len(found['indices'])} test images {b} gets right and {a} gets wrong: both "
        "models' integrated-gradients maps for the true class (red: pushes towards it): "
        "first the mean map of each true digit among them (n: how many), then a few "
        "single images (#: the test image). Each row has its own colour scale."
    )
    charts.save_buttons(
        "compare_pair",
        f"compare-{a}-vs-{b}",
        lambda: pair_png,  # the shown PNG: a download draws nothing again
        lambda: {"a": a, "b": b, "indices": found["indices"].tolist()},
    )

st.subheader("Where they disagree")
records = result["disagreements"]
if not records:
    st.info("These models agree on every test image.")
    st.stop()
labels = [f"#{r['index']} (true {r['label']})" for r in records]
pick = st.selectbox("Disagreement (most confident first)", labels, key="compare_image")
record = records[labels.index(pick)]
images, _ = state.get_test_set()
image = images[record["index"]]
methods = [m for m in ("saliency", "integrated_gradients", "grad_cam")]
loaded = {n: m for n, (m, _) in models(names).items()}
results = maps.explain_models(
    loaded, image[None], methods, **{m: method_options(m, n_steps=32) for m in methods}
)
shown = [m for m in methods if all(m in r.maps for r in results.values())]
titles = {
    n: f"{n}\npredicts {int(r.predictions[0])} ({float(r.probabilities[0].max()):.0%})"
    for n, r in results.items()
}
grid = {n: {m: r.maps[m][0] for m in shown} for n, r in results.items()}
grid_png = charts.png_bytes(
    figures.plot_model_grid(image, grid, titles, f"test image {record['index']}")
)
st.image(grid_png, output_format="PNG")
charts.save_buttons(
    "compare",
    f"compare-{record['index']}",
    lambda: grid_png,
    lambda: {"report": {k: v for k, v in result.items() if k != "disagreements"}},
)
