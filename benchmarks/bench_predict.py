"""How fast are the shipped models' scores on the 10,000 test images?

`metrics.predict_logits` against the naive way (the model as loaded, batches of 1000),
for every shipped model and series member found, with one and with all torch threads.
Every figure is the median of --repeats runs in this one process; the scores of both
ways must agree to 1e-4 of their scale and give the same predicted digits. Run from
the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_predict.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnistlens import load_mnist, load_model
from mnistlens.metrics import predict_logits
from mnistlens.series import checkpoint_path, list_series


@torch.no_grad()
def naive(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i : i + 1000]) for i in range(0, len(images), 1000)])


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images, _ = load_mnist("test")
    paths = {n: f"{n}.pt" for n in ("linear", "mlp", "cnn")}
    paths |= {n: checkpoint_path(n) for n in list_series() if checkpoint_path(n).is_file()}
    all_threads = torch.get_num_threads()
    print(f"{len(images)} test images, torch {torch.__version__}, threads 1 and {all_threads}")
    print(f"{'model':<16}{'threads':>8}{'naive s':>10}{'predict s':>11}{'speed-up':>10}")
    for name, path in paths.items():
        model, _ = load_model(path)
        expected, got = naive(model, images), predict_logits(model, images)
        scale = float(expected.abs().max())
        assert (got - expected).abs().max() <= 1e-4 * scale, name
        assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1)), name
        for threads in sorted({1, all_threads}):
            torch.set_num_threads(threads)
            before = median_seconds(lambda m=model: naive(m, images), args.repeats)
            after = median_seconds(lambda m=model: predict_logits(m, images), args.repeats)
            print(f"{name:<16}{threads:>8}{before:>10.2f}{after:>11.2f}{before / after:>9.1f}x")
        torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
