"""`concepts.run`: what `mnistlens concepts` and the explorer's Concepts page do.

Which layers (`default_layers`), which concept and random sets, which class images:
chosen here once, so the command line, the app and a notebook get the same numbers.

    >>> result, examples = run(model, ["closed_loop", "vertical_stroke"], runs=10)
    >>> result.significant_classes("closed_loop", "relu3")  # the shipped CNN
    [6, 8, 9]
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mnistlens.concepts.sets import (
    check_concept,
    concept_set,
    folder_set,
    list_concepts,
    random_set,
)
from mnistlens.concepts.tcav import TCAVResult, tcav
from mnistlens.data import check_images
from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.models import get_layer

SET_SIZE = 100  # images per concept and random set (the paper uses 50 to 500)
PER_CLASS = 100  # test images per class whose directional derivatives are counted
RUNS = 10  # random runs (how many are enough: tensorflow/tcav#38; benchmarks/README.md)


def default_layers(model: nn.Module) -> list[str]:
    """Two layers to read concepts at: the last conv block's output (Grad-CAM's layer)
    and the last hidden layer; for a model without convolutions, its last two hidden
    layers. A model without hidden layers (a linear one) has no concept space: refused."""
    info = analyze(model)
    hidden = info.hidden_layers
    if not hidden:
        raise MnistlensError(
            "this model has no hidden layer (a linear model?); TCAV reads concepts in a "
            "hidden layer's activations: use an MLP or CNN"
        )
    chosen = [info.cam_layer] if info.cam_layer else hidden[-2:-1]
    chosen.append(hidden[-1])
    return list(dict.fromkeys(name for name in chosen if name))


def check_layers(model: nn.Module, layers: list[str] | None) -> list[str]:
    """The given layer names, checked (unknown ones list the model's layers), else the
    defaults."""
    if not layers:
        return default_layers(model)
    for name in layers:
        get_layer(model, name)
    return list(dict.fromkeys(layers))


def class_sample(
    per_class: int = PER_CLASS, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` test images of each digit, seeded: -> (10 * per_class, 1, 28, 28), labels."""
    from mnistlens.data import load_mnist

    images, labels = load_mnist("test", data_dir)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picked = torch.cat([order[labels[order] == k][:per_class] for k in range(10)])
    return images[picked], labels[picked]


def concept_sets(
    names: list[str] | None = None,
    folders: list[str | os.PathLike] | None = None,
    n: int = SET_SIZE,
    seed: int = 0,
    yours: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Built-in concepts by name (default: all of them unless folders or sets of your
    own are given), your own from folders of pictures (named after the folder) and your
    own sets as given (name -> (N, 1, 28, 28), e.g. `sets.picture_set`):
    -> name -> (n, 1, 28, 28)."""
    folders, yours = list(folders or []), dict(yours or {})
    names = list(names) if names else ([] if folders or yours else list_concepts())
    sets = {name: concept_set(check_concept(name), n, seed) for name in names}
    from_folders = [(Path(f).expanduser().resolve().name or "mine", f) for f in folders]
    for name, images in [*from_folders, *yours.items()]:
        if name in sets:
            raise MnistlensError(f"your concept {name!r} has the name of another concept")
        sets[name] = check_images(images) if torch.is_tensor(images) else folder_set(images)
    if not sets:
        raise MnistlensError("no concept given; name built-in ones or give a folder")
    return sets


def run(
    model: nn.Module,
    concepts: list[str] | None = None,
    folders: list[str | os.PathLike] | None = None,
    layers: list[str] | None = None,
    yours: dict[str, torch.Tensor] | None = None,
    runs: int | None = None,
    fast: bool = False,
    random: str = "strokes",
    set_size: int | None = None,
    per_class: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    progress: bool = False,
    *,
    device: Device = "auto",
) -> tuple[TCAVResult, dict[str, torch.Tensor]]:
    """TCAV of built-in and folder concepts on `model`, against `runs` + 1 random sets.

    yours: your own concept sets, name -> (N, 1, 28, 28); fast: mean-difference CAVs
    instead of a linear SVM's; random: "strokes" or "digits" (`sets.random_set`);
    runs, set_size, per_class: None for the module's RUNS, SET_SIZE, PER_CLASS (read
    at each call: the explorer's pages and its warm-up pass none).
    -> (result, concept name -> its images).
    """
    runs = RUNS if runs is None else runs
    set_size = SET_SIZE if set_size is None else set_size
    per_class = PER_CLASS if per_class is None else per_class
    if runs < 2:
        raise MnistlensError(f"runs={runs}: TCAV needs at least 2 random runs (10 advised)")
    chosen = check_layers(model, layers)
    sets = concept_sets(concepts, folders, set_size, seed, yours)
    randoms = [random_set(set_size, seed + 1 + r, random) for r in range(runs + 1)]
    images, labels = class_sample(per_class, seed, data_dir)
    result = tcav(
        model,
        sets,
        randoms,
        images,
        labels,
        chosen,
        method="mean" if fast else "svm",
        alpha=alpha,
        seed=seed,
        progress=progress,
        device=device,
    )
    result.settings.update({"random": random, "set_size": set_size, "per_class": per_class})
    return result, sets
