"""Training examples: "it is a 4 because it looks like these 4s", and the training
images that pushed the model towards (or away from) its answer.

`influence.nearest_training_images` (nearest neighbours by the last hidden layer's
activations) and `influence.tracin` (TracIn proponents and opponents, over the training
snapshots the checkpoint keeps, else the final weights), both on one pass over the
60,000 training images per set of weights, cached on disk by the library.
"""

from __future__ import annotations

import streamlit as st

from mnistlens import influence

# isort: split
# The explorer's own modules (Streamlit puts apps/ on sys.path).
import cache
import catalog
import charts
import sidebar

K = 8  # training images per row

choice = sidebar.current()
st.header("Training examples")
image = sidebar.require_digit(choice)
sidebar.warn_if_not_a_digit(choice, image)
model = choice.model
index = cache.training_index(choice.model_name)
train_images, train_labels = catalog.get_train_set()
near = influence.nearest_training_images(index, model, image[None], k=K)
with st.spinner("TracIn: one pass over the training images per snapshot (once, then cached) ..."):
    traced = influence.tracin(model, image[None], k=K, snapshots=choice.meta)


def row(indices, scores, what: str) -> None:
    """K training images with their labels and scores."""
    st.image(
        [charts.digit_rgb(train_images[i], 3) for i in indices[0]],
        caption=[
            f"#{int(i)}: a {int(train_labels[i])} ({what} {float(s):.2g})"
            for i, s in zip(indices[0], scores[0], strict=True)
        ],
        output_format="PNG",
    )


left, right = st.columns([1, 7])
left.image(charts.digit_rgb(image, 3), caption=choice.what, output_format="PNG")
with right:
    st.subheader("Most alike, as the network sees them")
    row(near.indices, near.similarities, "similarity")
    st.caption(
        f"Cosine similarity of the activations at {index.layer} (Papernot & McDaniel 2018, "
        "deep k-nearest neighbours): what this digit looks like to the model."
    )
st.subheader("Training images that pushed towards this prediction (TracIn proponents)")
row(traced.proponents, traced.proponent_scores, "score")
st.subheader("... and against it (opponents)")
row(traced.opponents, traced.opponent_scores, "score")
if traced.used == influence.FINAL_WEIGHTS:
    st.caption(
        "TracIn (Pruthi et al. 2020) on the final layer, at the final weights only (this "
        "checkpoint keeps no training snapshots): well-learned training images have almost no "
        "loss gradient there, so both lists lean to hard, atypical or mislabeled training "
        "digits rather than to typical ones."
    )
else:
    st.caption(
        f"TracIn (Pruthi et al. 2020) on the final layer, summed over {traced.used}, each "
        "weighted by the learning rate of the training it stands for."
    )
charts.save_buttons(
    "training",
    f"{choice.model_name.removesuffix('.pt')}-{choice.digit.replace(' ', '')}-training",
    lambda: charts.mosaic(
        train_images[[*near.indices[0], *traced.proponents[0], *traced.opponents[0]]][:, 0],
        K,
        signed=False,
        scale=3,
    ),
    lambda: {
        "model": choice.model_name,
        "digit": choice.what,
        "layer": index.layer,
        "nearest": {
            "indices": near.indices[0].tolist(),
            "similarities": charts.listed(near.similarities[0]),
        },
        "tracin": {
            "used": traced.used,
            "proponents": traced.proponents[0].tolist(),
            "proponent_scores": charts.listed(traced.proponent_scores[0]),
            "opponents": traced.opponents[0].tolist(),
            "opponent_scores": charts.listed(traced.opponent_scores[0]),
        },
        "labels": {
            str(int(i)): int(train_labels[i])
            for i in near.indices[0].tolist()
            + traced.proponents[0].tolist()
            + traced.opponents[0].tolist()
        },
    },
)
