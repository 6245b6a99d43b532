"""Pictures of a model comparison, as matplotlib Figures (computing lives in `compare.py`).

Every function takes the JSON-ready report of `compare.compare_models` (so a report
saved as JSON can be drawn again later) and returns a `Figure`; save it with
`plots.save_figure`.

    >>> report = compare.compare_models(models, images, labels)
    >>> plots.save_figure(plot_accuracy_vs_parameters(report), "acc_params.png")
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure


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
