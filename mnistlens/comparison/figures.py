"""Pictures of a model comparison, as matplotlib Figures (computing lives in `compare.py`).

Every function takes the JSON-ready report of `stats.compare_models` (so a report
saved as JSON can be drawn again later) and returns a `Figure`; save it with
`plots.save_figure`.

    >>> report = stats.compare_models(models, images, labels)
    >>> plots.save_figure(plot_accuracy_vs_parameters(report), "acc_params.png")
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from mnistlens.plots import (
    Panels,
    colorbar_below,
    colorbar_beside,
    figure_title,
    map_style,
    overlay_digit,
    title_room,
)


def _scatter_with_ci(ax, xs: list[float], rows: list[dict]) -> None:
    """Accuracy (%) points at `xs` with their 95% interval as error bars, each labelled."""
    ys = [100 * r["accuracy"] for r in rows]
    below = [y - 100 * r["accuracy_ci95"][0] for y, r in zip(ys, rows, strict=True)]
    above = [100 * r["accuracy_ci95"][1] - y for y, r in zip(ys, rows, strict=True)]
    ax.errorbar(xs, ys, yerr=[below, above], fmt="o", capsize=3, color="tab:blue")
    for x, y, row in zip(xs, ys, rows, strict=True):
        ax.annotate(row["name"], (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8)
    ax.set_ylabel("test accuracy (%), 95% interval")
    ax.grid(alpha=0.3)


def plot_accuracy_vs_parameters(report: dict, title: str = "Accuracy against size") -> Figure:
    """Test accuracy (with 95% Wilson intervals) against parameter count, log x axis."""
    rows = report["models"]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    _scatter_with_ci(ax, [r["parameters"] for r in rows], rows)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_title(title)
    return fig


def plot_accuracy_vs_time(report: dict, title: str = "Accuracy against training time") -> Figure:
    """Test accuracy (with 95% intervals) against recorded training seconds, log x axis.

    Models without a recorded training time are left out and named under the axis.
    """
    timed = [r for r in report["models"] if r.get("train_seconds")]
    untimed = [r["name"] for r in report["models"] if not r.get("train_seconds")]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    _scatter_with_ci(ax, [r["train_seconds"] for r in timed], timed)
    ax.set_xscale("log")
    label = "training seconds (log scale; as recorded, on a shared 2-core CPU)"
    if untimed:
        label += f"\nno recorded time: {', '.join(untimed)}"
    ax.set_xlabel(label)
    ax.set_title(title)
    return fig


def plot_digit_accuracy(report: dict, title: str = "Accuracy per digit (%)") -> Figure:
    """A models x digits heatmap of per-digit test accuracy, values written in the cells.

    The colour scale starts at the lowest cell, not at 0, so that differences of a
    fraction of a point between good models stay visible.
    """
    rows = report["models"]
    values = torch.tensor([r["per_digit"] for r in rows], dtype=torch.float64) * 100  # (M, 10)
    fig = Figure(figsize=(8, 0.42 * len(rows) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    low = float(values.min())
    image = ax.imshow(values.numpy(), cmap="viridis", vmin=low, vmax=100, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = float(values[i, j])
            dark = v < low + 0.6 * (100 - low)
            color = "white" if dark else "black"
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(10))
    ax.set_xlabel("true digit")
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return fig


def _answers_text(record: dict, max_names: int = 3) -> str:
    """Each predicted label with the models that gave it, the largest camp first.

    A camp of more than `max_names` models is shown as a count, so the text fits.
    """
    camps: dict[int, list[str]] = {}
    for name, label in record["predictions"].items():
        camps.setdefault(label, []).append(name)
    lines = []
    for label, names in sorted(camps.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(names) if len(names) <= max_names else f"{len(names)} models"
        lines.append(f"{label}: {shown}")
    return "\n".join(lines)


def plot_disagreements(
    report: dict, images: torch.Tensor, n: int = 12, columns: int = 4, title: str = ""
) -> Figure:
    """A grid of the `n` most confident disagreements, each with every model's answer.

    Args:
        report: `compare_models` output (its `disagreements`, already ranked).
        images: the (N, 1, 28, 28) test images the report was computed on.
        n: how many disagreements to show (at most as many as the report holds).
        columns: images per row.
    """
    records = report["disagreements"][:n]
    if not records:
        fig = Figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "the models agree on every image", ha="center", va="center")
        return fig
    columns = min(columns, len(records))
    rows = -(-len(records) // columns)
    lines = max(_answers_text(r).count("\n") + 1 for r in records)
    fig = Figure(figsize=(2.6 * columns, (2.3 + 0.16 * lines) * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes[len(records) :]:
        ax.set_axis_off()
    for ax, record in zip(axes, records, strict=False):
        ax.imshow(images[record["index"]].reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{record['index']}: true {record['label']}", fontsize=9)
        ax.set_xlabel(_answers_text(record), fontsize=7, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "Where the models disagree, most confident first")
    return fig


def plot_model_grid(
    image: torch.Tensor,
    maps: dict[str, dict[str, torch.Tensor]],
    titles: dict[str, str] | None = None,
    title: str = "",
) -> Figure:
    """A models x methods grid for one digit: model -> method -> (1, 28, 28) map.

    Each method (column) has ONE colour scale across all models, so a map that is
    brighter in one model than in another really is larger there. titles: model -> a
    row label (e.g. its prediction and probability).
    """
    models = list(maps)
    methods = list(next(iter(maps.values())))
    image = image.detach().reshape(28, 28).cpu()
    label_lines = max(((titles or {}).get(m, m).count("\n") + 1 for m in models), default=1)
    geometry = Panels(
        len(models), len(methods), size=1.9, gap_x=0.25, left=0.2 + 0.17 * label_lines,
        top=title_room(title), bottom=0.55,
    )  # fmt: skip
    fig = geometry.figure()
    axes = geometry.axes(fig)
    for col, method in enumerate(methods):
        column = torch.stack([maps[m][method].detach().reshape(28, 28).cpu() for m in models])
        style = map_style(column, bool((column < 0).any()))
        for row, model in enumerate(models):
            ax = axes[row, col]
            shown = ax.imshow(column[row].numpy(), **style)
            overlay_digit(ax, image)
            if row == 0:
                ax.set_title(method.replace("_", " "), fontsize=10)
            if col == 0:
                ax.set_ylabel((titles or {}).get(model, model), fontsize=9)
        colorbar_below(fig, shown, axes[-1, col])
    figure_title(fig, title)
    return fig


def plot_pair_maps(
    found: dict, images: torch.Tensor, a: str, b: str, method: str = "integrated gradients"
) -> Figure:
    """What B looks at that A misses (`maps.where_b_beats_a`): for the images B gets
    right and A wrong, rows A and B of each model's mean map per true digit
    ("digit_means_a/b", (D, 28, 28)), then rows A and B of a few single images
    ("examples_a/b", (k, 28, 28)) with the digit's outline. One colour scale per row."""
    digits, counts = found["digits"].tolist(), found["digit_counts"].tolist()
    k = len(found["examples_a"])
    # Examples below the means, not beside them: ten digits plus six examples would be
    # a sixteen-panel strip of thumbnails.
    blocks = [
        (
            [f"digit {d} (n={n})" for d, n in zip(digits, counts, strict=True)],
            found["digit_means_a"],
            found["digit_means_b"],
        )
    ]
    if k:
        titles = [f"#{i}" for i in found["indices"][:k].tolist()]
        blocks.append((titles, found["examples_a"], found["examples_b"]))
    columns = max(len(digits), k)
    suptitle = (
        f"{method}: the {len(found['indices'])} images {b} gets right and {a} gets wrong, "
        "both models' maps for the true class\nmean map per true digit (n images), then "
        "single images (#test index); one colour scale per row"
    )
    geometry = Panels(2 * len(blocks), columns, left=0.4, top=title_room(suptitle), right=0.7)
    fig = geometry.figure()
    axes = geometry.axes(fig)
    for block, (titles, maps_a, maps_b) in enumerate(blocks):
        for model, (name, maps) in enumerate(((a, maps_a), (b, maps_b))):
            row = axes[2 * block + model]
            maps = maps.detach().cpu()
            # A scale per row, not per model: the per-digit means are fainter than single
            # maps (the noise of one image cancels), so a shared scale would blank them.
            style = map_style(maps, bool((maps < 0).any()))
            for col, ax in enumerate(row):
                if col >= len(maps):
                    ax.set_axis_off()
                    continue
                shown_map = ax.imshow(maps[col].numpy(), **style)
                if block == 1:  # an example: one digit, so its outline means something
                    overlay_digit(ax, images[int(found["indices"][col]), 0])
                if model == 0:
                    ax.set_title(titles[col], fontsize=9)
            row[0].set_ylabel(name, fontsize=10)
            colorbar_beside(fig, shown_map, row[-1])
    figure_title(fig, suptitle)
    return fig
