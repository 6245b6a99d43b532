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
from mnistlens.models import conv_layer_names

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
    methods = list(choice["methods"])
    has_conv = bool(conv_layer_names(model))
    if "grad_cam" in methods and not has_conv:
        st.info("Grad-CAM needs a convolutional layer; skipped for this model.")
        methods.remove("grad_cam")
    target = None if choice["target"] == "predicted" else int(choice["target"])
    options = {
        "integrated_gradients": {"n_steps": choice["steps"], "baseline": choice["baseline"]},
        "deeplift": {"baseline": choice["baseline"]},
    }
    result = explain.explain(
        model, image[None], methods, target, **{m: o for m, o in options.items() if m in methods}
    )
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
        st.caption(f"{meta['arch']} model, test accuracy {meta['test_accuracy']:.2%}")
    with right:
        if not methods:
            st.warning("Choose at least one method in the sidebar.")
            return
        notes = {name: f"delta {float(d[0]):+.2e}" for name, d in result.deltas.items()}
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
        for name, delta in result.deltas.items():
            st.caption(
                f"{name}: completeness error {float(delta[0]):+.3e} (the map should sum to "
                "the score difference between the image and the baseline)."
            )


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
    if conv_layer_names(model):
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
    hidden = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
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
