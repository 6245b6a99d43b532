"""A user's own model, made to follow the library's conventions.

mnistlens feeds every model pixels in [0, 1], shaped (N, 1, 28, 28), and attributes
logits. Models people train themselves differ: PyTorch's examples/mnist standardizes its
input with MNIST's mean and std and ends in `F.log_softmax`; others take [0, 255] pixels
or flat (N, 784) vectors, or end in a softmax. `load` reads any supported file
(`formats.load_any`) and then:

1. removes a final softmax / log-softmax (torch.fx, `graph.strip_output_softmax`), so
   methods attribute logits and DeepLIFT's summation rule can hold;
2. rewrites functional ReLUs into modules (`graph.with_relu_modules`), so DeepLIFT and
   guided backprop do what their names say;
3. chooses the input convention: `input="auto"` tries each on the first test images and
   keeps the one with clearly the lowest loss, or asks the user to choose.

    >>> model, meta = load("net.pt", model_code="net.py:Net")
    >>> meta["input"], meta["input_accuracies"], meta["outputs"], meta["output_removed"]
    ('mnist-normalized', {'unit': 0.62, 'mnist-normalized': 0.98, '0-255': 0.11}, ...)
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mnistlens.errors import MnistlensError
from mnistlens.graph import strip_output_softmax, trace, with_relu_modules
from mnistlens.loading.adapter import InputAdapter
from mnistlens.metrics import predict_logits

# name -> (multiply the [0, 1] pixels by, then standardize with MNIST's mean and std?)
CONVENTIONS: dict[str, tuple[float, bool]] = {
    "unit": (1.0, False),  # pixels in [0, 1], mnistlens' own convention
    "mnist-normalized": (1.0, True),  # (x - 0.1307) / 0.3081, as PyTorch's examples/mnist
    "0-255": (255.0, False),  # raw bytes as floats
}
AUTO_SAMPLE = 1000  # test images tried per convention
RATIO = 0.8  # the chosen convention's loss must be below RATIO x the runner-up's


def unwrap(model: nn.Module) -> tuple[nn.Module, tuple, bool]:
    """The user's own network, the per-image input shape it takes, and per_image."""
    if isinstance(model, InputAdapter):
        return model.net, model.shape, model.per_image
    return model, (1, 28, 28), False


def to_logits_and_relu_modules(net: nn.Module, meta: dict) -> tuple[nn.Module, dict]:
    """Strip a final softmax and rewrite functional ReLUs, where torch.fx can."""
    notes = []
    stripped, kind = strip_output_softmax(net)
    measured = meta.get("outputs", "logits")
    meta["output_removed"] = kind in ("softmax", "log_softmax")
    if meta["output_removed"]:
        meta["outputs"] = "log_probabilities" if kind == "log_softmax" else "probabilities"
    elif measured != "logits":
        notes.append(
            f"the model returns {measured.replace('_', '-')} and its last step could not be "
            "removed: maps explain those, not logits, and completeness is not expected to hold"
        )
    net = stripped
    meta["relu_modules"] = False
    if trace(net) is None:
        notes.append(
            "torch.fx cannot trace the model: functional ReLUs (if any) stay functional, so "
            "DeepLIFT and guided backprop are refused"
        )
    else:
        rewritten = with_relu_modules(net)
        meta["relu_modules"] = rewritten is not net
        net = rewritten
    meta["notes"] = notes
    return net.eval(), meta


@torch.no_grad()
def choose_convention(
    net: nn.Module,
    shape: tuple = (1, 28, 28),
    per_image: bool = False,
    data_dir: str | os.PathLike | None = None,
    sample: int = AUTO_SAMPLE,
) -> tuple[str, str, dict[str, float]]:
    """Try each input convention on the first `sample` test images.

    Accuracy alone cannot tell: a ReLU network is nearly invariant to scaling its input,
    so a model trained on [0, 1] pixels may also classify 0-255 or standardized pixels
    well (seen: 87%, 86%, 81%). Its loss is not: fed the wrong scale, it becomes over-
    or under-confident. So the convention with the lowest mean cross-entropy wins, if it
    is clearly lowest (below RATIO times the runner-up's) and its accuracy is at least
    50%; otherwise the user is asked to choose.

    -> (name, reason, {name: accuracy}).
    """
    from mnistlens.data import load_mnist

    images, labels = load_mnist("test", data_dir)
    images, labels = images[:sample], labels[:sample]
    accuracies, losses = {}, {}
    for name, (scale, normalize) in CONVENTIONS.items():
        wrapped = InputAdapter(net, shape, normalize, per_image, scale).eval()
        logits = predict_logits(wrapped, images).double()
        accuracies[name] = round(float((logits.argmax(dim=1) == labels).double().mean()), 4)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        losses[name] = float(loss) if torch.isfinite(loss) else float("inf")
    ranked = sorted(losses, key=losses.get)
    best, runner_up = ranked[0], ranked[1]
    listed = ", ".join(f"{k} {accuracies[k]:.1%} (loss {losses[k]:.2f})" for k in CONVENTIONS)
    if accuracies[best] < 0.5:
        raise MnistlensError(
            f"no input convention gives the model 50% accuracy on {sample} test images "
            f"({listed}): is it an MNIST classifier taking 28x28 digits?"
        )
    if not losses[best] < RATIO * losses[runner_up]:
        raise MnistlensError(
            f"cannot tell the model's input convention ({listed} on {sample} test images); "
            f"choose one with --input {'|'.join(CONVENTIONS)}"
        )
    reason = (
        f"lowest loss on {sample} test images: {losses[best]:.2f} against "
        f"{losses[runner_up]:.2f} for {runner_up}; accuracy {accuracies[best]:.1%}"
    )
    return best, reason, accuracies


def _batch(meta: dict) -> str:
    """How the model takes a batch: a torch.export program may be fixed at one image."""
    if meta.get("format") != "torch-export" or meta.get("dynamic_batch"):
        return "any"
    if meta.get("per_image"):
        return "exported for 1 image, run image by image (its graph names the batch size)"
    return "exported for 1 image, runs whole batches (checked against image by image)"


def describe(model: nn.Module, meta: dict, data_dir: str | os.PathLike | None = None) -> dict:
    """What mnistlens sees in a loaded model, JSON-ready (what `mnistlens inspect` prints):
    format, input convention and why, output kind and what was done to it, layers in
    execution order with their output shapes, parameters, test accuracy on all 10,000
    test images, the methods that apply and why the others do not."""
    from mnistlens import attribution
    from mnistlens.data import load_mnist
    from mnistlens.graph import analyze
    from mnistlens.metrics import evaluate

    info = analyze(model)
    images, labels = load_mnist("test", data_dir)
    report = evaluate(model, images, labels)
    reasons = {name: attribution.why_not(name, model) for name in attribution.list_methods()}
    skipped = {name: why for name, why in reasons.items() if why is not None}
    return {
        "path": meta.get("path"),
        "format": meta.get("format", "module"),
        "input": meta.get("input", "unit"),
        "input_reason": meta.get("input_reason", ""),
        "input_accuracies": meta.get("input_accuracies"),
        "input_shape": meta.get("input_shape", [1, 28, 28]),
        "outputs": meta.get("outputs", "logits"),
        "output_removed": meta.get("output_removed", False),
        "relu_modules": meta.get("relu_modules", False),
        "notes": meta.get("notes", []),
        "batch": _batch(meta),
        "traced": info.traced,
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "functional": layer.functional,
                "shape": list(layer.shape) if layer.shape is not None else None,
            }
            for layer in info.layers
        ],
        "hidden_layers": info.hidden_layers,
        "cam_layer": info.cam_layer,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_accuracy": report["accuracy"],
        "methods": [m for m in attribution.list_methods() if m not in skipped],
        "methods_skipped": skipped,
    }
