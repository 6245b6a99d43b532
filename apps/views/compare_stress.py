"""Compare models, its last section: what each model tolerates (`mnistlens.perturb`).

The chosen models' stress test (`compare_cache.stress_table`: every transform at every
severity on the first test images, seed 0), drawn as the library draws it: accuracy
against severity for each sweep, and on MNIST-C's corruptions. Then a few of those
digits as one transform at one severity changed them, with each model's answer.
compare.py calls `draw` below its other sections.
"""

from __future__ import annotations

import streamlit as st

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import charts
import compare_cache
import defaults
import keys


def severity_label(transform: dict, severity: float) -> str:
    """ "4 px", "45 degrees"; "unchanged" at the transform's identity."""
    if severity == transform["identity"]:
        return "unchanged"
    return f"{severity:g} {transform['unit']}"


def answer(model: str, prediction: int, label: int) -> str:
    """One model's answer on one digit as markdown: a green ✓ if right, a red ✗ if not."""
    if prediction == label:
        return f":green[✓ {model}: {prediction}]"
    return f":red[✗ {model}: {prediction}]"


def draw(names: tuple[str, ...]) -> None:
    """The section for the chosen models (two or more)."""
    st.subheader("What each model tolerates")
    table = compare_cache.stress_table(names)
    curves, heatmap = compare_cache.stress_figures(names)
    n = f"{table['n_images']:,}"
    corruptions = sum(t["kind"] == "corruption" for t in table["transforms"])
    st.caption(
        f"Accuracy on the first {n} test images (`mnistlens stress` measures all "
        "10,000), each changed by every transform at every severity, the same changes "
        "for every model. The sweeps turn one factor up step by step; below, MNIST-C's "
        f"{corruptions} corruptions at MNIST-C's own setting, the clean accuracy first "
        "and the mean over the corruptions last."
    )
    st.image(curves, output_format="PNG")
    st.image(heatmap, output_format="PNG")
    charts.save_buttons(
        "compare_stress",
        f"stress-{'-'.join(m.removesuffix('.pt') for m in names)}",
        lambda: curves,
        lambda: table,
    )

    transforms = {t["name"]: t for t in table["transforms"]}
    first = defaults.COMPARE_TRANSFORM
    st.session_state.setdefault(keys.COMPARE_TRANSFORM, first if first in transforms else None)
    left, right = st.columns([1, 2])
    name = left.selectbox(
        "Transform", list(transforms), key=keys.COMPARE_TRANSFORM, persist_state="session"
    )
    transform = transforms[name]
    if st.session_state.get(keys.COMPARE_SEVERITY) not in transform["severities"]:
        st.session_state[keys.COMPARE_SEVERITY] = transform["hardest"]
    severity = right.select_slider(
        "Severity",
        transform["severities"],
        key=keys.COMPARE_SEVERITY,
        format_func=lambda s: severity_label(transform, s),
        persist_state="session",
    )
    found = compare_cache.stress_examples(names, name, severity)
    at = transform["severities"].index(severity)
    accuracy = ", ".join(f"{m} {table['accuracy'][m][name][at]:.1%}" for m in names)
    st.caption(
        f"{name} ({transform['what']}), {severity_label(transform, severity)}: the first "
        f"{len(found['labels'])} of the {n} test images and each model's answer. "
        f"Accuracy on all {n}: {accuracy}."
    )
    columns = st.columns(len(found["labels"]))
    for k, (column, label) in enumerate(zip(columns, found["labels"], strict=True)):
        column.image(
            charts.digit_rgb(found["images"][k], 3), caption=f"a {label}", output_format="PNG"
        )
        column.markdown("  \n".join(answer(m, found["predictions"][m][k], label) for m in names))
