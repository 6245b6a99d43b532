"""Compare models: which is better, significantly or not, and where they disagree.

`stats.compare_models` on the full test set for the chosen models (shipped files and
trained series members) and its plots; for a chosen pair, both models' maps on the
images B gets right and A wrong (`maps.where_b_beats_a`); then one disagreement image
through every model (`maps.explain_models`), maps side by side with one colour scale
per method (`figures.plot_model_grid`); how much ink each model needs to change its
mind on that image: every model's proto counterfactual to one class
(`counterfactual.counterfactuals`), side by side; last, what each model tolerates: its
stress test's curves and MNIST-C heatmap, and a few digits changed one way with every
model's answer (compare_stress.py). Each is computed and drawn once per set of models (and
pair, image, or transform and severity) and kept (compare_cache.py, where the warm-up finds
them too), so a rerun that changes none of them (another widget, a download, a page
visit) computes nothing.
"""

from __future__ import annotations

import streamlit as st

from mnistlens.comparison import stats

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import catalog
import charts
import compare_cache
import defaults
import keys
from views import compare_stress


def cf_caption(name: str, record: dict | None, target: int) -> str:
    """Under a model's counterfactual: the ink it needed (L1) and its new answer."""
    if record is None:
        return f"{name} already says {target}"
    if not record["valid"]:
        return f"{name}: L1 {record['l1']:.1f}, not reached (says {record['prediction']})"
    return f"{name}: L1 {record['l1']:.1f}, says {target} ({record['probability']:.0%})"


st.header("Compare models")
choices = catalog.compare_choices()
default = [n for n in defaults.COMPARE_MODELS if n in choices] or choices[:2]
st.session_state.setdefault(keys.COMPARE_MODELS, default)
picked = st.multiselect("Models", choices, key=keys.COMPARE_MODELS, persist_state="session")
if len(picked) < 2:
    st.info("Choose two or more models.")
    st.stop()
names = tuple(picked)
result = compare_cache.compare_report(names)
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
for column, png in zip((left, right), compare_cache.compare_figures(names), strict=True):
    column.image(png, output_format="PNG")

st.subheader("What one model looks at that the other misses")
default_a, default_b = stats.default_pair(result) or (names[0], names[-1])
left, right = st.columns(2)
a = left.selectbox("A (wrong)", names, index=names.index(default_a), key=keys.COMPARE_A)
b = right.selectbox("B (right)", names, index=names.index(default_b), key=keys.COMPARE_B)
found = compare_cache.pair_maps(names, a, b) if a != b else None
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
else:
    labels = [f"#{r['index']} (true {r['label']})" for r in records]
    pick = st.selectbox("Disagreement (most confident first)", labels, key=keys.COMPARE_IMAGE)
    record = records[labels.index(pick)]
    grid_png = compare_cache.disagreement_grid(names, record["index"])
    st.image(grid_png, output_format="PNG")
    charts.save_buttons(
        "compare",
        f"compare-{record['index']}",
        lambda: grid_png,
        lambda: {"report": {k: v for k, v in result.items() if k != "disagreements"}},
    )

st.subheader("How much ink changes each model's mind?")
index = record["index"] if records else 0  # the disagreement shown, else the first image
state = st.session_state
if state.get(keys.COMPARE_CF_FOR) != (names, index) or keys.COMPARE_CF_TARGET not in state:
    # new models or a new image: their own default class, not the last one's
    state[keys.COMPARE_CF_TARGET] = defaults.compare_cf_target(
        compare_cache.test_probabilities(names, index)
    )
    state[keys.COMPARE_CF_FOR] = (names, index)
target = st.selectbox(
    "Make it a",
    list(range(10)),
    key=keys.COMPARE_CF_TARGET,
    help="Default: the first model's runner-up, or its next class no model says already.",
)
changed = {name: compare_cache.model_counterfactual(name, index, target) for name in names}
original = catalog.get_test_set()[0][index]
st.image(
    [charts.digit_rgb(original, 4)] + [charts.digit_rgb(c["image"], 4) for c in changed.values()],
    caption=[f"test image {index}"]
    + [cf_caption(n, c["record"], target) for n, c in changed.items()],
    output_format="PNG",
)
st.caption(
    f"Test image {index}, then each model's proto counterfactual to {target}: the "
    "smallest change, drawn by the shipped autoencoder towards real digits of that "
    f"class, that makes the model say {target}. L1: the ink changed, summed over the "
    "pixels; the more a model needs, the further the digit lies from its boundary."
)

compare_stress.draw(names)
