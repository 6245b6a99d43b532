"""Pictures of a stress test, as matplotlib Figures (computing lives in `stress.py`).

The curves and the heatmap take the JSON-ready dict of `StressResult.to_json()`, so a
result saved as JSON can be drawn again later; the examples take the images and the
transforms themselves. Save with `plots.save_figure`.

    >>> table = stress.evaluate(models).to_json()
    >>> plots.save_figure(plot_severity_curves(table), "curves.png")
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from mnistlens.perturb.registry import Transform, resolve_transforms


def _colours(n: int) -> list:
    """n distinguishable colours, in the models' order (the series runs from the linear
    model to the CNN, so a sequential map reads as 'simple to elaborate')."""
    from matplotlib import colormaps

    cmap = colormaps["viridis" if n > 10 else "tab10"]
    return [cmap(i / max(1, n - 1)) if n > 10 else cmap(i) for i in range(n)]


def plot_severity_curves(
    table: dict, transforms: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """One panel per swept transform: accuracy (%) against severity, one line per model."""
    sweeps = [t for t in table["transforms"] if t["kind"] == "sweep"]
    if transforms is not None:
        sweeps = [t for t in sweeps if t["name"] in transforms]
    if not sweeps:
        raise ValueError("the table has no swept transform to draw")
    cols = min(4, len(sweeps))
    rows = math.ceil(len(sweeps) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.9 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    names = [m["name"] for m in table["models"]]
    colours = _colours(len(names))
    for ax, t in zip(axes, sweeps, strict=False):
        for name, colour in zip(names, colours, strict=True):
            ys = [100 * a for a in table["accuracy"][name][t["name"]]]
            ax.plot(t["severities"], ys, marker="o", markersize=3, color=colour, label=name)
        ax.set_title(t["name"], fontsize=10)
        ax.set_xlabel(t["unit"], fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[: len(sweeps) : cols]:
        ax.set_ylabel("accuracy (%)", fontsize=8)
    for ax in axes[len(sweeps) :]:
        ax.set_visible(False)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(len(names), 7),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title or f"Accuracy as each change grows ({table['n_images']:,} test images)")
    return fig


def plot_corruption_heatmap(table: dict, title: str = "") -> Figure:
    """Models x MNIST-C corruptions: accuracy (%) in each cell, with the clean accuracy
    first and the mean over the corruptions last."""
    corruptions = [t for t in table["transforms"] if t["kind"] == "corruption"]
    if not corruptions:
        raise ValueError("the table has no corruption to draw")
    columns = ["clean", *(t["name"] for t in corruptions), "mean"]
    rows = []
    for model in table["models"]:
        accuracy = table["accuracy"][model["name"]]
        per = [accuracy[t["name"]][-1] for t in corruptions]  # MNIST-C's own severity
        rows.append([model["clean"], *per, model["mean_corruption_accuracy"]])
    values = 100 * torch.tensor(rows)  # (M, C + 2)
    fig = Figure(figsize=(0.62 * len(columns) + 2.2, 0.42 * len(rows) + 1.9), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(values.numpy(), cmap="RdYlGn", vmin=max(0.0, float(values.min())), vmax=100)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{float(values[i, j]):.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [m["name"] for m in table["models"]], fontsize=8)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="accuracy (%)")
    ax.set_title(title or "Accuracy on MNIST-C's corruptions (%)")
    return fig


def _strip(images: torch.Tensor):
    """(K, 1, 28, 28) -> (28, 28K + K - 1): the digits side by side, 1 px apart."""
    gap = torch.full((28, 1), 0.35)
    parts = []
    for image in images:
        parts += [image[0].cpu(), gap]
    return torch.cat(parts[:-1], dim=1).numpy()


def plot_examples(
    images: torch.Tensor,
    transforms: Sequence[str | Transform] | None = None,
    seed: int = 0,
    title: str = "",
) -> Figure:
    """What each change does, to check by eye: one row per transform, one column per
    severity, the same few digits in every cell: (K, 1, 28, 28) digits, K of 2-4 reads
    best. Corruptions have one severity besides clean, so they share a grid of their
    own: clean | corrupted, two per row."""
    chosen = resolve_transforms(transforms)
    sweeps = [t for t in chosen if t.kind == "sweep"]
    corruptions = [t for t in chosen if t.kind != "sweep"]
    cols = max([len(t.severities) for t in sweeps] + [4 if corruptions else 0])
    rows = len(sweeps) + math.ceil(len(corruptions) / 2)
    width = len(images) * 0.62
    fig = Figure(figsize=(width * cols + 0.6, 0.95 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for row, t in enumerate(sweeps):
        for col, severity in enumerate(t.severities):
            ax = axes[row, col]
            ax.imshow(_strip(t(images, severity, seed)), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{t.name} {severity:g} {t.unit}", fontsize=7)
    for k, t in enumerate(corruptions):
        row, col = len(sweeps) + k // 2, 2 * (k % 2)
        axes[row, col].imshow(_strip(images), cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title("clean", fontsize=7)
        axes[row, col + 1].imshow(_strip(t(images, t.hardest, seed)), cmap="gray", vmin=0, vmax=1)
        axes[row, col + 1].set_title(t.name, fontsize=7)
    fig.suptitle(title or "What each change does, severity by severity")
    return fig


def plot_invariance(strip, title: str = "") -> Figure:
    """One digit and its changed copies (`invariance.Strip`), each titled with the
    model's answer and probability; a changed answer in red."""
    n = len(strip.changes)
    fig = Figure(figsize=(0.95 * n, 1.55), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, image, change in zip(axes, strip.images, strip.changes, strict=True):
        ax.imshow(image[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        colour = "black" if change["kept"] else "tab:red"
        ax.set_title(
            f"{change['label']}\n{change['prediction']} ({change['probability']:.0%})",
            fontsize=6.5,
            color=colour,
        )
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_gap_causes(images: torch.Tensor, causes: dict, labels=None, title: str = "") -> Figure:
    """The images of a pair's gap that normalizing one factor fixes for A: one row per
    factor (`causes.count_causes`), each example as it was and normalized. images: the
    (N, 1, 28, 28) set the causes were counted on; labels (N,) titles the digits."""
    from mnistlens.perturb.causes import EXAMPLES, normalize_for

    rows = causes["factors"]
    fig = Figure(figsize=(0.8 * 2 * EXAMPLES + 1.6, 1.0 * len(rows) + 0.7), layout="constrained")
    axes = fig.subplots(len(rows), 2 * EXAMPLES, squeeze=False)
    for row, found in zip(axes, rows, strict=True):
        for ax in row:
            ax.set_axis_off()
        name = f"{found['factor']}: {found['fixed']} of {causes['n_gap']}"
        if found.get("opposite_fixed") is not None:
            name += f"\n(the opposite change: {found['opposite_fixed']})"
        row[0].text(-0.15, 0.5, name, transform=row[0].transAxes, ha="right", va="center",
                    fontsize=8)  # fmt: skip
        indices = found["fixed_indices"]
        if not indices:
            continue
        before = images[indices]
        after = normalize_for(found["factor"], before)
        for k, index in enumerate(indices):
            digit = "" if labels is None else f" ({int(labels[index])})"
            row[2 * k].imshow(before[k, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            row[2 * k].set_title(f"#{index}{digit}", fontsize=6.5)
            row[2 * k + 1].imshow(after[k, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            row[2 * k + 1].set_title("normalized", fontsize=6.5, color="tab:green")
    fig.suptitle(
        title
        or f"Where `{causes['b']}` is right and `{causes['a']}` wrong: what normalizing fixes "
        f"for `{causes['a']}`",
        fontsize=9,
    )
    return fig
