"""Explain a digit: the prediction, and one attribution map per method with its numbers.

Each map carries what says whether to believe it: its deletion area against a random
ranking, its completeness error where the method claims completeness
(`explain.explain(measure=True)`), and the method's sanity verdict on this model
(`faithfulness.randomization_check` + `sanity_verdict`, cached per model). Below,
the digit shifted, turned, resized and re-stroked, and whether the model keeps its
answer on each copy (`perturb.invariance`), and what would make the model say another
digit (explain_counterfactual.py).
"""

from __future__ import annotations

import streamlit as st

from mnistlens import attribution, explain, faithfulness, plots
from mnistlens.metrics import predict_logits
from mnistlens.typicality import warning_text

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import charts
import defaults
import keys
import sidebar
from views import explain_counterfactual

COLUMNS = 4  # map tiles per row
NO_CONTRAST = "(no contrast)"

choice = sidebar.current()
model = choice.model


def sidebar_options() -> dict:
    """This page's options, below the shared ones; kept when visiting other pages."""
    if keys.METHODS not in st.session_state:  # first visit, no ?methods= in the URL
        st.session_state[keys.METHODS] = [
            m
            for m in defaults.EXPLAIN_CANDIDATES  # those that can and pass the sanity check
            if cache.why_not(choice.model_name, m) is None
            and cache.sanity(choice.model_name, m, layers=1)["verdict"] == "pass"
        ]
    for key, value in {
        keys.TARGET: defaults.EXPLAIN_TARGET,
        keys.BASELINE: defaults.EXPLAIN_BASELINE,
        keys.STEPS: defaults.EXPLAIN_STEPS,
        keys.SHARED_SCALE: False,
        keys.CONTRAST: NO_CONTRAST,
    }.items():
        st.session_state.setdefault(key, value)
    side = st.sidebar
    side.subheader("Explain")
    keep = {"persist_state": "session"}
    return {
        "target": side.selectbox(
            "Explain class",
            ["predicted", *range(10)],
            key=keys.TARGET,
            help="Attribute the predicted class, or any other digit's score.",
            **keep,
        ),
        "methods": side.multiselect(
            "Methods",
            attribution.list_methods(),
            key=keys.METHODS,
            help="Grad-CAM works on the last conv block's rectified maps; methods that "
            "cannot explain the chosen model are skipped with a note.",
            **keep,
        ),
        "baseline": side.selectbox(
            "IG / DeepLIFT baseline", list(attribution.BASELINES), key=keys.BASELINE, **keep
        ),
        "steps": side.slider("IG steps", 4, 128, key=keys.STEPS, **keep),
        "shared": side.checkbox("One colour scale for all maps", key=keys.SHARED_SCALE, **keep),
        "contrast": side.selectbox(
            "Why this class rather than",
            [NO_CONTRAST, *range(10)],
            key=keys.CONTRAST,
            help="Integrated gradients of the difference of two logits: red pixels push "
            "towards the explained class, blue ones towards this one.",
            **keep,
        ),
    }


def trust_note(result: explain.Explanation, name: str) -> str:
    """The numbers under a map: deletion area against random, completeness, layer."""
    numbers = result.scores[name].image(0)
    note = f"deletion {numbers['deletion_auc']:.2f} (random {numbers['random_deletion_auc']:.2f})"
    if "completeness_error" in numbers:
        note += f"  \ncompleteness error {numbers['completeness_error']:.1%}"
    if name in result.layers:
        note += f"  \nlayer {result.layers[name]}"
    return note


def sanity_line(verdict: dict) -> str:
    if verdict["correlation"] is None:
        return f"sanity: not checked ({verdict['why']})"
    return (
        f"sanity: **{verdict['verdict']}** (rank correlation {verdict['correlation']:.2f} "
        f"with {verdict['layer']} re-initialized)"
    )


def verdict_left(image, probs, prediction: int) -> None:
    """The digit, the verdict and the class probabilities."""
    st.image(
        charts.digit_rgb(image, 4),
        caption=f"{choice.what}, as the model sees it",
        output_format="PNG",
    )
    share = f"{float(probs[prediction]):.1%}"
    if choice.label is None:
        st.metric("Your drawing", f"predicted {prediction}", share)
    else:
        right = prediction == choice.label
        st.metric(
            f"True label {choice.label}",
            f"predicted {prediction}",
            f"{share} ({'correct' if right else 'wrong'})",
            delta_color="normal" if right else "inverse",
        )
    st.html(charts.probability_bars(probs))
    accuracy = choice.meta.get("test_accuracy")
    st.caption(
        f"{choice.meta.get('arch', 'user')} model"
        + (f", test accuracy {accuracy:.2%}" if accuracy is not None else "")
    )


def typicality_caption(verdict: dict) -> str:
    """One line under the probabilities: is it a digit at all, and how typical."""
    answer = "yes" if verdict["verdict"] else "**no**"
    return (
        f"Digit-like: {answer} (less typical than {verdict['percentile']:.1f}% of MNIST "
        f"digits; detector {verdict['detector']}, flags 5% of real digits)"
    )


def invariance_section(strip, png: bytes) -> None:
    """The digit moved, turned, resized, thinned and thickened (`cache.invariance_strip`),
    with the model's answer on each copy: one picture of the copies, their answers in a
    line below."""
    changed = len(strip.changes) - 1  # the first is the digit itself
    st.subheader("Does the answer survive small changes?")
    st.image(png, output_format="PNG")
    st.caption(
        " · ".join(
            f"{c['label']}: {c['prediction']} ({c['probability']:.0%})"
            + ("" if c["kept"] else " ✗")
            for c in strip.changes
        )
    )
    st.caption(
        f"{choice.model_name} kept its answer ({strip.changes[0]['prediction']}) on "
        f"{strip.n_kept} of {changed} changed copies of {choice.what} "
        "(✗: a changed answer)."
    )


def draw_maps(maps, signed, peaks, results, sanity, explained, warning) -> None:
    """The maps in rows of COLUMNS, each with its name, scale, numbers and sanity line
    below it."""
    if warning:
        st.warning(f"{warning}.", icon="⚠️")
    st.subheader(f"{choice.what}: explaining class {explained}")
    for row in range(0, len(maps), COLUMNS):
        for column, name in zip(st.columns(COLUMNS), list(maps)[row : row + COLUMNS], strict=False):
            with column:
                st.image(
                    charts.map_rgb(maps[name], name in signed, peaks[name], image),
                    output_format="PNG",
                )
                scale = f"±{peaks[name]:.2g}" if name in signed else f"0 to {peaks[name]:.2g}"
                marked = " · :red[not a digit?]" if warning else ""
                title = f"**{name.replace('_', ' ')}** · scale {scale}{marked}"
                # One element per map, its name over its numbers: each element costs every
                # browser a render on every change (benchmarks/README.md).
                if name in results:
                    note = f"{trust_note(results[name], name)}  \n{sanity_line(sanity[name])}"
                    st.markdown(f"{title}  \n:small[:gray[{note}]]", help=faithfulness.SANITY_RULE)
                else:
                    other = name.rsplit(" ", 1)[-1]
                    note = (
                        f"integrated gradients of logit {explained} - logit {other}: red "
                        f"pushes towards {explained}, blue towards {other}"
                    )
                    st.markdown(f"{title}  \n:small[:gray[{note}]]")
    st.caption(
        "Under each map: its deletion area (the class probability as the pixels it ranks "
        "first are blacked out; lower = more faithful) against a random ranking of the same "
        "pixels, for methods that claim completeness how far the map misses summing to "
        "f(image) - f(baseline), and the method's sanity verdict on this model."
    )


options = sidebar_options()
st.header("Explain a digit")
image = sidebar.require_digit(choice)
methods = [m for m in options["methods"] if cache.why_not(choice.model_name, m) is None]
target = None if options["target"] == "predicted" else int(options["target"])
probs = predict_logits(model, image[None]).softmax(dim=1)[0]  # (10,)
prediction = int(probs.argmax())
explained = prediction if target is None else target

# Everything the page shows is computed before any of it is drawn: the elements then
# reach the browser together and it renders the page once, not once per element as
# results trickle in (benchmarks/README.md: 40 captions sent 10 ms apart cost a browser
# twice the CPU of the same captions sent at once).
typical = cache.digit_like(choice.model_name, choice.digit, image)
warning = warning_text(typical)  # None for a digit-like input
results = {
    m: cache.explanation(
        choice.model_name, choice.digit, image, m, target, options["baseline"], options["steps"]
    )
    for m in methods
}
sanity = {m: cache.sanity(choice.model_name, m, layers=1) for m in methods}
maps = {m: r.maps[m][0] for m, r in results.items()}
signed = {m for m, v in maps.items() if charts.is_signed(m, v)}
if methods and options["contrast"] != NO_CONTRAST:
    other = int(options["contrast"])
    label = f"{explained} rather than {other}"
    maps[label] = cache.contrast(choice.model_name, choice.digit, image, explained, other)
    signed.add(label)
peaks = charts.peaks(maps, options["shared"])
strip, strip_png = cache.invariance_strip(choice.model_name, choice.digit, image)

for name in options["methods"]:
    if (reason := cache.why_not(choice.model_name, name)) is not None:
        st.info(f"{reason[0].upper()}{reason[1:]}: skipped.")
left, right = st.columns([1, 3])
with left:
    verdict_left(image, probs, prediction)
    st.caption(typicality_caption(typical))
with right:
    if methods:
        draw_maps(maps, signed, peaks, results, sanity, explained, warning)

        def figure():
            notes = {m: trust_note(r, m).replace("  \n", "\n") for m, r in results.items()}
            title = f"{choice.what}: explaining class {explained} ({choice.model_name})"
            return plots.plot_explanation(
                image,
                maps,
                title,
                notes,
                shared_scale=options["shared"],
                signed=signed,
                warning=warning,
            )

        def numbers() -> dict:
            return {
                "model": choice.model_name,
                "digit": choice.what,
                "true_label": choice.label,
                "prediction": prediction,
                "probabilities": charts.listed(probs, 6),
                "digit_like": typical,
                "explained_class": explained,
                "options": {k: options[k] for k in ("baseline", "steps")},
                "methods": {
                    m: {
                        **r.scores[m].image(0),
                        **({"layer": r.layers[m]} if m in r.layers else {}),
                        "sanity": sanity[m],
                        "sanity_rule": faithfulness.SANITY_RULE,
                        "map": charts.listed(maps[m].reshape(28, 28), 6),
                    }
                    for m, r in results.items()
                },
            }

        stem = f"{choice.model_name.removesuffix('.pt')}-{choice.digit.replace(' ', '')}"
        charts.save_buttons("explain", stem, figure, numbers)
    else:
        st.warning("Choose at least one method in the sidebar.")
invariance_section(strip, strip_png)  # under both columns, as is what follows
explain_counterfactual.draw(choice, image, probs)
