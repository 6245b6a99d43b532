"""Explanations as users ask for them: one digit, one digit versus another, one class.

- `explain`: several attribution methods for a batch, with predictions, in one object.
- `contrast_maps`: what makes this image a 3 rather than an 8 (attribution of
  logit 3 - logit 8).
- `class_mean_maps`: the mean map over the correctly classified test images of each
  digit, a per-digit summary of what the model looks at.

Each takes `device=` ("auto", the default: CUDA when available, else the CPU; "cpu";
"cuda[:N]"; see `mnistlens.device`) and returns everything on the CPU; your model
itself never moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from mnistlens import attribution as A
from mnistlens.device import Device, model_on, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.faithfulness import Scores, random_reference, score_maps
from mnistlens.metrics import predict_logits


@dataclass
class Explanation:
    """Everything `explain` computed for N images.

    images (N, 1, 28, 28); target, predictions (N,) int64; probabilities (N, C);
    maps: method -> (N, 1, 28, 28); deltas: method -> (N,) completeness error of
    integrated gradients (sum of map - (f(x) - f(baseline))), where it applies;
    layers: method -> the layer a layer method (Grad-CAM) used; scores: method ->
    per-image faithfulness (`faithfulness.Scores`), with measure=True.
    """

    images: torch.Tensor
    target: torch.Tensor
    predictions: torch.Tensor
    probabilities: torch.Tensor
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)
    scores: dict[str, Scores] = field(default_factory=dict)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str] | tuple[str, ...] = ("saliency", "integrated_gradients", "grad_cam"),
    target: A.Target = None,
    measure: bool = False,
    *,
    reference: dict[str, torch.Tensor] | None = None,
    device: Device = "auto",
    **options: dict,
) -> Explanation:
    """Run several attribution methods on the same images.

    Args:
        methods: names or aliases (see `attribution.list_methods()`); a method that
            cannot explain this model (Grad-CAM without a conv layer) raises
            MnistlensError saying why (`attribution.applicable_methods` lists those that can).
        target: None (each image's predicted class), an int, or (N,) classes.
        measure: also score every map (deletion/insertion against a random ranking,
            completeness where claimed): `result.scores[method]`.
        reference: with measure, `faithfulness.random_reference(model, images, target)`
            if already computed for these images and targets (e.g. when methods are
            explained one call at a time, as the explorer does); else computed here.
        device: where the model runs, "auto" (CUDA if available, else the CPU), "cpu"
            or "cuda[:N]"; every tensor of the result is on the CPU.
        options: per-method options keyed by method name, e.g.
            `integrated_gradients={"n_steps": 32, "baseline": "blur"}`.

    Example:
        >>> result = explain(model, images[:4], ["saliency", "ig"], ig={"n_steps": 32})
        >>> result.maps["integrated_gradients"].shape
        torch.Size([4, 1, 28, 28])
    """
    images = A.check_images(images)
    canonical = [A.resolve_method(m) for m in methods]
    unknown = set(options) - set(canonical) - {m for m in methods}
    if unknown:
        raise MnistlensError(f"options given for methods not requested: {sorted(unknown)}")
    for name in canonical:
        if (reason := A.why_not(name, model)) is not None:
            raise MnistlensError(reason)
    device = resolve_device(device)
    # One copy on the device for the forward passes; each method is handed the model as
    # given (its layers are analyzed there) and places its own copy.
    placed = model_on(model, device)
    images = images.cpu()
    probabilities = predict_logits(placed, images, device=device).softmax(dim=1)  # (N, C)
    target = A.resolve_target(placed, images, target, device=device)
    result = Explanation(images, target, probabilities.argmax(dim=1), probabilities)
    # The random ranking every map is scored against is the same for all methods.
    if measure and reference is None:
        reference = random_reference(placed, images, target, device=device)
    for name, alias in zip(canonical, methods, strict=True):
        opts = dict(options.get(name, options.get(alias, {})))
        if name == "integrated_gradients":  # its delta comes free with the maps
            maps, delta = A.integrated_gradients(
                model, images, target, return_delta=True, device=device, **opts
            )
            result.deltas[name] = delta
        else:
            maps = A.attribute(name, model, images, target, device=device, **opts)
        if A.get_spec(name).needs_conv:
            layer = opts.get("layer") or A.default_cam_layer(model)
            result.layers[name] = layer if isinstance(layer, str) else type(layer).__name__
        result.maps[name] = maps
        if measure:
            result.scores[name] = score_maps(
                placed, images, maps, target, name, reference=reference, device=device, **opts
            )
    return result


class LogitDifference(nn.Module):
    """Wraps a classifier to output score[a] - score[b]: (N, ...) -> (N, 1)."""

    def __init__(self, model: nn.Module, a: int, b: int) -> None:
        super().__init__()
        self.model, self.a, self.b = model, a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.model(x)
        return (scores[:, self.a] - scores[:, self.b]).unsqueeze(1)  # (N, 1)


def contrast_maps(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    other: int,
    method: str = "integrated_gradients",
    *,
    device: Device = "auto",
    **options,
) -> torch.Tensor:
    """Why `target` rather than `other`: attribution of logit[target] - logit[other].

    Positive pixels push towards `target`, negative ones towards `other`. For
    methods linear in the output (input x gradient, integrated gradients, DeepLIFT,
    occlusion) this equals map(target) - map(other), in one pass instead of two; for
    |saliency| and Grad-CAM (which take an absolute value or a ReLU) it is the map of
    the difference, not the difference of the maps. (N, 1, 28, 28) -> (N, 1, 28, 28),
    computed on `device` (see the module doc), on the CPU.
    """
    name = A.resolve_method(method)
    if isinstance(options.get("layer"), str):
        # Layer names refer to the user's model, not to the wrapper around it.
        options["layer"] = model.get_submodule(options["layer"])
    wrapped = LogitDifference(model, target, other)
    return A.attribute(name, wrapped, images, 0, device=device, **options)


def class_mean_maps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str = "integrated_gradients",
    batch_size: int = 500,
    progress: bool = False,
    *,
    device: Device = "auto",
    **options,
) -> torch.Tensor:
    """Per digit, the mean map over its correctly classified images: -> (10, 28, 28).

    Each image is explained for its own (true = predicted) class, on `device` (see the
    module doc). A digit with no correctly classified image gets a map of NaNs.
    """
    images = A.check_images(images).cpu()
    labels = labels.cpu()
    device = resolve_device(device)
    correct = predict_logits(model, images, device=device).argmax(dim=1) == labels
    images, labels = images[correct], labels[correct]
    name = A.resolve_method(method)
    sums = torch.zeros(10, 28, 28)
    for start in tqdm(
        range(0, len(images), batch_size),
        desc=f"class maps ({name})",
        disable=not progress,
        unit="batch",
    ):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        maps = A.attribute(name, model, x, y, device=device, **options)[:, 0]  # (n, 28, 28)
        sums.index_add_(0, y, maps)
    counts = torch.bincount(labels, minlength=10).float()
    return sums / counts[:, None, None]  # NaN where a digit has no correct image


def map_note(result: Explanation, name: str, i: int = 0) -> str:
    """The lines printed under a map (in the CLI's figure and the app): its deletion area
    against a random ranking, its completeness error where the method claims
    completeness, and the layer of a layer method. Needs `explain(..., measure=True)`."""
    lines = []
    if name in result.scores:
        numbers = result.scores[name].image(i)
        lines.append(
            f"deletion {numbers['deletion_auc']:.2f} (random {numbers['random_deletion_auc']:.2f})"
        )
        if "completeness_error" in numbers:
            lines.append(f"completeness error {numbers['completeness_error']:.1%}")
    if name in result.layers:
        lines.append(f"layer {result.layers[name]}")
    return "\n".join(lines)
