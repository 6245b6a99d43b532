"""Is it a digit at all? The detector scoreboard, and what the verdict costs.

1. The scoreboard (`typicality.scoreboard`): every candidate detector on each shipped
   model, fitted and calibrated as the verdict is, flagged shares on MNIST test digits
   and on every probe set, and the AUROC of letters against MNIST test digits.
2. The default detector fitted on the verdict's few thousand training images against
   the naive way, all 60,000 (55,000 to fit, 5,000 to calibrate): what the subset costs
   in flagged shares, and what it saves in seconds; then the same detector on four
   disjoint subsets, with conv maps as a 2x2 grid of channel means (the verdict) and as
   plain channel means: how much the shares move with the subset.
3. Time, on one torch thread as `explain` runs: a model's first verdict (the fit:
   training-set pass, fit, calibration; in this process, so the training set is already
   read), its verdict when the fit is on disk, and when in memory, against one
   explanation of one digit (saliency, IG, Grad-CAM with their faithfulness scores), and
   what importing pytorch-ood would add to every command's start-up (why the scores the
   verdict uses are written out in `typicality.detectors`).

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_typicality.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnistlens import explain, load_mnist, load_model
from mnistlens.influence import cache
from mnistlens.typicality import default_spec, detectors, fit_detector, probes, scoreboard
from mnistlens.typicality.detectors import Spec
from mnistlens.typicality.verdict import CALIBRATION_IMAGES, FIT_IMAGES

MODELS = ("cnn.pt", "mlp.pt", "linear.pt")


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_fit_rows(model, sets: dict, test: torch.Tensor) -> tuple[dict, dict, float, float]:
    """The default detector's flagged shares fitted on the subset and on all 60,000
    training images: -> (subset shares, full shares, subset seconds, full seconds)."""
    spec = default_spec(model)
    layers = [spec.layer] if spec.layer else []
    train, labels = load_mnist("train")
    shares, seconds = [], []
    for fit_n, cal_n in ((FIT_IMAGES, CALIBRATION_IMAGES), (55_000, 5_000)):
        start = time.perf_counter()
        feats, logits = detectors.features(model, train[: fit_n + cal_n], layers)
        state = detectors.fit(
            spec, {k: v[:fit_n] for k, v in feats.items()}, logits[:fit_n], labels[:fit_n], model
        )
        held = detectors.score(
            spec, state, {k: v[fit_n:] for k, v in feats.items()}, logits[fit_n:]
        )
        seconds.append(time.perf_counter() - start)
        threshold = torch.quantile(held.double(), 0.95, interpolation="higher")
        row = {}
        for name, images in {"MNIST test": test, **sets}.items():
            scores = detectors.score(spec, state, *detectors.features(model, images, layers))
            row[name] = float((scores.double() > threshold).float().mean())
        shares.append(row)
    return shares[0], shares[1], seconds[0], seconds[1]


def subset_stability(model, sets: dict, test: torch.Tensor, subsets: int = 4) -> None:
    """Mahalanobis at relu3 fitted on disjoint subsets of 2,000 + 2,000 training images,
    conv maps as a 2x2 grid of channel means (the verdict) and as plain channel means
    (pytorch-ood's own reduction): how much the flagged shares move with the subset."""
    train, labels = load_mnist("train")
    n = FIT_IMAGES + CALIBRATION_IMAGES
    spec, cap = Spec("mahalanobis", "relu3"), detectors.MAX_FEATURES
    print(f"\ncnn.pt mahalanobis@relu3 on {subsets} disjoint subsets of {n:,} training images:")
    try:
        for name, limit in (("2x2 grid", cap), ("channel means", 0)):
            detectors.MAX_FEATURES = limit  # 0: every conv layer as channel means
            feats, logits = detectors.features(model, train[: subsets * n], ["relu3"])
            passes = {k: detectors.features(model, v, ["relu3"]) for k, v in sets.items()}
            for i in range(subsets):
                part = slice(i * n, i * n + FIT_IMAGES)
                held = slice(i * n + FIT_IMAGES, (i + 1) * n)
                state = detectors.fit(spec, {"relu3": feats["relu3"][part]}, logits[part],
                                      labels[part], model)  # fmt: skip
                calibration = detectors.score(spec, state, {"relu3": feats["relu3"][held]}, None)
                threshold = torch.quantile(calibration.double(), 0.95, interpolation="higher")
                shares = {
                    k: float(
                        (detectors.score(spec, state, f, lg).double() > threshold).float().mean()
                    )
                    for k, (f, lg) in passes.items()
                }
                print(
                    f"  {name:14s} subset {i}: "
                    + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
                )
    finally:
        detectors.MAX_FEATURES = cap


def import_seconds(module: str) -> float:
    """Seconds to import `module` in a fresh interpreter that has torch loaded already."""
    code = (
        "import time, torch; t = time.perf_counter(); "
        f"import {module}; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def timings(repeats: int) -> None:
    torch.set_num_threads(1)  # as `explain` runs one digit
    model, _ = load_model("cnn.pt")
    image = load_mnist("test")[0][:1]  # (1, 1, 28, 28)
    load_mnist("train")  # read once, as any earlier command in the process would
    with tempfile.TemporaryDirectory() as folder:

        def first() -> None:
            cache.clear_memory_cache()
            for path in Path(folder).glob("*.pt"):
                path.unlink()
            fit_detector(model, cache_dir=folder).judge(model, image)

        def from_disk() -> None:
            cache.clear_memory_cache()
            fit_detector(model, cache_dir=folder).judge(model, image)

        def in_memory() -> None:
            fit_detector(model, cache_dir=folder).judge(model, image)

        cold = median_seconds(first, repeats)
        disk = median_seconds(from_disk, repeats)
        fit_detector(model, cache_dir=folder)
        warm = median_seconds(in_memory, 20 * repeats)
    methods = ["saliency", "integrated_gradients", "grad_cam"]
    one = median_seconds(lambda: explain.explain(model, image, methods, measure=True), repeats)
    ood = import_seconds("pytorch_ood.detector")
    own = import_seconds("mnistlens.typicality.detectors")
    print(f"\ncnn.pt, one torch thread, median of {repeats} (in memory: {20 * repeats}):")
    print(f"  first verdict, fit on {FIT_IMAGES}+{CALIBRATION_IMAGES} images: {cold:.2f} s")
    print(f"  verdict, fit read from disk: {disk * 1000:.1f} ms")
    print(f"  verdict, fit in memory:      {warm * 1000:.1f} ms")
    print(
        f"  one explanation (3 methods, measured): {one:.2f} s; the verdict adds {warm / one:.1%}"
    )
    print(
        f"  import pytorch_ood.detector: {ood:.2f} s; mnistlens.typicality.detectors: {own:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-full", action="store_true", help="no 60,000-image fit")
    args = parser.parse_args()
    test = load_mnist("test")[0]
    sets = probes.probe_sets(test)
    print(", ".join(f"{name} {len(images)}" for name, images in sets.items()))
    rows = []
    for name in MODELS:
        model, _ = load_model(name)
        rows += scoreboard.scoreboard(model, name, sets, test_images=test)
        print(f"{name}: the verdict uses {default_spec(model).name}")
    print(scoreboard.markdown(rows))
    if not args.skip_full:
        model, _ = load_model("cnn.pt")
        subset, full, fast, slow = full_fit_rows(model, sets, test)
        print(f"\ncnn.pt {default_spec(model).name}: flagged share, subset fit vs all 60,000:")
        for name in subset:
            print(f"  {name:16s} {subset[name]:6.1%} {full[name]:6.1%}")
        print(f"  fit seconds: {fast:.2f} vs {slow:.2f} ({slow / fast:.0f}x)")
        subset_stability(model, {"MNIST test": test, **sets}, test)
    timings(args.repeats)


if __name__ == "__main__":
    main()
