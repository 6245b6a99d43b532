"""Pictures of results, as matplotlib Figures; computing lives elsewhere.

Figures are built with `matplotlib.figure.Figure` (not pyplot), so they need no
display, leak no global state, and show inline in a notebook when returned.
`save_figure` writes PNG atomically and returns the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlens.io import atomic_write


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `fig` as PNG at `path` (temp file + rename); returns the path."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))


def plot_confusion(confusion: torch.Tensor, title: str = "Confusion matrix") -> Figure:
    """Heatmap of a (10, 10) confusion matrix (rows = true digit), counts written in cells.

    The diagonal dwarfs the mistakes, so the colour scale is logarithmic: the
    off-diagonal cells that matter stay visible.
    """
    from matplotlib.colors import LogNorm

    counts = confusion.detach().cpu().numpy()
    n = counts.shape[0]
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot()
    image = ax.imshow(counts + 1, cmap="Blues", norm=LogNorm(vmin=1, vmax=counts.max() + 1))
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                dark = counts[i, j] > counts.max() / 8
                ax.text(
                    j,
                    i,
                    int(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="count + 1 (log scale)")
    return fig


# ---------------------------------------------------------------- grids of panels
# Grids of small maps are placed at fixed distances in inches, not by matplotlib's
# constrained layout: its solver took most of the drawing time of a many-panel figure
# (benchmarks/README.md). Saving with bbox_inches="tight" trims what is left over at the
# edges.


@dataclass(frozen=True)
class Panels:
    """The geometry of a rows x columns grid of square panels, in inches.

    left: room for row labels; top: room for the figure title; gap_x, gap_y: between
    panels (gap_y holds a panel title); right: room for colorbars; bottom: below.
    """

    rows: int
    columns: int
    size: float = 1.2
    left: float = 0.15
    top: float = 0.2
    gap_x: float = 0.12
    gap_y: float = 0.3
    right: float = 0.15
    bottom: float = 0.1

    def figure(self) -> Figure:
        width = self.left + self.columns * (self.size + self.gap_x) - self.gap_x + self.right
        height = self.top + self.rows * (self.size + self.gap_y) - self.gap_y + self.bottom
        return Figure(figsize=(width, height))

    def axes(self, fig: Figure) -> np.ndarray:
        """-> (rows, columns) array of Axes without ticks, row 0 at the top."""
        width, height = fig.get_size_inches()
        grid = np.empty((self.rows, self.columns), dtype=object)
        for r in range(self.rows):
            for c in range(self.columns):
                x = self.left + c * (self.size + self.gap_x)
                y = height - self.top - (r + 1) * self.size - r * self.gap_y
                box = (x / width, y / height, self.size / width, self.size / height)
                ax = fig.add_axes(box)
                ax.set_xticks([])
                ax.set_yticks([])
                grid[r, c] = ax
        return grid


def title_room(title: str, panel_titles: bool = True) -> float:
    """Inches above the grid for a figure title of this many lines (and the first row's
    panel titles)."""
    lines = title.count("\n") + 1 if title else 0
    return 0.1 + 0.25 * lines + (0.25 if panel_titles else 0.0)


def figure_title(fig: Figure, title: str) -> None:
    if title:
        fig.suptitle(title, y=1 - 0.08 / fig.get_size_inches()[1], va="top")


def colorbar_beside(fig: Figure, shown, top, bottom=None, fraction: float = 0.8) -> None:
    """A colorbar right of the axes `top` to `bottom` (one column of the grid, or one
    axes), `fraction` of their height, centred on them."""
    width_in, _ = fig.get_size_inches()
    x1, y1 = top.get_position().x1, top.get_position().y1
    y0 = (bottom or top).get_position().y0
    tall = (y1 - y0) * fraction
    cax = fig.add_axes((x1 + 0.08 / width_in, y0 + (y1 - y0 - tall) / 2, 0.1 / width_in, tall))
    fig.colorbar(shown, cax=cax)


def colorbar_below(fig: Figure, shown, ax) -> None:
    """A horizontal colorbar under `ax`, 80% of its width."""
    _, height_in = fig.get_size_inches()
    x0, y0, x1, _ = ax.get_position().extents
    wide = (x1 - x0) * 0.8
    cax = fig.add_axes((x0 + (x1 - x0 - wide) / 2, y0 - 0.3 / height_in, wide, 0.1 / height_in))
    fig.colorbar(shown, cax=cax, orientation="horizontal")


# ---------------------------------------------------------------- attribution maps

DIVERGING = "RdBu_r"  # red = pushes towards the target class, blue = against it
SEQUENTIAL = "magma"


def map_style(maps: torch.Tensor, signed: bool) -> dict:
    """imshow arguments: a diverging scale centred on zero for signed maps, else sequential."""
    peak = float(maps.abs().max()) or 1.0
    if signed:
        return {"cmap": DIVERGING, "vmin": -peak, "vmax": peak}
    return {"cmap": SEQUENTIAL, "vmin": 0.0, "vmax": peak}


def overlay_digit(ax, image: torch.Tensor) -> None:
    """The digit's outline, faint, so a map can be read against the strokes."""
    ax.contour(image.numpy(), levels=[0.5], colors="0.4", linewidths=0.6, alpha=0.6)


def plot_explanation(
    image: torch.Tensor,
    maps: dict[str, torch.Tensor],
    title: str = "",
    notes: dict[str, str] | None = None,
    shared_scale: bool = False,
    signed: set[str] | None = None,
    warning: str | None = None,
) -> Figure:
    """The digit, then one panel per attribution map, each with a colorbar.

    Args:
        image: (1, 28, 28) or (28, 28) in [0, 1].
        maps: method name -> (1, 28, 28) or (28, 28) map.
        notes: method name -> a short line under its panel (e.g. the IG delta).
        shared_scale: one colour scale for all signed maps (and one for all magnitude
            maps), so panels compare in absolute terms; default: each its own.
        signed: which methods give signed maps (diverging colours); default: those in
            the registry calls signed (`attribution.get_spec(name).signed`), plus any
            map with negative values.
        warning: a line shown in red above the panels (e.g. the input is not
            digit-like: `DigitLike.warning`); every map panel is then framed in red and
            marked, so that a cropped panel still carries it.
    """
    from mnistlens.attribution import registry

    def registered_signed(name: str) -> bool:
        try:
            return registry.get_spec(name).signed
        except ValueError:  # a panel that is not a method, e.g. "4 rather than 9"
            return False

    image = image.detach().reshape(28, 28).cpu()
    maps = {k: v.detach().reshape(28, 28).cpu() for k, v in maps.items()}
    is_signed = {
        k: (registered_signed(k) if signed is None else k in signed) or bool((v < 0).any())
        for k, v in maps.items()
    }
    shared = {}
    if shared_scale:
        for kind in (True, False):
            group = [v for k, v in maps.items() if is_signed[k] == kind]
            if group:
                shared[kind] = map_style(torch.stack(group), kind)

    # At most five panels a row: all nine methods wrap into rows instead of one
    # 3,000-pixel strip that a page or a notebook shrinks into illegibility.
    panels = len(maps) + 1
    columns = min(panels, 5)
    rows = -(-panels // columns)
    note_lines = max((n.count("\n") + 1 for n in (notes or {}).values()), default=0)
    fig = Figure(
        figsize=(2.6 * columns, (2.9 + 0.15 * note_lines) * rows + 0.3), layout="constrained"
    )
    grid = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax in grid[panels:]:
        ax.set_axis_off()
    axes = grid[:panels]
    axes[0].imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input")
    for ax, (name, m) in zip(axes[1:], maps.items(), strict=True):
        style = shared.get(is_signed[name]) or map_style(m, is_signed[name])
        shown = ax.imshow(m.numpy(), **style)
        overlay_digit(ax, image)
        ax.set_title(name.replace("_", " "), fontsize=10)
        if notes and name in notes:
            ax.set_xlabel(notes[name], fontsize=8)
        fig.colorbar(shown, ax=ax, shrink=0.8)
        if warning:
            mark_not_a_digit(ax)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if warning:
        warning_title(fig, warning, title, width=max(40, 24 * columns))
    elif title:
        fig.suptitle(title)
    return fig


def warning_title(fig: Figure, warning: str, title: str = "", width: int = 100) -> None:
    """The figure's title led by a warning (e.g. the input is not digit-like:
    `DigitLike.warning`), wrapped to `width` characters, all in red."""
    import textwrap

    wrapped = textwrap.fill(warning, width=width)
    text = f"{wrapped}\n{title}" if title else wrapped
    fig.suptitle(text, color="firebrick", fontweight="bold", fontsize=10)


def mark_not_a_digit(ax) -> None:
    """A red frame and a "not a digit?" tag on one map panel."""
    for spine in ax.spines.values():
        spine.set_edgecolor("firebrick")
        spine.set_linewidth(2.5)
    ax.text(
        0.02, 0.98, "not a digit?", transform=ax.transAxes, color="white", fontsize=7,
        va="top", ha="left", bbox={"facecolor": "firebrick", "edgecolor": "none", "pad": 1.5},
    )  # fmt: skip


def plot_class_maps(class_maps: dict[str, torch.Tensor], title: str = "") -> Figure:
    """A methods x digits grid of per-digit mean maps: method -> (10, 28, 28).

    Each row (method) has one colour scale, diverging for signed maps.
    """
    geometry = Panels(len(class_maps), 10, left=0.4, top=title_room(title), right=0.7)
    fig = geometry.figure()
    axes = geometry.axes(fig)
    for row, (name, maps) in enumerate(class_maps.items()):
        maps = maps.detach().cpu()
        style = map_style(torch.nan_to_num(maps), bool((maps < 0).any()))
        for digit in range(10):
            ax = axes[row, digit]
            shown = ax.imshow(maps[digit].numpy(), **style)
            if row == 0:
                ax.set_title(str(digit))
        axes[row, 0].set_ylabel(name.replace("_", " "), fontsize=9)
        colorbar_beside(fig, shown, axes[row, -1])
    figure_title(fig, title)
    return fig


# ---------------------------------------------------------------- network internals


def plot_image_grid(
    images: torch.Tensor,
    titles: list[str] | None = None,
    title: str = "",
    signed: bool = False,
    columns: int = 10,
    shared_scale: bool = True,
) -> Figure:
    """A grid of small images (K, H, W): weights, filters, feature maps or digits.

    signed: diverging colours centred on zero (weights), else grayscale [0, max].
    """
    images = images.detach().cpu().float()
    k = images.shape[0]
    columns = min(columns, k)
    rows = -(-k // columns)
    colorbar = signed and shared_scale
    # Panel titles are 8-point text, ~0.06 in a character: long ones need wider gaps.
    widest = 0.06 * max((len(t) for t in titles or []), default=0)
    geometry = Panels(
        rows, columns, size=1.15, gap_x=max(0.15, widest - 1.05),
        top=title_room(title, bool(titles)), gap_y=0.3 if titles else 0.15,
        right=0.9 if colorbar else 0.15,
    )  # fmt: skip
    fig = geometry.figure()
    axes = geometry.axes(fig)
    style = (
        map_style(images, True)
        if signed
        else {"cmap": "gray", "vmin": 0.0, "vmax": float(images.max()) or 1.0}
    )
    shown = None
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        own = (
            style if shared_scale else (map_style(images[i], True) if signed else {"cmap": "gray"})
        )
        shown = ax.imshow(images[i].numpy(), **own)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    if colorbar and shown is not None:
        colorbar_beside(fig, shown, axes[0, -1], axes[-1, -1], fraction=0.6 if rows > 1 else 0.8)
    figure_title(fig, title)
    return fig


def plot_class_profile(profile: torch.Tensor, units: list[int], title: str = "") -> Figure:
    """Heatmap of mean activation per digit (rows) for the given units (columns)."""
    data = profile[:, units].detach().cpu().numpy()
    fig = Figure(figsize=(max(4.0, 0.3 * len(units) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_yticks(range(profile.shape[0]))
    ax.set_ylabel("digit")
    ax.set_xticks(range(len(units)), [str(u) for u in units], rotation=90, fontsize=7)
    ax.set_xlabel("unit (most class-selective first)")
    fig.colorbar(shown, ax=ax, label="mean activation")
    if title:
        ax.set_title(title)
    return fig


def plot_projections(
    projections: dict[str, tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor, title: str = ""
) -> Figure:
    """One PCA scatter per layer, points coloured by digit: layer -> (coords (N, 2), ratio)."""
    fig = Figure(figsize=(3.6 * len(projections) + 1, 3.8), layout="constrained")
    axes = fig.subplots(1, len(projections), squeeze=False)[0]
    colours = labels.numpy()
    for ax, (layer, (coords, ratio)) in zip(axes, projections.items(), strict=True):
        points = ax.scatter(
            coords[:, 0].numpy(),
            coords[:, 1].numpy(),
            c=colours,
            cmap="tab10",
            vmin=-0.5,
            vmax=9.5,
            s=4,
            alpha=0.7,
            linewidths=0,
        )
        ax.set_title(f"{layer}  (PC1+2: {float(ratio.sum()):.0%} of variance)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes.tolist(), ticks=range(10), label="digit")
    if title:
        fig.suptitle(title)
    return fig


def plot_perturbation_curves(curves: dict[str, dict[str, torch.Tensor]], title: str = "") -> Figure:
    """Mean deletion and insertion curves per method: method -> {mode: (N, S + 1)}."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
        for name, by_mode in curves.items():
            mean = by_mode[mode].mean(dim=0)
            x = torch.linspace(0, 1, len(mean))
            style = {"color": "0.5", "linestyle": "--"} if name == "random" else {}
            ax.plot(x.numpy(), mean.numpy(), label=name.replace("_", " "), **style)
        ax.set_xlabel(
            f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}"
            " (most important first)"
        )
        ax.set_ylabel("probability of the explained class")
        ax.set_title(
            f"{mode} ({'lower' if mode == 'deletion' else 'higher'} area = more faithful)",
            fontsize=10,
        )
        ax.set_ylim(0, 1.02)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
