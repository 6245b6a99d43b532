"""mnistlens explorer: pick a test digit, see why the model labels it as it does.

    streamlit run apps/explore.py

A thin shell over the library: every number and picture here comes from a
mnistlens function a notebook user can call the same way.
"""

from __future__ import annotations

import streamlit as st
import torch

from mnistlens import activations, attribution, explain, load_model, plots, weights
from mnistlens.checkpoint import checkpoint_dir
from mnistlens.data import load_mnist, prepare_digit
from mnistlens.errors import MnistlensError
from mnistlens.prepare import analyze

st.set_page_config(page_title="mnistlens", layout="wide")


@st.cache_resource
def get_model(name: str):
    return load_model(name)


@st.cache_resource
def get_test_set():
    return load_mnist("test")


@st.cache_data(show_spinner="Averaging maps over the test set ...")
def get_class_maps(model_name: str, method: str, n_images: int) -> torch.Tensor:
    model, _ = get_model(model_name)
    images, labels = get_test_set()
    # IG to a 1% completeness tolerance: the whole sample in seconds (see benchmarks/).
    options = {"tol": 0.01} if method == "integrated_gradients" else {}
    return explain.class_mean_maps(model, images[:n_images], labels[:n_images], method, **options)


def sidebar() -> dict:
    st.sidebar.title("mnistlens")
    st.sidebar.caption("Why does the model call this digit what it does?")
    shipped = sorted(p.name for p in checkpoint_dir().glob("*.pt"))
    default = shipped.index("cnn.pt") if "cnn.pt" in shipped else 0
    choice = {"model": st.sidebar.selectbox("Model", shipped, index=default, key="model")}
    choice["source"] = st.sidebar.radio(
        "Digit", ["test image", "draw your own"], key="source", horizontal=True
    )
    choice["index"] = int(st.sidebar.number_input("Test image index", 0, 9999, 42, key="index"))
    choice["target"] = st.sidebar.selectbox(
        "Explain class",
        ["predicted", *range(10)],
        key="target",
        help="Attribute the predicted class, or any other digit's score.",
    )
    choice["methods"] = st.sidebar.multiselect(
        "Methods",
        attribution.list_methods(),
        default=["saliency", "integrated_gradients", "grad_cam"],
        key="methods",
        help="Grad-CAM works on the last conv block's rectified maps; methods that "
        "cannot explain the chosen model are skipped with a note.",
    )
    choice["baseline"] = st.sidebar.selectbox(
        "IG / DeepLIFT baseline", list(attribution.BASELINES), key="baseline"
    )
    choice["steps"] = st.sidebar.slider("IG steps", 4, 128, 50, key="steps")
    choice["shared_scale"] = st.sidebar.checkbox("One colour scale for all maps", key="shared")
    choice["contrast"] = st.sidebar.selectbox(
        "Why this class rather than",
        ["(no contrast)", *range(10)],
        key="contrast",
        help="Integrated gradients of the difference of two logits: red pixels push towards "
        "the explained class, blue ones towards this one.",
    )
    return choice


def drawn_digit() -> torch.Tensor | None:
    """A canvas to draw on; -> the drawing as an MNIST-style (1, 28, 28) image, or None."""
    from streamlit_drawable_canvas import st_canvas

    st.caption("Draw a digit (white on black), then look right.")
    canvas = st_canvas(
        stroke_width=22,
        stroke_color="#ffffff",
        background_color="#000000",
        height=280,
        width=280,
        drawing_mode="freedraw",
        key="canvas",
        return_image_data=True,
    )
    if canvas is None or canvas.image_data is None:
        return None
    rgb = torch.from_numpy(canvas.image_data[..., :3].astype("float32")).mean(dim=-1) / 255
    try:
        return prepare_digit(rgb)  # fitted into 20x20 and centred, as MNIST was made
    except MnistlensError:  # nothing drawn yet
        return None


def explain_tab(choice: dict) -> None:
    model, meta = get_model(choice["model"])
    images, labels = get_test_set()
    if choice["source"] == "draw your own":
        canvas_column, results = st.columns([1, 4])
        with canvas_column:
            image = drawn_digit()
        if image is None:
            results.info("Nothing drawn yet.")
            return
        label, what = None, "your drawing"
    else:
        image, label = images[choice["index"]], int(labels[choice["index"]])
        what = f"test image {choice['index']}"
        results = st.container()
    with results:
        show_explanation(choice, model, meta, image, label, what)


def show_explanation(choice: dict, model, meta: dict, image: torch.Tensor, label, what: str):
    """Prediction, probabilities and the chosen maps for one (1, 28, 28) image."""
    methods = []
    for name in choice["methods"]:
        reason = attribution.why_not(name, model)
        if reason is None:
            methods.append(name)
        else:
            st.info(f"{reason[0].upper()}{reason[1:]}: skipped.")
    target = None if choice["target"] == "predicted" else int(choice["target"])
    options = {
        m: attribution.method_options(m, n_steps=choice["steps"], baseline=choice["baseline"])
        for m in methods
    }
    result = explain.explain(model, image[None], methods, target, measure=True, **options)
    probs = result.probabilities[0]
    prediction = int(result.predictions[0])

    left, right = st.columns([1, 3])
    with left:
        if label is None:
            st.image(
                image[0].numpy(), caption="as the model sees it (28 x 28)", width=112, clamp=True
            )
            st.metric("Your drawing", f"predicted {prediction}", f"{float(probs[prediction]):.1%}")
        else:
            verdict = "correct" if prediction == label else "wrong"
            st.metric(
                f"True label {label}",
                f"predicted {prediction}",
                f"{float(probs[prediction]):.1%} ({verdict})",
                delta_color="normal" if prediction == label else "inverse",
            )
        st.bar_chart({"probability": probs.tolist()}, height=220)
        accuracy = meta.get("test_accuracy")
        st.caption(
            f"{meta.get('arch', 'user')} model"
            + (f", test accuracy {accuracy:.2%}" if accuracy is not None else "")
        )
    with right:
        if not methods:
            st.warning("Choose at least one method in the sidebar.")
            return
        notes = {name: trust_note(result, name) for name in result.maps}
        title = f"{what}: explaining class {int(result.target[0])}"
        fig = plots.plot_explanation(
            image,
            {k: v[0] for k, v in result.maps.items()},
            title,
            notes,
            shared_scale=choice["shared_scale"],
        )
        st.pyplot(fig)
        if choice["contrast"] != "(no contrast)":
            other, explained = int(choice["contrast"]), int(result.target[0])
            why = explain.contrast_maps(model, image[None], explained, other)
            st.pyplot(
                plots.plot_explanation(
                    image,
                    {f"{explained} rather than {other}": why[0]},
                    f"{what}: why {explained} rather than {other} (integrated gradients of "
                    f"logit {explained} - logit {other})",
                    signed={f"{explained} rather than {other}"},
                )
            )
        st.caption(
            "Under each map: its deletion area (the class probability as the pixels it "
            "ranks first are blacked out; lower = more faithful) against a random ranking "
            "of the same pixels, and for methods that claim completeness how far the map "
            "misses summing to f(image) - f(baseline)."
        )


def trust_note(result: explain.Explanation, name: str) -> str:
    """The numbers under a map: deletion area against random, completeness, layer."""
    numbers = result.scores[name].image(0)
    note = f"deletion {numbers['deletion_auc']:.2f} (random {numbers['random_deletion_auc']:.2f})"
    if "completeness_error" in numbers:
        note += f"\ncompleteness error {numbers['completeness_error']:.1%}"
    if name in result.layers:
        note += f"\nlayer {result.layers[name]}"
    return note


def class_maps_tab(choice: dict) -> None:
    st.write("For each digit, the mean map over its correctly classified test images.")
    method = st.selectbox(
        "Method",
        ["saliency", "input_x_gradient", "integrated_gradients", "grad_cam"],
        key="class_method",
    )
    n_images = st.select_slider("Test images", [200, 500, 1000, 2000], 500, key="class_n")
    try:
        maps = get_class_maps(choice["model"], method, n_images)
    except MnistlensError as err:
        st.warning(str(err))
        return
    st.pyplot(plots.plot_class_maps({method: maps}))


def inside_tab(choice: dict) -> None:
    model, _ = get_model(choice["model"])
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    info = analyze(model)
    if info.conv_layers:
        filters = weights.conv_filters(model)
        st.columns([3, 2])[0].pyplot(
            plots.plot_image_grid(filters, None, "first-layer filters", signed=True, columns=8)
        )
    elif len(linears) == 1:
        st.pyplot(
            plots.plot_image_grid(
                weights.linear_templates(model),
                [f"digit {d}" for d in range(10)],
                "class templates",
                signed=True,
                columns=5,
            )
        )
    else:
        ranked = weights.units_by_class(model, per_class=2)
        order = [u for _, us in ranked for u in us]
        st.pyplot(
            plots.plot_image_grid(
                weights.first_layer_units(model)[order],
                [f"{d}: unit {u}" for d, us in ranked for u in us],
                "first-layer units driving each digit",
                signed=True,
                columns=10,
                shared_scale=False,
            )
        )
    hidden = info.hidden_layers
    if not hidden:
        st.info("This model has no hidden layer: its weights above are the whole story.")
        return
    layer = st.selectbox("Hidden layer", hidden, index=len(hidden) - 1, key="layer")

    images, labels = get_test_set()
    units = activations.unit_activations(activations.layer_activations(model, images[:2000], layer))
    profile = activations.class_profile(units, labels[:2000])
    chosen = activations.most_selective(profile, 24)
    st.pyplot(
        plots.plot_class_profile(
            profile, [u for u, _, _ in chosen], f"{layer}: most class-selective units"
        )
    )


choice = sidebar()
st.header("mnistlens explorer")
tabs = st.tabs(["Explain a digit", "Per-digit maps", "Inside the network"])
with tabs[0]:
    explain_tab(choice)
with tabs[1]:
    class_maps_tab(choice)
with tabs[2]:
    inside_tab(choice)
