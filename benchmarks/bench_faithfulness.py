"""Deletion and insertion curves: every step run, against ours (repeats skipped).

A curve deletes (or inserts) a map's top-ranked pixels in 28 strides and runs the
model at each step. The naive way runs all 29 x N step images. Ours runs each
distinct image once: a step that only reaches pixels already at the baseline (black,
most of an MNIST digit) repeats the previous image, and every fully deleted (or empty)
image is the same blank one. How much that saves depends on the ranking: a map that
ranks the ink first (integrated gradients) repeats most steps, a random one hardly any.

Prints, per method and mode: seconds for both ways, the ratio, the share of step
images ours ran, and the largest difference between the two curves. One process, one
torch thread, the shipped CNN. Run from the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_faithfulness.py
    python benchmarks/bench_faithfulness.py --n 100     # quicker
"""

from __future__ import annotations

import argparse
import time

import torch

from mnistlens import attribution as A
from mnistlens import faithfulness as F
from mnistlens import load_mnist, load_model
from mnistlens.metrics import predict_logits

METHODS = ("integrated_gradients", "guided_backprop", "grad_cam", "saliency", "random")


@torch.no_grad()
def every_step(model, images, maps, target, mode, steps=28):
    """The naive curve: all (steps + 1) x N step images through the model, (N, S + 1)."""
    n = len(images)
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(784).expand(n, 784))
    counts = torch.linspace(0, 784, steps + 1).round().long()
    top = rank.unsqueeze(0) < counts.view(-1, 1, 1)  # (S + 1, N, 784)
    flat = images.flatten(1)
    x = torch.where(top, 0.0, flat) if mode == "deletion" else torch.where(top, flat, 0.0)
    probs = predict_logits(model, x.view(-1, 1, 28, 28)).softmax(dim=1)
    return probs.gather(1, target.repeat(steps + 1)[:, None])[:, 0].view(steps + 1, n).T


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="test images (default 500)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _ = load_model("cnn.pt")
    images = load_mnist("test")[0][: args.n]
    target = predict_logits(model, images).argmax(dim=1)
    every_step(model, images[:50], images[:50], target[:50], "deletion")  # warm-up

    shown = []
    real_predict = F.predict_logits

    def counting(model, x):
        shown.append(len(x))
        return real_predict(model, x)

    print(f"shipped CNN, {args.n} test images, 29 steps, one thread")
    print("| method | mode | every step s | ours s | x faster | images run | max difference |")
    print("|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for method in METHODS:
        if method == "random":
            maps = F.random_maps(images)
        else:
            maps = A.attribute(method, model, images, target)
        for mode in F.MODES:
            naive, naive_s = timed(every_step, model, images, maps, target, mode)
            shown.clear()
            F.predict_logits = counting
            try:
                ours, ours_s = timed(F.perturbation_curve, model, images, maps, target, mode)
            finally:
                F.predict_logits = real_predict
            totals[0] += naive_s
            totals[1] += ours_s
            share = sum(shown) / (29 * len(images))
            diff = float((naive - ours).abs().max())
            print(
                f"| {method} | {mode} | {naive_s:.2f} | {ours_s:.2f} | {naive_s / ours_s:.2f} "
                f"| {share:.0%} | {diff:.1e} |"
            )
    print(f"| all | both | {totals[0]:.2f} | {totals[1]:.2f} | {totals[0] / totals[1]:.2f} | | |")


if __name__ == "__main__":
    main()
