"""How fast mnistlens explains MNIST, against the naive way, in one process.

Naive way: a per-image loop of Captum calls on the model as trained (IG with Captum's
defaults: 50 Gauss-Legendre steps). Ours: `mnistlens.attribution` (batched chunks and
frozen parameters for every method; for integrated gradients also a copy with batch
norm folded and channels-last layout, and the adaptive tolerance mode).

Prints images/second, the ratio to the naive loop, IG completeness errors
|sum(map) - (f(x) - f(baseline))| / |f(x) - f(baseline)|, and the peak resident
memory each run added. Run from the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_attribution.py
    python benchmarks/bench_attribution.py --n 2000 --naive-n 100    # quicker
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from mnistlens import attribution as A
from mnistlens import load_mnist, load_model
from mnistlens.faithfulness import completeness_error
from mnistlens.metrics import predict_logits


class PeakRSS:
    """Peak resident memory added while the block runs, sampled every 10 ms (MB)."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.added_mb = (self.peak - self.start) / 2**20

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.01)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096


def timed(fn):
    with PeakRSS() as memory:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    return out, seconds, memory.added_mb


def describe(errors: torch.Tensor) -> str:
    outside = int((errors > 0.01).sum())
    return (
        f"median {errors.median():.4f}, p95 {errors.quantile(0.95):.4f}, "
        f"max {errors.max():.3f}, outside 1%: {outside} of {len(errors)}"
    )


def naive_loop(make_call, images, target):
    """One Captum call per image, as a first attempt would be written."""
    return torch.cat(
        [make_call(images[i : i + 1], int(target[i])).detach() for i in range(len(images))]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn.pt")
    parser.add_argument("--n", type=int, default=10_000, help="test images for our IG runs")
    parser.add_argument("--naive-n", type=int, default=200, help="images for naive loops")
    parser.add_argument("--other-n", type=int, default=500, help="images for other methods")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, meta = load_model(args.model)
    images, _ = load_mnist("test")
    target = predict_logits(model, images).argmax(dim=1)
    print(
        f"model {meta['path']} ({meta['arch']}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    # ------------------------------------------------ integrated gradients
    x_naive, t_naive = images[: args.naive_n], target[: args.naive_n]
    ig = IntegratedGradients(model)
    zeros = torch.zeros(1, 1, 28, 28)
    # Warm up both paths first (oneDNN picks and caches kernels on first use), so that
    # neither side pays one-time set-up costs inside its timing.
    naive_loop(lambda x, t: ig.attribute(x, baselines=zeros, target=t), x_naive[:5], t_naive)
    A.integrated_gradients(model, images[:64], target[:64], n_steps=50)
    A.integrated_gradients(model, images[:64], target[:64], tol=0.01)
    naive_maps, naive_s, naive_mb = timed(
        lambda: naive_loop(
            lambda x, t: ig.attribute(x, baselines=zeros, target=t), x_naive, t_naive
        )
    )
    naive_rate = args.naive_n / naive_s
    x, t = images[: args.n], target[: args.n]
    fixed_maps, fixed_s, fixed_mb = timed(lambda: A.integrated_gradients(model, x, t, n_steps=50))
    tol_maps, tol_s, tol_mb = timed(lambda: A.integrated_gradients(model, x, t, tol=0.01))

    print(
        f"\nIntegrated gradients (black baseline), naive loop on {args.naive_n} images, "
        f"ours on {args.n}:"
    )
    # Map accuracy: L1 distance to a 512-step Gauss-Legendre reference (first images).
    from mnistlens.attribution.fastig import ig_fixed
    from mnistlens.graph import prepare_for_explanation

    k = min(100, args.naive_n)
    reference, _ = ig_fixed(
        prepare_for_explanation(model), images[:k], torch.zeros_like(images[:k]), target[:k], 512
    )

    def map_error(maps):
        e = (maps[:k] - reference).abs().sum(dim=(1, 2, 3)) / reference.abs().sum(dim=(1, 2, 3))
        return f"{e.median():.3f}"

    print(
        "| run | images/s | x naive | completeness error | map L1 to 512 steps (median) "
        "| peak RSS added |"
    )
    print("|---|---|---|---|---|---|")
    rows = [
        (
            "naive: per-image Captum, 50 GL steps",
            naive_rate,
            naive_maps,
            x_naive,
            t_naive,
            naive_mb,
        ),
        ("ours: 50 GL steps, batched + folded", args.n / fixed_s, fixed_maps, x, t, fixed_mb),
        ("ours: tol=0.01 (adaptive steps)", args.n / tol_s, tol_maps, x, t, tol_mb),
    ]
    for name, rate, maps, xs, ts, mb in rows:
        errors = completeness_error(model, xs, maps, ts)
        print(
            f"| {name} | {rate:.1f} | {rate / naive_rate:.2f} | {describe(errors)} "
            f"| {map_error(maps)} | {mb:.0f} MB |"
        )

    # ------------------------------------------------ the other methods
    m = args.other_n
    x, t = images[:m], target[:m]
    xs, ts = images[: args.naive_n // 2], target[: args.naive_n // 2]
    conv = model.get_submodule(A.default_cam_layer(model))
    two_baselines = torch.cat([zeros, images.mean(dim=0, keepdim=True)])
    captum_calls = {
        "saliency": lambda x1, t1: Saliency(model).attribute(x1, target=t1, abs=True),
        "input_x_gradient": lambda x1, t1: InputXGradient(model).attribute(x1, target=t1),
        "smoothgrad": lambda x1, t1: NoiseTunnel(Saliency(model)).attribute(
            x1, nt_type="smoothgrad", nt_samples=25, stdevs=0.15, target=t1, abs=True
        ),
        "deeplift": lambda x1, t1: DeepLift(model).attribute(x1, baselines=zeros, target=t1),
        "gradient_shap": lambda x1, t1: GradientShap(model).attribute(
            x1, baselines=two_baselines, n_samples=20, stdevs=0.1, target=t1
        ),
        "occlusion": lambda x1, t1: Occlusion(model).attribute(
            x1, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0, target=t1
        ),
        "grad_cam": lambda x1, t1: LayerAttribution.interpolate(
            LayerGradCam(model, conv).attribute(x1, target=t1, relu_attributions=True),
            (28, 28),
            interpolate_mode="bilinear",
        ),
        "guided_backprop": lambda x1, t1: GuidedBackprop(model).attribute(x1, target=t1),
    }
    print(
        f"\nOther methods, naive per-image Captum loop on {len(xs)} images, "
        f"ours (same settings) on {m}:"
    )
    print("| method | naive images/s | ours images/s | x naive |")
    print("|---|---|---|---|")
    for name, call in captum_calls.items():
        _, n_s, _ = timed(lambda call=call: naive_loop(call, xs, ts))
        _, o_s, _ = timed(lambda name=name: A.attribute(name, model, x, t))
        n_rate, o_rate = len(xs) / n_s, m / o_s
        print(f"| {name} | {n_rate:.1f} | {o_rate:.1f} | {o_rate / n_rate:.2f} |")


if __name__ == "__main__":
    main()
