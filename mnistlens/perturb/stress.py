"""Stress tests: change every test digit the same way, and watch which model holds.

`evaluate` measures each model's accuracy on the test images after each transform at
each of its severities (`registry.py`). Each changed set is computed once and given to
every model in turn, so thirteen models cost one set of transforms, not thirteen.

    >>> from mnistlens.perturb import stress
    >>> result = stress.evaluate({"mlp": mlp, "cnn": cnn}, transforms=["translate"])
    >>> result.accuracy["cnn"]["translate"]          # one per severity: 0, 1, 2, 3, 4 px
    [0.9957, 0.9953, 0.9938, 0.9871, 0.9419]
    >>> result.widest("mlp", "cnn")                   # where the CNN's lead grows most
    {'transform': 'translate', 'severity': 4, 'gap': 0.43, 'clean_gap': 0.004, ...}

A gap is B's accuracy minus A's, in the pair's order (A the one expected to be worse).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from mnistlens.device import Device, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.models import evaluating, for_inference, modules_of
from mnistlens.perturb.registry import Transform, resolve_transforms


@dataclass
class StressResult:
    """Accuracy per model x transform x severity, on the same images.

    accuracy[model][transform] lists one accuracy per severity, in the order of
    transforms[transform].severities (the identity severity is the clean accuracy).
    `correct` holds the bools behind them: correct[model][transform] is (S, N) and
    correct[model]["clean"] (N,); they are not in the JSON, but the app and the pair
    analysis read which images flipped.
    """

    models: list[str]
    transforms: dict[str, Transform]
    clean: dict[str, float]  # model -> accuracy on the unchanged images
    accuracy: dict[str, dict[str, list[float]]]
    n_images: int
    seed: int
    correct: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def names(self, kind: str | None = None) -> list[str]:
        """The transforms run, in order; `kind` ("sweep", "corruption") keeps one kind."""
        return [n for n, t in self.transforms.items() if kind is None or t.kind == kind]

    def mean_corruption_accuracy(self) -> dict[str, float | None]:
        """model -> mean accuracy over the corruptions at their hardest severity (MNIST-C's
        own setting); None when no corruption was run."""
        names = self.names("corruption")
        if not names:
            return dict.fromkeys(self.models)
        hardest = {
            n: self.transforms[n].severities.index(self.transforms[n].hardest) for n in names
        }
        return {
            m: sum(self.accuracy[m][n][hardest[n]] for n in names) / len(names) for m in self.models
        }

    def gaps(self, a: str, b: str) -> dict[str, list[float]]:
        """transform -> B's accuracy minus A's, per severity."""
        for name in (a, b):
            if name not in self.models:
                raise MnistlensError(
                    f"{name!r} was not stress-tested; tested: {', '.join(self.models)}"
                )
        return {
            t: [yb - ya for ya, yb in zip(self.accuracy[a][t], self.accuracy[b][t], strict=True)]
            for t in self.transforms
        }

    def widest(self, a: str, b: str, sign: int = 1) -> dict:
        """Where B's lead over A grows most beyond the clean gap (sign -1: where it
        shrinks most, or turns into A's lead): {"transform", "severity", "gap",
        "clean_gap", "widening"} (transform and severity None if no change moves it
        that way)."""
        clean_gap = self.clean[b] - self.clean[a]
        best = {"transform": None, "severity": None, "gap": clean_gap, "widening": 0.0}
        for t, gaps in self.gaps(a, b).items():
            for severity, gap in zip(self.transforms[t].severities, gaps, strict=True):
                if sign * (gap - clean_gap) > sign * best["widening"]:
                    best = {"transform": t, "severity": severity, "gap": gap}
                    best["widening"] = gap - clean_gap
        return {**best, "clean_gap": clean_gap}

    def pair(self, a: str, b: str) -> dict:
        """The JSON-ready summary of one pair: the gaps, where they widen most, and
        where they shrink most ("narrowest", as `widest(a, b, -1)`)."""
        narrowest = self.widest(a, b, sign=-1)
        return {
            "a": a,
            "b": b,
            **self.widest(a, b),
            "narrowest": {k: narrowest[k] for k in ("transform", "severity", "gap", "widening")},
            "gaps": self.gaps(a, b),
        }

    def to_json(self, pairs: Sequence[tuple[str, str]] = ()) -> dict:
        """Everything measured, JSON-ready, with the gaps of `pairs`."""
        mca = self.mean_corruption_accuracy()
        return {
            "n_images": self.n_images,
            "seed": self.seed,
            "models": [
                {"name": m, "clean": self.clean[m], "mean_corruption_accuracy": mca[m]}
                for m in self.models
            ],
            "transforms": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "unit": t.unit,
                    "severities": list(t.severities),
                    "identity": t.identity,
                    "hardest": t.hardest,
                    "what": t.what,
                }
                for t in self.transforms.values()
            ],
            "accuracy": self.accuracy,
            "pairs": [self.pair(a, b) for a, b in pairs],
        }


def _predictions(prepared: dict, images: torch.Tensor, device: torch.device) -> dict:
    """name -> (N,) predicted class of each prepared (module, rows) on the images."""
    found = {}
    with torch.no_grad():
        for name, (module, rows) in prepared.items():
            with evaluating(module):
                chunks = [
                    module(images[i : i + rows].to(device)).argmax(dim=1).cpu()
                    for i in range(0, len(images), rows)
                ]
            found[name] = torch.cat(chunks)
    return found


def evaluate(
    models: dict,
    transforms: Sequence[str | Transform] | None = None,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    seed: int = 0,
    device: Device = "auto",
    data_dir=None,
    progress: bool = True,
) -> StressResult:
    """Accuracy of every model on the images after every transform at every severity.

    Args:
        models: name -> model, or name -> (model, metadata) as `mnistlens.load` returns.
        transforms: names, groups ("sweeps", "corruptions", "all") or `Transform`s;
            default all.
        images, labels: (N, 1, 28, 28) in [0, 1] and (N,); default the 10,000 test images.
        seed: draws each transform's random parts (directions, noise); recorded.
        device: where the models run; the transforms run where the images are.
        progress: show a progress bar over the changed sets.
    """
    from mnistlens.data import check_images, load_mnist
    from mnistlens.metrics import check_labels

    if not models:
        raise MnistlensError("a stress test needs at least one model")
    modules = modules_of(models)
    chosen = resolve_transforms(transforms)
    if images is None:
        images, labels = load_mnist("test", data_dir)
    images = check_images(images)
    labels = check_labels(labels)
    if len(labels) != len(images):
        raise MnistlensError(f"{len(images)} images but {len(labels)} labels; give one each")
    dev = resolve_device(device)
    prepared = {name: for_inference(m, None, device=dev) for name, m in modules.items()}

    def correct_on(changed: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: p == labels for n, p in _predictions(prepared, changed, dev).items()}

    clean = correct_on(images)
    steps = [(t, s) for t in chosen for s in t.severities if s != t.identity]
    changed = {}
    for t, severity in tqdm(steps, desc="stress", unit="set", disable=not progress):
        changed[t.name, severity] = correct_on(t(images, severity, seed))  # made once
    correct = {m: {"clean": clean[m]} for m in modules}
    for t in chosen:
        for m in modules:
            rows = [clean[m] if s == t.identity else changed[t.name, s][m] for s in t.severities]
            correct[m][t.name] = torch.stack(rows)  # (S, N)
    return StressResult(
        models=list(modules),
        transforms={t.name: t for t in chosen},
        # counts over N in float64: 0.915, not float32's 0.9150000214576721
        clean={m: int(clean[m].sum()) / len(images) for m in modules},
        accuracy={
            m: {
                t.name: (correct[m][t.name].sum(dim=1).double() / len(images)).tolist()
                for t in chosen
            }
            for m in modules
        },
        n_images=len(images),
        seed=seed,
        correct=correct,
    )


def dumps(result: StressResult, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """The result as one JSON document (what `mnistlens stress --json` prints)."""
    return json.dumps(result.to_json(pairs))


def combine(tables: Sequence[dict]) -> dict:
    """One table from the `to_json()` tables of models tested apart on the same images,
    transforms and seed (e.g. one cached per model): models and accuracies side by side,
    in the order given; pairs are dropped (ask `StressResult` for them)."""
    if not tables:
        raise MnistlensError("combine needs at least one stress table")
    first = tables[0]
    for table in tables[1:]:
        for key in ("n_images", "seed", "transforms"):
            if table[key] != first[key]:
                raise MnistlensError(
                    f"stress tables differ in {key}: test the models on the same images, "
                    "transforms and seed to set them side by side"
                )
    return {
        **first,
        "models": [row for table in tables for row in table["models"]],
        "accuracy": {m: per for table in tables for m, per in table["accuracy"].items()},
        "pairs": [],
    }
