"""The whole stress test, as `mnistlens stress` runs it: one call from a notebook.

    >>> from mnistlens import comparison, perturb
    >>> models = comparison.load_models(["mlp.pt", "cnn.pt"])
    >>> found = perturb.run(models, out="stress/")
    >>> found["pairs"][0]["transform"], found["plots"]["curves"]

`run` measures every model on the test images under every transform (`stress.py`),
summarizes the pairs (how the gap between two models moves with each change), and
with `out` writes the table as JSON and the figures as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.models import is_convolutional, modules_of
from mnistlens.perturb.registry import resolve_transforms, with_severities
from mnistlens.perturb.stress import StressResult, evaluate

EXAMPLE_DIGITS = 3  # digits per cell of the examples figure

FIGURES = {
    "curves": "stress_curves.png",
    "corruptions": "stress_corruptions.png",
    "examples": "stress_examples.png",
}


def default_pairs(models: dict, clean: dict[str, float]) -> list[tuple[str, str]]:
    """The pairs whose gaps a stress test reports when none are named: each model with
    the next (the series runs from simple to elaborate), and the most accurate model
    without convolutions against the most accurate one with them (the pair the
    comparison explains)."""
    names = list(models)
    pairs = list(zip(names, names[1:], strict=False))
    modules = modules_of(models)
    dense = [n for n in names if not is_convolutional(modules[n])]
    convs = [n for n in names if is_convolutional(modules[n])]
    if dense and convs:
        best = (max(dense, key=clean.get), max(convs, key=clean.get))
        if best not in pairs:
            pairs.append(best)
    return pairs


def check_pairs(pairs: Sequence[Sequence[str]], models: dict) -> list[tuple[str, str]]:
    """Each pair as (A, B) of two different models among `models`."""
    checked = []
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(models):
            raise MnistlensError(
                f"a pair is two different tested models as A,B, got {','.join(pair)!r}; "
                f"tested: {', '.join(models)}"
            )
        checked.append((pair[0], pair[1]))
    return checked


def write_figures(result: StressResult, images, folder: str | os.PathLike, seed: int = 0) -> dict:
    """The curves (if any sweep ran), the corruption heatmap (if any corruption ran) and
    the examples into `folder`; -> name -> path."""
    from mnistlens.perturb import figures
    from mnistlens.plots import save_figure

    table = result.to_json()
    drawn = {}
    if result.names("sweep"):
        drawn["curves"] = figures.plot_severity_curves(table)
    if result.names("corruption"):
        drawn["corruptions"] = figures.plot_corruption_heatmap(table)
    examples = images[:EXAMPLE_DIGITS]
    drawn["examples"] = figures.plot_examples(examples, list(result.transforms.values()), seed)
    return {
        name: str(save_figure(fig, Path(folder) / FIGURES[name])) for name, fig in drawn.items()
    }


def run(
    models: dict,
    transforms: Sequence[str] | None = None,
    *,
    severities: dict[str, Sequence[float]] | None = None,
    pairs: Sequence[Sequence[str]] | None = None,
    out: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    causes: bool = True,
    data_dir=None,
    device: Device = "auto",
    progress: bool = True,
) -> dict:
    """Stress-test `models` (name -> model or (model, metadata)) on MNIST's test set.

    Args:
        transforms: names or groups (`registry.resolve_transforms`); default all.
        severities: transform -> severities to sweep instead of its own (a transform
            named here and not in `transforms` is added).
        pairs: (A, B) pairs to summarize, A expected to be worse; default
            `default_pairs`.
        out: write stress.json and the figures (PNG) into this folder.
        limit: only the first `limit` test images (quick looks; the default is all).
        seed: draws the transforms' random parts; recorded.
        causes: for each pair, which factor of the digit explains the gap
            (`causes.count_causes`, in each pair's "causes"); with `out`, a figure of
            the first named pair's (else the last default pair's) fixed images.

    -> `StressResult.to_json(pairs)`, plus "plots" (name -> path) with `out`.
    """
    import json

    from mnistlens.data import load_mnist
    from mnistlens.io import atomic_write
    from mnistlens.perturb.causes import count_causes, normalized_correct
    from mnistlens.perturb.figures import plot_gap_causes
    from mnistlens.plots import save_figure

    if out and Path(out).exists() and not Path(out).is_dir():
        raise MnistlensError(f"{out} is a file, not a folder; choose another place")
    if limit is not None and limit < 1:
        raise MnistlensError(f"limit takes a number of images from 1, got {limit}")
    chosen = {t.name: t for t in resolve_transforms(transforms)}
    for name, values in (severities or {}).items():
        chosen[name] = with_severities(resolve_transforms([name])[0], values)
    asked = check_pairs(pairs, models) if pairs else None  # before the minutes of testing
    images, labels = load_mnist("test", data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    result = evaluate(
        models, list(chosen.values()), images, labels, seed=seed, device=device, progress=progress
    )
    found = result.to_json(asked or default_pairs(models, result.clean))
    if causes and found["pairs"]:
        correct = normalized_correct(models, images, labels, device=device)
        for pair in found["pairs"]:
            pair["causes"] = count_causes(correct, pair["a"], pair["b"])
    if out:
        found["plots"] = write_figures(result, images, out, seed)
        if causes and found["pairs"]:
            # the pair the caller named first, else the one the comparison explains
            pair = found["pairs"][0 if asked else -1]["causes"]
            fig = plot_gap_causes(images, pair, labels)
            name = f"causes_{pair['a']}_{pair['b']}.png"
            found["plots"]["causes"] = str(save_figure(fig, Path(out) / name))
        path = atomic_write(
            Path(out) / "stress.json", lambda f: f.write(json.dumps(found).encode())
        )
        found["table"] = str(path)
    return found
