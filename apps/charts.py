"""Pictures for the explorer that `mnistlens.plots` does not draw, and fast ones.

Two kinds:
- maps and digits as RGB arrays for `st.image`: colouring a 28 x 28 array costs next
  to nothing, while drawing and encoding a matplotlib figure of the same maps was most
  of a click's time. The colours and the sign convention are the ones
  `plots.plot_explanation` uses, so a figure downloaded from the app shows what the
  page showed;
- `plot_randomization`, a matplotlib figure the library lacks (a line per method over
  the layers, top first), and `png_bytes` for every download button.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import streamlit as st
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from mnistlens import attribution, faithfulness, plots

SCALE = 6  # screen pixels per MNIST pixel: 28 -> 168, sharp edges (no browser smoothing)
OUTLINE = np.array([102, 102, 102], dtype=np.float32)  # the digit's contour, grey as in plots
BAR = "#0068c9"  # Streamlit's first chart colour, as st.bar_chart drew the probabilities


def is_signed(name: str, values: torch.Tensor) -> bool:
    """Diverging colours if the registry calls the method signed or the map goes negative
    (the rule `plots.plot_explanation` follows; a panel such as "4 rather than 9" is not a
    registered method)."""
    try:
        registered = attribution.get_spec(name).signed
    except ValueError:
        registered = False
    return registered or bool((values < 0).any())


def peaks(maps: dict[str, torch.Tensor], shared: bool) -> dict[str, float]:
    """The colour-scale peak of each map: its own |max|, or with `shared` the |max| over
    all maps of the same kind (signed with signed, magnitude with magnitude), as
    `plot_explanation(shared_scale=True)` does."""
    own = {k: float(v.abs().max()) or 1.0 for k, v in maps.items()}
    if not shared:
        return own
    kinds = {k: is_signed(k, v) for k, v in maps.items()}
    top = {kind: max((own[k] for k in maps if kinds[k] == kind), default=1.0) for kind in (0, 1)}
    return {k: top[kinds[k]] for k in maps}


def _upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement: (H, W, 3) -> (H * scale, W * scale, 3)."""
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)


def _outline(image: torch.Tensor, scale: int) -> np.ndarray:
    """The boundary of the digit's ink (> 0.5) on the enlarged grid: -> (28s, 28s) bool."""
    ink = (image.reshape(28, 28).numpy() > 0.5).repeat(scale, 0).repeat(scale, 1)
    inner = ink.copy()
    inner[1:, :] &= ink[:-1, :]
    inner[:-1, :] &= ink[1:, :]
    inner[:, 1:] &= ink[:, :-1]
    inner[:, :-1] &= ink[:, 1:]
    return ink & ~inner


def map_rgb(
    values: torch.Tensor,
    signed: bool,
    peak: float,
    image: torch.Tensor | None = None,
    scale: int = SCALE,
) -> np.ndarray:
    """One attribution map as an RGB picture: (28, 28) or (1, 28, 28) -> (28s, 28s, 3) uint8.

    Signed maps on plots.DIVERGING centred on zero (red = towards the class), magnitudes
    on plots.SEQUENTIAL from 0; `peak` is the end of the scale. With `image`, its
    outline is drawn over the map, faint, so the map can be read against the strokes.
    """
    m = values.detach().reshape(28, 28).float().numpy()
    if signed:
        unit, cmap = (m / peak + 1) / 2, colormaps[plots.DIVERGING]
    else:
        unit, cmap = m / peak, colormaps[plots.SEQUENTIAL]
    rgb = _upscale(cmap(np.clip(unit, 0, 1))[..., :3].astype(np.float32) * 255, scale)
    if image is not None:
        edge = _outline(image, scale)
        rgb[edge] = 0.4 * rgb[edge] + 0.6 * OUTLINE
    return rgb.astype(np.uint8)


def digit_rgb(image: torch.Tensor, scale: int = SCALE) -> np.ndarray:
    """A digit in grey: (1, 28, 28) or (28, 28) in [0, 1] -> (28s, 28s, 3) uint8."""
    gray = (image.detach().reshape(28, 28).clamp(0, 1).numpy() * 255).astype(np.uint8)
    return _upscale(np.repeat(gray[..., None], 3, axis=2), scale)


def probability_bars(probs: torch.Tensor, height: int = 150) -> str:
    """Class probabilities as a small HTML bar chart: (10,) -> an `st.html` string.

    Ten plain boxes instead of a Vega chart (`st.bar_chart`): nothing for a browser to
    lay out and paint but the boxes, and no Altair to import before a fresh server's
    first page (benchmarks/README.md). Each bar's exact share is its tooltip, and the
    ones of 5% or more carry it above the bar.
    """
    room = height - 32  # px left for the bars under the labels above and below them
    bars = []
    for digit, p in enumerate(probs.detach().float().tolist()):
        share = f"{p:.1%}"
        label = share if p >= 0.05 else ""
        bars.append(
            f'<div title="{digit}: {share}" style="flex:1;display:flex;flex-direction:column;'
            'justify-content:flex-end;align-items:center;height:100%">'
            f'<span style="font-size:0.75em">{label}</span>'
            f'<div style="width:100%;height:{p * room:.1f}px;background:{BAR}"></div>'
            f"<span>{digit}</span></div>"
        )
    summary = ", ".join(f"{d}: {p:.1%}" for d, p in enumerate(probs.tolist()))
    return (
        f'<div role="img" aria-label="class probabilities, {summary}" style="display:flex;'
        f'gap:4px;height:{height}px;font-size:0.8em">{"".join(bars)}</div>'
    )


def mosaic(
    tiles: torch.Tensor, columns: int, signed: bool = True, scale: int = 2, gap: int = 2
) -> np.ndarray:
    """Many small maps (K, H, W) in one picture, `columns` wide, white gaps between:
    -> RGB uint8. One colour scale for all (diverging if `signed`, else grey from 0), so
    tiles compare with each other, as feature maps of one layer should."""
    tiles = tiles.detach().float()
    k, h, w = tiles.shape
    rows = -(-k // columns)
    peak = float(tiles.abs().max()) or 1.0
    if signed:
        rgb = colormaps[plots.DIVERGING](((tiles / peak + 1) / 2).clamp(0, 1).numpy())[..., :3]
    else:
        rgb = np.repeat((tiles / peak).clamp(0, 1).numpy()[..., None], 3, axis=3)
    sheet = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), dtype=np.float32)
    for i in range(k):
        r, c = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = rgb[i]
    return _upscale((sheet * 255).astype(np.uint8), scale)


def png_bytes(fig: Figure | np.ndarray, dpi: int = 110) -> bytes:
    """A matplotlib figure, or an RGB array from this module, as PNG bytes."""
    buffer = io.BytesIO()
    if isinstance(fig, np.ndarray):
        from PIL import Image

        Image.fromarray(fig).save(buffer, format="png")
    else:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_buttons(
    key: str,
    stem: str,
    figure: Callable[[], bytes | Figure | np.ndarray],
    numbers: Callable[[], object],
) -> None:
    """Two download buttons: the figure as PNG and its numbers as JSON.

    Both are made only when clicked (Streamlit calls the function then), so a page
    that offers them pays nothing per click for it; on_click="ignore": saving does
    not rerun the page.
    """

    def png() -> bytes:
        made = figure()
        return made if isinstance(made, bytes) else png_bytes(made)

    row = st.container(horizontal=True, key=f"{key}_save")
    row.download_button(
        "Figure (PNG)",
        png,
        f"{stem}.png",
        "image/png",
        key=f"{key}_png",
        on_click="ignore",
    )
    row.download_button(
        "Numbers (JSON)",
        lambda: json.dumps(numbers(), indent=1),
        f"{stem}.json",
        "application/json",
        key=f"{key}_json",
        on_click="ignore",
    )


def listed(values: torch.Tensor, digits: int = 5) -> list:
    """A tensor as nested lists of rounded floats, for the JSON downloads."""
    return np.round(values.detach().double().numpy(), digits).tolist()


def plot_randomization(report: dict[str, dict], title: str = "") -> Figure:
    """Model-randomization cascade: a line per method over the layers, top layer first.

    report: `faithfulness.compare_methods(..., randomization=True)[0]`; each method's
    `randomization` maps layer -> mean Spearman correlation of |map| with the trained
    model's map. The dashed line is the sanity threshold: a method whose map stays above
    it once the top layer is re-initialized does not depend on what the model learned.
    """
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.add_subplot()
    layers: list[str] = []
    for name, entry in report.items():
        cascade = entry.get("randomization")
        if not cascade:
            continue
        layers = list(cascade)
        verdict = entry.get("sanity", "")
        ax.plot(
            range(len(cascade)),
            list(cascade.values()),
            marker="o",
            label=f"{name.replace('_', ' ')} ({verdict})",
            linestyle="--" if verdict == "fail" else "-",
        )
    threshold = faithfulness.SANITY_THRESHOLD
    ax.axhline(threshold, color="0.5", linestyle=":", linewidth=1)
    ax.text(0, threshold + 0.02, f"sanity threshold {threshold}", fontsize=8, color="0.4")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("re-initialized down to layer (top first)")
    ax.set_ylabel("rank correlation with the trained map")
    ax.set_ylim(-0.2, 1.05)
    if layers:  # no method could be checked (e.g. a torch.export program): no lines
        ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
