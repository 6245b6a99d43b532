"""LRP: how fast, against the naive way, and how faithful, beside integrated gradients.

Naive way: a per-image loop of Zennit as its README shows it, on the model as trained:
for each digit, register the composite (epsilon-plus with the batch-norm canonizer, the
rule `lrp` picks for the CNN), run the `Gradient` attributor from the one-hot output,
remove the hooks. Ours: `mnistlens.attribution.lrp`, the same rule, batched (256 images
a chunk) on a copy of the model, relevance started from the target's logit. Both are
timed after a warm-up, best of --repeats, and their maps compared (same rule, so the
same maps up to the factor of the logit); integrated gradients is timed beside them.

Then, on the first --n test images (200, as `mnistlens measure`), for the shipped CNN and
MLP: deletion and insertion areas (lower / higher = more faithful) of every LRP rule,
of integrated gradients (50 steps, black baseline) and of a random ranking, each rule's
conservation error |sum(map) - logit| / |logit| (median), and the model-randomization
sanity check of the default rule (rank correlation once the top layer is re-initialized,
20 images; `faithfulness.SANITY_RULE`). Run from the project root:

    MNISTLENS_DATA=../shared/data/mnist python benchmarks/bench_lrp.py
    python benchmarks/bench_lrp.py --n 100 --repeats 1     # quicker
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mnistlens import attribution as A
from mnistlens import faithfulness as FA
from mnistlens import load_mnist, load_model
from mnistlens.attribution.lrp import RULES, default_rule
from mnistlens.metrics import predict_logits


def naive_lrp(model, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Zennit per image, as its README shows: (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlus
    from zennit.rules import Pass

    from mnistlens.models import Normalize

    maps = []
    for x, t in zip(images.split(1), target.split(1), strict=True):
        composite = EpsilonPlus(
            layer_map=[(Normalize, Pass())], canonizers=[SequentialMergeBatchNorm()]
        )
        with Gradient(model=model, composite=composite) as attributor:
            _, relevance = attributor(x.clone().requires_grad_(True), F.one_hot(t, 10).float())
        maps.append(relevance.detach())
    return torch.cat(maps)


def best_of(repeats: int, run) -> tuple[torch.Tensor, float]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return out, min(times)


def speed(cnn, images: torch.Tensor, repeats: int) -> None:
    target = predict_logits(cnn, images).argmax(dim=1)
    cnn.eval()
    naive_lrp(cnn, images[:4], target[:4])  # warm-up: imports, first passes
    A.lrp(cnn, images[:4], target[:4], device="cpu")
    naive, t_naive = best_of(repeats, lambda: naive_lrp(cnn, images, target))
    ours, t_ours = best_of(repeats, lambda: A.lrp(cnn, images, target, device="cpu"))
    A.integrated_gradients(cnn, images[:4], target[:4], device="cpu")
    _, t_ig = best_of(repeats, lambda: A.integrated_gradients(cnn, images, target, device="cpu"))
    logit = predict_logits(cnn, images).gather(1, target[:, None])[:, 0]
    gap = (ours - naive * logit[:, None, None, None]).abs().max() / ours.abs().max()
    print(
        f"LRP ({default_rule(cnn)}) on {len(images)} CNN digits, {torch.get_num_threads()} threads"
    )
    print(f"  naive per-image Zennit loop: {t_naive:.3f} s")
    print(f"  ours (batched):              {t_ours:.3f} s   x{t_naive / t_ours:.1f} faster")
    print(f"  for scale, integrated gradients (50 steps, batched): {t_ig:.3f} s")
    print(f"  largest difference of the maps (x logit), relative to the largest value: {gap:.1e}")


def faithful(name: str, model, images: torch.Tensor) -> None:
    target = predict_logits(model, images).argmax(dim=1)
    logit = predict_logits(model, images).gather(1, target[:, None])[:, 0]
    reference = FA.random_reference(model, images, target, device="cpu")
    print(f"\n{name}: {len(images)} test images, explaining the predicted class")
    print(f"  {'method':26s} {'deletion':>8s} {'insertion':>9s} {'conservation':>12s}")
    rows = [("random ranking", None)]
    rows += [("integrated_gradients", {})]
    rows += [(f"lrp {rule}", {"rule": rule}) for rule in RULES if rule != "auto"]
    for label, options in rows:
        if options is None:
            dele = float(reference["random_deletion_auc"].mean())
            ins = float(reference["random_insertion_auc"].mean())
            print(f"  {label:26s} {dele:8.3f} {ins:9.3f}")
            continue
        method = "integrated_gradients" if label == "integrated_gradients" else "lrp"
        maps = A.attribute(method, model, images, target, device="cpu", **options)
        summary = FA.score_maps(model, images, maps, target, reference=reference, device="cpu")
        summary = summary.summary()
        conservation = ""
        if method == "lrp":
            error = (maps.sum(dim=(1, 2, 3)) - logit).abs() / logit.abs()
            conservation = f"{error.median():12.3f}"
            if options["rule"] == default_rule(model):
                label += " (default)"
        print(
            f"  {label:26s} {summary['deletion_auc']:8.3f} {summary['insertion_auc']:9.3f} "
            f"{conservation}"
        )
    cascade = FA.randomization_check(model, images[:20], "lrp", target[:20], device="cpu")
    top = next(iter(cascade.values()))
    print(
        f"  sanity of lrp {default_rule(model)}: rank correlation {top:.2f} once the top "
        f"layer is re-initialized -> {FA.sanity_verdict(cascade)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-n", type=int, default=100, help="digits to time (100)")
    parser.add_argument("--n", type=int, default=200, help="digits to score (200)")
    parser.add_argument("--repeats", type=int, default=3, help="timings, best kept (3)")
    args = parser.parse_args()
    images = load_mnist("test")[0]
    cnn, _ = load_model("cnn.pt")
    speed(cnn, images[: args.speed_n], args.repeats)
    faithful("cnn.pt", cnn, images[: args.n])
    faithful("mlp.pt", load_model("mlp.pt")[0], images[: args.n])


if __name__ == "__main__":
    main()
