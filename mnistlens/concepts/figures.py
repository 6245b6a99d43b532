"""Pictures of TCAV results (matplotlib), separate from computing them."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlens.concepts.tcav import TCAVResult
from mnistlens.plots import plot_image_grid

MARKS = {"towards": "▲", "against": "▼", "not significant": ""}


def plot_scores(result: TCAVResult, title: str = "") -> Figure:
    """One heat map per layer: concepts x classes, each cell the mean TCAV score over
    the runs, ▲ where the concept significantly pushes towards the class and ▼ where it
    significantly pushes away (Holm-corrected, `result.alpha`)."""
    n_layers, n_concepts, n_classes = len(result.layers), len(result.concepts), len(result.classes)
    height = 1.4 + 0.38 * n_concepts
    fig = Figure(figsize=(1.2 + 0.55 * n_classes * n_layers, height))
    axes = fig.subplots(1, n_layers, squeeze=False)[0]
    fig.subplots_adjust(top=1 - 0.75 / height)  # room for two title lines above the panels
    shown = None
    for li, (ax, layer) in enumerate(zip(axes, result.layers, strict=True)):
        means = result.scores[:, li].mean(-1)  # (C, K)
        shown = ax.imshow(means, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
        for c in range(n_concepts):
            for i in range(n_classes):
                mark = MARKS[result.verdict(c, li, i)]
                ax.text(
                    i,
                    c,
                    f"{means[c, i]:.2f}\n{mark}".strip(),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if abs(means[c, i] - 0.5) > 0.3 else "black",
                )
        ax.set_xticks(range(n_classes), [str(k) for k in result.classes])
        ax.set_yticks(range(n_concepts), result.concepts if li == 0 else [""] * n_concepts)
        ax.set_xlabel("class")
        ax.set_title(f"layer {layer}", fontsize=9)
    if shown is not None:
        fig.colorbar(shown, ax=list(axes), fraction=0.03, label="TCAV score")
    runs = result.scores.shape[-1]
    fig.suptitle(
        (title + "\n" if title else "")
        + f"▲/▼: significant towards/against (Holm, alpha {result.alpha}, {runs} runs, "
        f"{result.method} CAVs)",
        fontsize=9,
    )
    return fig


def plot_examples(sets: dict[str, torch.Tensor], per_concept: int = 8) -> Figure:
    """The first `per_concept` images of each concept set, one row each."""
    names = list(sets)
    rows = [sets[name][:per_concept, 0] for name in names]
    width = max(len(r) for r in rows)
    images = torch.zeros(len(rows) * width, 28, 28)
    titles = [""] * len(images)
    for r, (name, row) in enumerate(zip(names, rows, strict=True)):
        images[r * width : r * width + len(row)] = row
        titles[r * width] = name
    return plot_image_grid(images, titles, "concept images", columns=width)


def score_rows(result: TCAVResult, concept: str, layer: str) -> np.ndarray:
    """(K, R) one concept's scores at one layer, per class and run (for box plots)."""
    return result.scores[result.concepts.index(concept), result.layers.index(layer)]
