"""Counterfactuals on 100 test digits (every 100th): valid, how big, how believable, how fast.

For the shipped CNN and MLP, each mode (proto, plain, and CEM's pertinent negative and
positive) on the same digits, each digit to its runner-up class: the share the model
now calls the target, the median L1 and L0 change, the median plausibility (the shipped
autoencoder's reconstruction error of the counterfactual, per pixel), how often other
models agree with the target class (the other shipped model and the series' lenet by
name; the mean and the lowest over all 15 shipped and series models but the explained
one), and seconds for the batch of 100 and for one digit alone. Then proto mode's
margin kappa against the ink it costs and the agreement it buys. One process; run from
the root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_counterfactual.py
"""

from __future__ import annotations

import time

import torch

from mnistlens import load_mnist, load_model
from mnistlens.counterfactual import MODES, counterfactuals, load_autoencoder
from mnistlens.counterfactual.measures import measure
from mnistlens.series import checkpoint_path, list_series

NAMED = ("cnn", "mlp", "lenet")  # the judges shown by name; the rest in the mean


def main() -> None:
    images, _ = load_mnist("test")
    digits = images[::100][:100]
    shipped = {n: load_model(f"{n}.pt")[0] for n in ("cnn", "mlp")}
    judges = {n: load_model(f"{n}.pt")[0] for n in ("cnn", "mlp", "linear")}
    judges |= {n: load_model(checkpoint_path(n))[0] for n in list_series()}
    ae = load_autoencoder()
    counterfactuals(shipped["mlp"], digits[:2], autoencoder=ae, steps=2)  # codes encoded once
    print(
        f"{len(digits)} test digits, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'model':<6}{'mode':<20}{'valid':>7}{'L1':>7}{'L0':>6}{'plaus.':>8}{'IM1':>6}{'IM2':>6}"
        f"{'others agree':>22}{'all 15: mean, lowest':>32}{'s/100':>7}{'s/one':>7}"
    )
    for name, model in shipped.items():
        others = {n: m for n, m in judges.items() if n != name}
        table = measure(model, digits, others, MODES, autoencoder=ae)
        for mode, row in table.items():
            start = time.perf_counter()
            counterfactuals(model, digits[:1], mode=mode, autoencoder=ae)
            one = time.perf_counter() - start
            print(
                f"{name:<6}{mode:<20}{row['valid']:>7.0%}{row['l1_median']:>7.1f}"
                f"{row['l0_median']:>6}{row['plausibility_median']:>8.4f}"
                f"{row['im1_median']:>6.2f}{row['im2_median']:>6.2f}"
                f"{_agreement(row['agreement']):>54}"
                f"{row['seconds_per_digit'] * len(digits):>7.1f}{one:>7.2f}"
            )
    print("\nproto mode's margin kappa (logits): the ink it costs, the agreement it buys")
    for name, model in shipped.items():
        others = {n: m for n, m in judges.items() if n != name}
        for kappa in (1.0, 2.0, 3.0, 5.0):
            row = measure(model, digits, others, ("proto",), autoencoder=ae, kappa=kappa)
            row = row["proto"]
            print(
                f"{name:<6}kappa {kappa:<4g}{row['valid']:>7.0%}  L1 {row['l1_median']:>5.1f}"
                f"  {_agreement(row['agreement'])}"
            )


def _agreement(agreement: dict[str, float | None]) -> str:
    """The named judges' agreement, then the mean and the lowest over all of them."""
    named = ", ".join(f"{n} {agreement[n]:.0%}" for n in NAMED if n in agreement)
    known = {n: a for n, a in agreement.items() if a is not None}
    lowest = min(known, key=known.get)
    mean = sum(known.values()) / len(known)
    return f"{named}; mean {mean:.0%}, lowest {lowest} {known[lowest]:.0%}"


if __name__ == "__main__":
    main()
