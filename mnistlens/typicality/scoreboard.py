"""The detector scoreboard: which score tells a digit from a non-digit, on which model.

Every detector is fitted and calibrated exactly as the verdict is (`verdict.FIT_IMAGES`
training images to fit, the next `verdict.CALIBRATION_IMAGES` to set the threshold at
the asked flag rate), then scored on MNIST test digits and on each probe set
(`probes.py`). Per detector: the share flagged of each set and the AUROC of each set
against the MNIST test digits (sklearn's `roc_auc_score`; 1 = every probe scores above
every digit). One feature pass per image set reads every layer at once.

A "sum of percentiles" row combines detectors: each score becomes its percentile among
the held-apart digits, and the percentiles are added; it is measured here, and used by
the verdict only if it beats the best single detector (it does not: benchmarks/README.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from mnistlens.data import load_mnist
from mnistlens.device import Device
from mnistlens.graph import analyze
from mnistlens.typicality import detectors
from mnistlens.typicality.detectors import Spec
from mnistlens.typicality.verdict import (
    CALIBRATION_IMAGES,
    DEFAULT_RATE,
    FIT_IMAGES,
    fit_and_calibrate,
)

MNIST_TEST = "MNIST test"


@dataclass
class Row:
    """One detector on one model: flagged share and AUROC (vs MNIST test) per image set."""

    model: str
    detector: str
    flagged: dict[str, float] = field(default_factory=dict)
    auroc: dict[str, float] = field(default_factory=dict)


def candidates(model: nn.Module) -> list[Spec]:
    """The detectors worth comparing on `model`: max softmax and energy; Mahalanobis at
    each hidden layer (and the last conv block); KNN at the default layer, the last hidden
    layer and the pixels; ViM at the last hidden layer when it feeds the final linear
    layer; and the default detector."""
    info = analyze(model)
    layers = list(info.hidden_layers)
    if info.cam_layer is not None and info.cam_layer not in layers:
        layers.append(info.cam_layer)
    specs = [Spec("msp"), Spec("energy")] + [Spec("mahalanobis", layer) for layer in layers]
    knn_layers = [info.cam_layer, layers[-1] if layers else None, detectors.PIXELS]
    specs += [Spec("knn", layer) for layer in dict.fromkeys(knn_layers) if layer is not None]
    head = detectors.head_of(model)
    if info.hidden_layers and head is not None:
        last = info.hidden_layers[-1]
        width = detectors.features(model, torch.zeros(1, 1, 28, 28), [last])[0][last].shape[1]
        if width == head.in_features:
            specs.append(Spec("vim", last))
    default = detectors.default_spec(model)
    return specs if default in specs else [*specs, default]


def _auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    truth = [0] * len(inside) + [1] * len(outside)
    return float(roc_auc_score(truth, torch.cat([inside, outside]).double().numpy()))


def scoreboard(
    model: nn.Module,
    name: str,
    probe_sets: dict[str, torch.Tensor],
    *,
    test_images: torch.Tensor | None = None,
    specs: list[Spec] | None = None,
    rate: float = DEFAULT_RATE,
    data_dir: str | os.PathLike | None = None,
    device: Device = "auto",
) -> list[Row]:
    """One Row per detector (`candidates(model)` by default), plus a sum-of-percentiles
    row over the Mahalanobis detectors when there are two or more.

    probe_sets: {set name: (n, 1, 28, 28)}; test_images: the MNIST test digits to
    compare with (default: all 10,000).
    """
    specs = candidates(model) if specs is None else specs
    layers = sorted({s.layer for s in specs if s.layer is not None})
    train, labels = load_mnist("train", data_dir)
    n = FIT_IMAGES + CALIBRATION_IMAGES  # the verdict's: fitted, then held apart
    train, labels = train[:n], labels[:n]
    if test_images is None:
        test_images = load_mnist("test", data_dir)[0]
    feats, logits = detectors.features(model, train, layers, device=device)
    sets = {MNIST_TEST: test_images, **probe_sets}
    passes = {k: detectors.features(model, v, layers, device=device) for k, v in sets.items()}

    scores: dict[str, dict[str, torch.Tensor]] = {}  # detector -> set (held included) -> (n,)
    for spec in specs:
        state, held = fit_and_calibrate(spec, feats, logits, labels, model)
        scores[spec.name] = {"held": held}
        for set_name, (f, lg) in passes.items():
            scores[spec.name][set_name] = detectors.score(spec, state, f, lg)
    mahalanobis = [s.name for s in specs if s.kind == "mahalanobis"]
    if len(mahalanobis) >= 2:
        scores[f"percentile sum of mahalanobis@{len(mahalanobis)} layers"] = _percentile_sum(
            [scores[n] for n in mahalanobis]
        )
    return [_row(name, detector, by_set, rate) for detector, by_set in scores.items()]


def _percentile_sum(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each detector's scores as percentiles among its held-apart digits, summed."""
    out: dict[str, torch.Tensor] = {}
    for set_name in parts[0]:
        total = 0
        for part in parts:
            reference = part["held"].sort().values
            total = total + torch.searchsorted(reference, part[set_name]).float() / len(reference)
        out[set_name] = total
    return out


def _row(model_name: str, detector: str, by_set: dict[str, torch.Tensor], rate: float) -> Row:
    held = by_set["held"].double()
    threshold = torch.quantile(held, 1.0 - rate, interpolation="higher")
    row = Row(model_name, detector)
    for set_name, values in by_set.items():
        if set_name == "held":
            continue
        row.flagged[set_name] = float((values.double() > threshold).float().mean())
        if set_name != MNIST_TEST:
            row.auroc[set_name] = _auroc(by_set[MNIST_TEST], values)
    return row


def markdown(rows: list[Row], auroc_set: str = "letters") -> str:
    """The scoreboard as a markdown table: flagged % per set, and one AUROC column."""
    sets = list(rows[0].flagged)
    head = ["model", "detector", *[f"{s} flagged" for s in sets], f"AUROC {auroc_set}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.model, row.detector, *[f"{row.flagged[s]:.1%}" for s in sets]]
        cells.append(f"{row.auroc.get(auroc_set, float('nan')):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
