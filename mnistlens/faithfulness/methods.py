"""Every measure for several methods on the same images: what `mnistlens measure`,
the Trust page and the series report show.

`device=` ("auto": CUDA if available, else the CPU; "cpu"; "cuda[:N]") says where the
model runs: forward passes on one copy there, and each attribution method is handed
the model as given (it places its own copy: `mnistlens.device`). Results are on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlens import attribution as A
from mnistlens.device import Device, model_on, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.faithfulness.captum_metrics import infidelity, sensitivity_max
from mnistlens.faithfulness.curves import MODES, Scores, random_maps, random_reference, score_maps
from mnistlens.faithfulness.sanity import SANITY_RULE, randomization_check, sanity_verdict
from mnistlens.metrics import predict_logits


def score_methods(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str],
    target: torch.Tensor | None = None,
    reference: dict[str, torch.Tensor] | None = None,
    *,
    device: Device = "auto",
    **shared_options,
) -> dict[str, tuple[torch.Tensor, Scores]]:
    """Maps and per-image Scores (curves kept) for several methods on the same images.

    shared_options (baseline=, n_steps=, tol=, data_dir=) go to the methods that
    take them (`attribution.method_options`); reference: `random_reference(...,
    keep_curves=True)` of these images if already computed; device: where the model
    runs (see the module doc). -> {method: (maps, scores)}, on the CPU.
    """
    images = A.check_images(images)
    device = resolve_device(device)
    placed = model_on(model, device)  # for the forward passes; methods place their own
    if target is None:
        target = predict_logits(placed, images, device=device).argmax(dim=1)
    if reference is None:  # computed once for all the methods
        reference = random_reference(placed, images, target, keep_curves=True, device=device)
    result = {}
    for name in [A.resolve_method(m) for m in methods]:
        options = A.method_options(name, **shared_options)
        maps = A.attribute(name, model, images, target, device=device, **options)
        scores = score_maps(
            placed,
            images,
            maps,
            target,
            name,
            keep_curves=True,
            reference=reference,
            device=device,
            **options,
        )
        result[name] = (maps, scores)
    return result


def compare_methods(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str],
    randomization: bool = False,
    randomization_images: int = 20,
    captum_metrics: bool = False,
    reference: dict[str, torch.Tensor] | None = None,
    *,
    device: Device = "auto",
) -> tuple[dict[str, dict], dict[str, dict[str, torch.Tensor]]]:
    """Every measure for several methods on the same images, explaining the prediction.

    Returns (report, curves): report[method] is `Scores.summary()` (mean areas,
    `completeness_error_median` where it applies) and, with randomization=True,
    `randomization` (see `randomization_check`, on the first images only: it re-runs
    the method once per layer) with its `sanity` verdict ("pass"/"fail", by
    `SANITY_RULE`); with captum_metrics=True, the mean `infidelity` and
    `sensitivity_max` on the same first images. curves[method][mode] is (N, S + 1). A
    "random" ranking comes first as the reference.

    reference: `random_reference(model, images, predicted, keep_curves=True)` if
    already computed, e.g. when methods are measured one call at a time (the explorer
    adds them as a user picks them); else computed here.
    device: where the model runs (see the module doc); everything returned is on the CPU.
    """
    images = A.check_images(images)
    device = resolve_device(device)
    placed = model_on(model, device)  # for the forward passes; methods place their own
    target = predict_logits(placed, images, device=device).argmax(dim=1)
    # The random ranking is the same for every method (seeded per image): scored once.
    if reference is None:
        reference = random_reference(placed, images, target, keep_curves=True, device=device)
    elif "random_deletion_curve" not in reference:
        raise MnistlensError("compare_methods needs a reference computed with keep_curves=True")
    scored = score_methods(model, images, methods, target, reference=reference, device=device)
    curves = {"random": {mode: reference[f"random_{mode}_curve"] for mode in MODES}}
    report: dict[str, dict] = {
        "random": {f"{mode}_auc": float(reference[f"random_{mode}_auc"].mean()) for mode in MODES}
    }
    for name, (maps, scores) in scored.items():
        curves[name] = {mode: scores.curves[mode] for mode in MODES}
        report[name] = scores.summary()
        if randomization:
            k = randomization_images
            # The caller's model: the check re-initializes a copy of it on the CPU, so the
            # random weights are the same on every device.
            cascade = randomization_check(model, images[:k], name, target[:k], device=device)
            report[name]["randomization"] = cascade
            report[name]["sanity"] = sanity_verdict(cascade)
            report[name]["sanity_rule"] = SANITY_RULE
        if captum_metrics:
            k = randomization_images
            if "infidelity" not in report["random"]:
                rankings = random_maps(images[:k])
                report["random"]["infidelity"] = float(
                    infidelity(placed, images[:k], rankings, target[:k], device=device).mean()
                )
            x, t = images[:k], target[:k]
            report[name]["infidelity"] = float(
                infidelity(placed, x, maps[:k], t, device=device).mean()
            )
            report[name]["sensitivity_max"] = float(
                sensitivity_max(model, x, name, t, device=device).mean()
            )
    return report, curves
