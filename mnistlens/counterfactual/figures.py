"""A counterfactual, drawn: the digit, what it became, the ink that changed, and the
model's probabilities before and after (computing lives in `search.py`)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlens.plots import mark_not_a_digit, warning_title


def _ink_change(change: torch.Tensor) -> np.ndarray:
    """(28, 28) change -> (28, 28, 3) RGB: added ink in orange, removed in blue, on white."""
    added = change.clamp(min=0).numpy()[..., None]
    removed = (-change).clamp(min=0).numpy()[..., None]
    white = np.ones((28, 28, 3))
    orange, blue = np.array([0.95, 0.45, 0.0]), np.array([0.1, 0.35, 0.9])
    return (white - added * (1 - orange) - removed * (1 - blue)).clip(0, 1)


def plot_counterfactual(found, i: int, title: str = "", warning: str | None = None) -> Figure:
    """Image i of a `Counterfactuals`: original | counterfactual | ink added and removed |
    the model's probabilities before and after.

    warning: a line shown in red above the panels (the input is not digit-like:
        `DigitLike.warning`); the three picture panels are then framed in red and
        marked, as `plots.plot_explanation` marks its maps.
    """
    record = found.record(i)
    before, after = found.probabilities_before[i], found.probabilities[i]
    # room for the warning's two lines above the panels, which keep their size
    fig = Figure(figsize=(10.5, 3.3 if warning else 2.8), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1, 1.6])
    axes[0].imshow(found.original[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"the model says {record['before']}", fontsize=9)
    axes[1].imshow(found.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    verdict = "" if record["valid"] else " (not reached)"
    axes[1].set_title(f"it says {record['prediction']}{verdict}", fontsize=9)
    axes[2].imshow(_ink_change(found.images[i, 0] - found.original[i, 0]))
    axes[2].set_title(
        f"ink added / removed\nL1 {record['l1']:.1f}, {record['l0']} pixels", fontsize=9
    )
    for ax in axes[:3]:
        if warning:  # the frame stays visible: ticks off, spines kept
            ax.set_xticks([])
            ax.set_yticks([])
            mark_not_a_digit(ax)
        else:
            ax.set_axis_off()
    digits = np.arange(10)
    axes[3].bar(digits - 0.2, before.numpy(), 0.4, label="before", color="tab:gray")
    axes[3].bar(digits + 0.2, after.numpy(), 0.4, label="after", color="tab:orange")
    axes[3].set_xticks(digits)
    axes[3].set_ylim(0, 1)
    axes[3].set_title("probability of each digit", fontsize=9)
    axes[3].legend(fontsize=8, frameon=False)
    title = title or f"What would make it a {record['target']} ({record['mode']})"
    if warning:
        warning_title(fig, warning, title, width=110)
    else:
        fig.suptitle(title, fontsize=10)
    return fig
