"""How long does a stress test of the whole series take?

`perturb.evaluate` (each changed set made once, shared by every model; each model run
as `models.for_inference` says) against the naive way: for each model, make each
changed set again and score it with the model as loaded, batches of 1000. Both must give
the same accuracies. Also the time each transform takes to make its sets, and the
whole default stress test (sweeps + MNIST-C) with the pairs' causes. One process; run
from the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_stress.py
    python benchmarks/bench_stress.py --models linear,mlp,cnn   # the shipped three only
"""

from __future__ import annotations

import argparse
import time

import torch

from mnistlens import load_mnist, load_model
from mnistlens.perturb import evaluate, resolve_transforms
from mnistlens.perturb import run as stress
from mnistlens.series import checkpoint_path, list_series


@torch.no_grad()
def naive(models: dict, transforms, images, labels) -> dict:
    """model -> transform -> accuracies, remaking every set for every model."""
    found = {}
    for name, model in models.items():
        model.eval()
        found[name] = {}
        for t in transforms:
            found[name][t.name] = []
            for severity in t.severities:
                changed = t(images, severity, 0)
                predicted = torch.cat(
                    [model(changed[i : i + 1000]).argmax(1) for i in range(0, len(changed), 1000)]
                )
                found[name][t.name].append(int((predicted == labels).sum()) / len(labels))
    return found


def timed(run):
    start = time.perf_counter()
    value = run()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: the whole series)")
    parser.add_argument("--naive", action="store_true", help="also time the naive way (slow)")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else list_series()
    paths = {n: f"{n}.pt" if n in ("linear", "mlp", "cnn") else checkpoint_path(n) for n in names}
    models = {n: load_model(p)[0] for n, p in paths.items()}
    images, labels = load_mnist("test")
    print(f"{len(models)} models, {len(images):,} test images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    print(f"\n{'transform':<18}{'sets':>5}{'make s':>8}")
    for t in resolve_transforms(["all"]):
        _, seconds = timed(lambda t=t: [t(images, s, 0) for s in t.severities if s != t.identity])
        print(f"{t.name:<18}{len(t.severities) - 1:>5}{seconds:>8.2f}")

    corruptions = resolve_transforms(["corruptions"])
    result, ours = timed(lambda: evaluate(models, corruptions, images, labels, progress=False))
    print(f"\n{len(models)} models x {len(corruptions)} MNIST-C corruptions: {ours:.1f} s")
    if args.naive:
        expected, before = timed(lambda: naive(models, corruptions, images, labels))
        for name in models:
            for t in corruptions:
                got = result.accuracy[name][t.name]
                assert all(
                    abs(a - b) <= 1e-3 for a, b in zip(got, expected[name][t.name], strict=True)
                ), name
        print(f"naive (sets remade per model, batches of 1000): {before:.1f} s, "
              f"{before / ours:.1f}x ours")  # fmt: skip

    found, whole = timed(lambda: stress(models, progress=False))
    n_sets = sum(len(t["severities"]) - 1 for t in found["transforms"])
    print(f"whole stress test ({n_sets} changed sets, {len(found['pairs'])} pairs with "
          f"their causes): {whole:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
