"""Does a long session leak? The 10,000 test images explained again and again in one process.

What a notebook user does: load a model once, then call `attribution.attribute` (or,
with --explain, `explain.explain`) over the whole test set in batches, round after round,
keeping nothing. Each round prints its time, the resident memory after it (VmRSS from
/proc/self/status, else psutil, else the peak from getrusage), the tensors still alive
after a garbage collection and the hooks left on the model. At the end: RSS growth from
round 2 to the last round and its least-squares slope per round. Round 1 pays one-off
costs (allocator pools, a method's prepared copy of the model, lazy imports), so growth
is counted from round 2: a leak shows as steady growth after that, a healthy run as a
flat line. The maps' sum must be the same every round (the methods run here are
deterministic). Run from the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_soak.py     # saliency x 10
    python benchmarks/bench_soak.py --method ig --option tol=0.01 --rounds 5
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time

import torch

from mnistlens import attribution, explain, load_mnist, load_model
from mnistlens.commands._common import parse_value


def rss_mb() -> float:
    """Resident memory now, in MB (the peak so far where only getrusage is available)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def live_tensors() -> int:
    """Tensors still reachable after a garbage collection (cycles freed first)."""
    gc.collect()
    # type(), not isinstance: isinstance reads __class__, which warns on some torch objects
    return sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects())


def hooks_left(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def one_round(model, images, method: str, batch: int, options: dict, use_explain: bool):
    """Every image once, `batch` at a time; -> the sum of all maps (a determinism check)."""
    total = 0.0
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]  # (B, 1, 28, 28)
        if use_explain:
            maps = explain.explain(model, chunk, [method], **{method: options}).maps[method]
        else:
            maps = attribution.attribute(method, model, chunk, **options)
        total += float(maps.double().sum())
    return total


def slope(values: list[float]) -> float:
    """Least-squares slope of values against their position (per round)."""
    if len(values) < 2:
        return 0.0
    xs = range(len(values))
    mx, my = statistics.fmean(xs), statistics.fmean(values)
    covariance = sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True))
    return covariance / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="passes over the test set (10)")
    parser.add_argument("--method", default="saliency", help="attribution method (saliency)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, repeatable, e.g. --option tol=0.01 for ig",
    )
    parser.add_argument("--model", default="cnn.pt", help="checkpoint (cnn.pt)")
    parser.add_argument("--batch", type=int, default=500, help="images per call (500)")
    parser.add_argument("--n", type=int, default=10000, help="test images per round (10000)")
    parser.add_argument("--explain", action="store_true", help="call explain.explain instead")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    method = attribution.resolve_method(args.method)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--option {item!r}: write KEY=VALUE, e.g. tol=0.01")
        options[key] = parse_value(value)

    model, _ = load_model(args.model)
    images = load_mnist("test")[0][: args.n]  # (N, 1, 28, 28)
    call = "explain.explain" if args.explain else "attribution.attribute"
    print(
        f"{call}({method!r}, {args.model}, {options or 'defaults'}) on {len(images)} test "
        f"images, batches of {args.batch}, {args.rounds} rounds; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    print(f"before round 1: RSS {rss_mb():7.1f} MB, live tensors {live_tensors()}", flush=True)
    seconds, rss, sums = [], [], []
    for r in range(1, args.rounds + 1):
        start = time.perf_counter()
        sums.append(one_round(model, images, method, args.batch, options, args.explain))
        seconds.append(time.perf_counter() - start)
        rss.append(rss_mb())
        print(
            f"round {r:2d}: {seconds[-1]:7.1f} s ({len(images) / seconds[-1]:6.0f} images/s)  "
            f"RSS {rss[-1]:7.1f} MB  live tensors {live_tensors():5d}  "
            f"hooks left {hooks_left(model)}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.1f} MB; median round {statistics.median(seconds):.1f} s")
    if len(rss) >= 3:
        print(
            f"RSS growth, round 2 -> {len(rss)}: {rss[-1] - rss[1]:+.1f} MB "
            f"(slope {slope(rss[1:]):+.2f} MB/round)"
        )
    same = all(abs(s - sums[0]) <= 1e-9 * max(1.0, abs(sums[0])) for s in sums)
    print(f"maps' sum every round: {sums[0]:.6g} ({'identical' if same else 'DIFFERS'})")


if __name__ == "__main__":
    main()
