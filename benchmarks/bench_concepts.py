"""TCAV on the shipped CNN: time, fast vs SVM CAVs, Captum's TCAV, and false positives.

1. The target: 7 built-in concepts x 10 classes x 2 layers (relu3, relu_fc1) with 10
   random runs, linear-SVM CAVs and mean-difference CAVs (--fast): seconds end to end
   (drawing the sets, activations, gradients, CAVs, tests; the fastest of 3), then
   `tcav` alone on sets already drawn, and how far the two agree (same verdict per
   concept x layer x class; correlation of the mean scores).
2. The naive way: `captum.concept.TCAV` on a smaller problem (2 concepts, 2 layers, 3
   runs, 10 classes, its default SGD classifier) against `concepts.tcav` on the same sets.
3. False positives: 10 fresh random sets run as concepts (200 tests), with this
   package's null (random set r vs r + 1) and with one fixed random set on the positive
   side of every null CAV (tensorflow/tcav's plots with a random_counterpart).
4. Random counterexamples: closed loop's verdicts against random strokes and against
   random training digits.

One process; run from the root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_concepts.py
"""

from __future__ import annotations

import tempfile
import time
import warnings

import numpy as np
import torch

from mnistlens import load_model
from mnistlens.concepts import random_set, run, tcav
from mnistlens.concepts.pipeline import class_sample, concept_sets

LAYERS = ["relu3", "relu_fc1"]


def timed(fn, repeats: int = 3):
    """-> (the last value, the fastest of `repeats` runs in seconds): the machine is
    shared, and the fastest run is the one least slowed by others."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return value, best


def full_run(model) -> None:
    print("1. 7 concepts x 10 classes x 2 layers, 10 runs (100 images per set, 100 per class)")
    results = {}
    for fast in (False, True):
        result, seconds = timed(lambda fast=fast: run(model, fast=fast, device="cpu")[0])
        results[result.method] = result
        print(
            f"   {result.method:4s} CAVs: {seconds:5.1f} s, "
            f"{int(result.significant.sum())} of {result.significant.size} significant, "
            f"CAV accuracy {result.accuracy.mean():.2f}"
        )
    sets = concept_sets()
    randoms = [random_set(100, 1 + r) for r in range(11)]
    images, labels = class_sample(100)
    for method in ("svm", "mean"):
        _, seconds = timed(
            lambda m=method: tcav(model, sets, randoms, images, labels, LAYERS, m, device="cpu")
        )
        print(f"   of which {method} TCAV on sets already drawn: {seconds:5.1f} s")
    svm, mean = results["svm"], results["mean"]
    verdicts = [
        svm.verdict(c, li, k) == mean.verdict(c, li, k)
        for c in range(len(svm.concepts))
        for li in range(len(svm.layers))
        for k in range(len(svm.classes))
    ]
    a, b = svm.scores.mean(-1).ravel(), mean.scores.mean(-1).ravel()
    print(
        f"   fast vs svm: same verdict {np.mean(verdicts):.0%}, score correlation "
        f"{np.corrcoef(a, b)[0, 1]:.2f}, same side of 0.5 {np.mean((a > 0.5) == (b > 0.5)):.0%}"
    )
    for layer in LAYERS:
        for name, result in results.items():
            print(
                f"   closed_loop {layer:8s} {name:4s}: towards "
                f"{result.significant_classes('closed_loop', layer)}, against "
                f"{result.significant_classes('closed_loop', layer, 'against')}"
            )


def against_captum(model) -> None:
    from captum.concept import TCAV, Concept

    print("2. 2 concepts x 2 layers x 3 runs x 10 classes: captum.concept.TCAV vs concepts.tcav")
    sets = concept_sets(["closed_loop", "vertical_stroke"])
    randoms = [random_set(100, 1 + r) for r in range(4)]
    images, labels = class_sample(100)

    def captum_tcav():
        loader = torch.utils.data.DataLoader
        concepts = [
            Concept(i, name, loader(x, batch_size=100))
            for i, (name, x) in enumerate(
                [*sets.items(), *((f"random{r}", x) for r, x in enumerate(randoms))]
            )
        ]
        named, rand = concepts[:2], concepts[2:]
        experiments = [[c, rand[r + 1]] for c in named for r in range(3)]
        experiments += [[rand[r], rand[r + 1]] for r in range(3)]
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer = TCAV(model, LAYERS, save_path=folder)
            for k in range(10):
                explainer.interpret(images[labels == k], experiments, target=k)

    _, captum_seconds = timed(captum_tcav)  # a new TCAV object each time: no saved CAVs
    _, ours = timed(lambda: tcav(model, sets, randoms, images, labels, LAYERS, device="cpu"))
    print(
        f"   captum {captum_seconds:.1f} s, concepts.tcav {ours:.1f} s "
        f"({captum_seconds / ours:.1f}x faster)"
    )


def false_positives(model) -> None:
    print("3. 10 random sets as concepts, 2 layers x 10 classes each (200 tests, alpha 0.05)")
    randoms = [random_set(100, 1 + r) for r in range(11)]
    concepts = {f"random{i}": random_set(100, 700 + i) for i in range(10)}
    images, labels = class_sample(100)
    for method in ("svm", "mean"):
        for fixed in (False, True):
            result = tcav(
                model,
                concepts,
                randoms,
                images,
                labels,
                LAYERS,
                method,
                fixed_null=fixed,
                device="cpu",
            )
            families = int(result.significant.any(-1).sum())
            print(
                f"   {method:4s} {'fixed' if fixed else 'varying'} null: "
                f"{int(result.significant.sum())} significant after Holm "
                f"({families} of 20 concept x layer families), "
                f"{int((result.p_values < 0.05).sum())} with p < 0.05 before"
            )


def random_kinds(model) -> None:
    print("4. closed_loop's verdicts by kind of random counterexample (svm CAVs)")
    for kind in ("strokes", "digits"):
        result, _ = run(model, ["closed_loop"], random=kind, device="cpu")
        for layer in LAYERS:
            scores = " ".join(
                f"{s:.2f}" for s in result.scores[0, result.layers.index(layer)].mean(-1)
            )
            print(
                f"   {kind:7s} {layer:8s} towards "
                f"{result.significant_classes('closed_loop', layer)} against "
                f"{result.significant_classes('closed_loop', layer, 'against')}  {scores}"
            )


def main() -> None:
    model, _ = load_model("cnn.pt")
    print(f"cnn.pt, torch {torch.__version__}, {torch.get_num_threads()} threads")
    run(model, ["thin_stroke"], runs=2, fast=True, device="cpu")  # imports, MNIST read
    full_run(model)
    against_captum(model)
    false_positives(model)
    random_kinds(model)


if __name__ == "__main__":
    main()
