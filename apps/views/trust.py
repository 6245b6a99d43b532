"""Trust: how faithful each method is on this model, measured on test images.

`faithfulness.compare_methods(..., randomization=True)`, cached per (model, number of
images, methods): deletion/insertion curves against a random ranking, a ranking of
the methods, and the model-randomization sanity check per layer with each method's
verdict by `faithfulness.SANITY_RULE`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mnistlens import faithfulness

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import charts
import defaults
import keys
import sidebar


def top_correlation(entry: dict) -> float | None:
    """The rank correlation once the top layer is re-initialized (None: not checked, e.g. a
    torch.export program has no modules to re-initialize)."""
    return next(iter(entry["randomization"].values()), None)


choice = sidebar.current()
name = choice.model_name
st.header("Trust")
st.write(
    "Does each method explain this model? Deletion: black out the pixels a map ranks "
    "first and watch the class probability fall (fast = faithful); insertion: add them "
    "to a black image (fast rise = faithful); randomization: re-initialize the layers from "
    "the top and check that the maps change (Adebayo et al. 2018)."
)
usable = [m for m in cache.all_methods() if cache.why_not(name, m) is None]
st.session_state.setdefault(keys.TRUST_METHODS, [m for m in defaults.TRUST_METHODS if m in usable])
st.session_state.setdefault(keys.TRUST_IMAGES, defaults.TRUST_IMAGES)
left, right = st.columns([3, 1])
methods = left.multiselect("Methods", usable, key=keys.TRUST_METHODS, persist_state="session")
n_images = right.select_slider(
    "Test images", [50, 100, 200], key=keys.TRUST_IMAGES, persist_state="session"
)
if not methods:
    st.warning("Choose at least one method.")
    st.stop()
chosen = cache.in_order(methods, usable)
report, curves = cache.comparison(name, n_images, chosen)
figures = cache.comparison_figures(name, n_images, chosen)

st.subheader("Ranking")
rows = []
for method in chosen:
    entry = report[method]
    rows.append(
        {
            "method": method,
            "deletion area (lower = better)": entry["deletion_auc"],
            "insertion area (higher = better)": entry["insertion_auc"],
            "beats random on deletion": entry["beats_random_deletion"],
            "completeness error (median)": entry.get("completeness_error_median"),
            "rank correlation, top layer randomized": top_correlation(entry),
            "sanity": entry["sanity"],
        }
    )
rows.append(
    {
        "method": "random ranking",
        "deletion area (lower = better)": report["random"]["deletion_auc"],
        "insertion area (higher = better)": report["random"]["insertion_auc"],
    }
)
table = pd.DataFrame(rows).sort_values("deletion area (lower = better)", ignore_index=True)
st.dataframe(
    table,
    hide_index=True,
    key="ranking",
    column_config={
        "beats random on deletion": st.column_config.ProgressColumn(format="percent"),
        "sanity": st.column_config.TextColumn(help=faithfulness.SANITY_RULE),
    },
)
st.caption(
    f"Mean over the first {n_images} test images of {name}, each explained for its "
    f"predicted class; randomization on the first {cache.SANITY_IMAGES}. Sorted by deletion."
)

st.subheader("Deletion and insertion")
st.image(figures["curves"], output_format="PNG")
charts.save_buttons(
    "curves",
    f"{name.removesuffix('.pt')}-perturbation",
    lambda: figures["curves"],
    lambda: {
        m: {mode: charts.listed(c.mean(dim=0)) for mode, c in by.items()}
        for m, by in curves.items()
    },
)

st.subheader("Sanity check: model randomization")
st.image(figures["randomization"], output_format="PNG")
for method in chosen:
    label, top = method.replace("_", " "), top_correlation(report[method])
    st.caption(
        f"**{label}: {report[method]['sanity']}**, rank correlation {top:.2f} with the top "
        "layer re-initialized"
        if top is not None
        else f"**{label}**: not checked ({cache.sanity(name, method)['why']})",
        help=faithfulness.SANITY_RULE,
    )
st.caption(f"Rule: {faithfulness.SANITY_RULE}.")
charts.save_buttons(
    "randomization",
    f"{name.removesuffix('.pt')}-randomization",
    lambda: figures["randomization"],
    lambda: {
        "model": name,
        "n_images": n_images,
        "rule": faithfulness.SANITY_RULE,
        "report": report,
    },
)
