"""Counterfactuals on 100 test digits (every 100th): valid, how big, how believable, how fast.

For the shipped CNN and MLP, each mode (proto, plain, and CEM's pertinent negative and
positive) on the same digits, each digit to its runner-up class: the share the model
now calls the target, the median L1 and L0 change, the median plausibility (the shipped
autoencoder's reconstruction error of the counterfactual, per pixel), how often other
models (the other shipped one and the series' lenet) agree with the target class, and
seconds for the batch of 100 and for one digit alone. One process; run from the root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_counterfactual.py
"""

from __future__ import annotations

import time

import torch

from mnistlens import load_mnist, load_model
from mnistlens.counterfactual import MODES, counterfactuals, load_autoencoder
from mnistlens.metrics import predict_logits
from mnistlens.series import checkpoint_path


def main() -> None:
    images, _ = load_mnist("test")
    digits = images[::100][:100]
    shipped = {n: load_model(f"{n}.pt")[0] for n in ("cnn", "mlp")}
    lenet = load_model(checkpoint_path("lenet"))[0]
    ae = load_autoencoder()
    counterfactuals(shipped["mlp"], digits[:2], autoencoder=ae, steps=2)  # codes encoded once
    print(
        f"{len(digits)} test digits, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'model':<6}{'mode':<20}{'valid':>7}{'L1':>7}{'L0':>6}{'plaus.':>8}"
        f"{'others agree':>22}{'s/100':>7}{'s/one':>7}"
    )
    for name, model in shipped.items():
        others = {n: m for n, m in shipped.items() if n != name} | {"lenet": lenet}
        for mode in MODES:
            found = counterfactuals(model, digits, mode=mode, autoencoder=ae)
            start = time.perf_counter()
            counterfactuals(model, digits[:1], mode=mode, autoencoder=ae)
            one = time.perf_counter() - start
            agree = []
            for other, net in others.items():
                said = predict_logits(net, found.images).argmax(1)
                share = (said == found.target)[found.valid].float().mean()
                agree.append(f"{other} {float(share):.0%}")
            print(
                f"{name:<6}{mode:<20}{float(found.valid.float().mean()):>7.0%}"
                f"{float(found.l1.median()):>7.1f}{int(found.l0.median()):>6}"
                f"{float(found.plausibility.median()):>8.4f}{', '.join(agree):>22}"
                f"{found.seconds:>7.1f}{one:>7.2f}"
            )


if __name__ == "__main__":
    main()
