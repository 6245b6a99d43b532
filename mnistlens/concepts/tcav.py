"""TCAV: does a concept push the model towards a class? (Kim et al. 2018, arXiv:1711.11279)

For class k, layer l and a CAV v (`cav.py`), the TCAV score is the share of class-k
images x whose class-k logit grows when the layer's activations move along v:

    S(x) = grad_{f_l(x)} h_k(f_l(x)) . v,      TCAV = |{x of class k : S(x) > 0}| / |class k|

A score alone means little: a CAV of two *random* sets also scores something. So, as
in the paper (section 3.3), every concept is compared with random: `runs` CAVs of the
concept against `runs` different random sets give `runs` scores; `runs` CAVs of a
random set against another give the null scores; a two-sided Welch
t-test of the two lists gives the p-value, and Holm's method corrects the p-values
for multiple comparisons. The family is one concept at one layer, over its classes
("which digits does a closed loop push towards, at relu3?"): Holm keeps the
family-wise error rate at `alpha` like Bonferroni and rejects at least as much. (One
family for a whole table of 7 concepts x 2 layers x 10 classes would ask p < 0.05/140
of the strongest result, which 10 random runs do not reach on the shipped CNN: its
smallest p-value is 0.0008, and that table would hold no verdict at all.)
A significant concept either pushes "towards" the class (scores above random) or
"against" it (below).

How this differs from `captum.concept.TCAV`, which recomputes the model's
activations and gradients for every experimental set and target: here the
activations of every set are taken in one forward pass, and the gradients of every
class image's own logit w.r.t. every layer in one backward pass (each image's logit
depends on its own activations only), so all CAVs are scored by one matrix product
per layer. benchmarks/bench_concepts.py measures both.

    >>> randoms = [sets.random_set(100, seed=1 + r) for r in range(11)]
    >>> result = tcav(model, {"closed_loop": loops}, randoms, images, labels, ["relu3"])
    >>> result.significant_classes("closed_loop", "relu3"), result.table()[0]
    ([6, 8, 9], {'concept': 'closed_loop', 'layer': 'relu3', 'class': 0, 'score': 1.0, ...})
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mnistlens.concepts.cav import check_method, fit_cav
from mnistlens.device import Device, model_on, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.internals.activations import activations_and_logits, capture
from mnistlens.models import evaluating, get_layer

ROWS = 256  # images per backward pass (class_gradients)


@dataclass
class TCAVResult:
    """Scores and tests of every concept, layer and class.

    scores: (C, L, K, R) TCAV score of each concept's run r (its CAV against random set
    r + 1); random_scores: (L, K, R) the same for the random-vs-random CAVs; accuracy:
    (C, L, R) each concept CAV's held-out accuracy; p_values, corrected: (C, L, K) the
    t-test's p-value and its Holm-corrected value (over the K classes); significant:
    (C, L, K) corrected < alpha; towards: (C, L, K) the concept's mean score is above
    random's.
    """

    concepts: list[str]
    layers: list[str]
    classes: list[int]
    scores: np.ndarray
    random_scores: np.ndarray
    accuracy: np.ndarray
    p_values: np.ndarray
    corrected: np.ndarray
    alpha: float
    method: str
    settings: dict = field(default_factory=dict)

    @property
    def significant(self) -> np.ndarray:
        return self.corrected < self.alpha

    @property
    def towards(self) -> np.ndarray:
        return self.scores.mean(-1) > self.random_scores.mean(-1)[None]

    def verdict(self, c: int, li: int, k: int) -> str:
        """One of "towards", "against" or "not significant", for concept c, layer li
        and class k (indices)."""
        if not self.significant[c, li, k]:
            return "not significant"
        return "towards" if self.towards[c, li, k] else "against"

    def significant_classes(self, concept: str, layer: str, direction: str = "towards") -> list:
        """The classes the concept significantly pushes `direction` at `layer`."""
        c, li = self.concepts.index(concept), self.layers.index(layer)
        return [k for i, k in enumerate(self.classes) if self.verdict(c, li, i) == direction]

    def table(self) -> list[dict]:
        """One row per concept x layer x class, as `--json` prints it."""
        rows = []
        for c, concept in enumerate(self.concepts):
            for li, layer in enumerate(self.layers):
                for i, k in enumerate(self.classes):
                    rows.append(
                        {
                            "concept": concept,
                            "layer": layer,
                            "class": k,
                            "score": round(float(self.scores[c, li, i].mean()), 4),
                            "score_std": round(float(self.scores[c, li, i].std()), 4),
                            "random_score": round(float(self.random_scores[li, i].mean()), 4),
                            "p_value": float(self.p_values[c, li, i]),
                            "p_corrected": float(self.corrected[c, li, i]),
                            "verdict": self.verdict(c, li, i),
                            "cav_accuracy": round(float(self.accuracy[c, li].mean()), 4),
                        }
                    )
        return rows


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, same shape as the input (Holm 1979).

    >>> holm(np.array([0.01, 0.04, 0.03])).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    flat = p_values.ravel()
    order = np.argsort(flat)
    m = len(flat)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * flat[order]).clip(max=1.0)
    out = np.empty_like(flat)
    out[order] = adjusted
    return out.reshape(p_values.shape)


def t_test(scores: np.ndarray, random_scores: np.ndarray) -> float:
    """Two-sided Welch t-test p-value of two lists of scores (`scipy.stats.ttest_ind`
    with equal_var=False, checked by a test; written out because importing scipy.stats
    costs more than a whole fast TCAV run). Lists that are both constant (scores of 0 or
    1 on every run happen at a layer right below the logits) give 1.0 when equal and 0.0
    when not, where the t statistic is undefined."""
    from scipy.special import stdtr

    n1, n2 = len(scores), len(random_scores)
    v1, v2 = scores.var(ddof=1) / n1, random_scores.var(ddof=1) / n2
    difference = scores.mean() - random_scores.mean()
    if v1 + v2 == 0:
        return 1.0 if difference == 0 else 0.0
    t = difference / np.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))  # Welch-Satterthwaite
    return float(2 * stdtr(df, -abs(t)))


def layer_outputs(
    model: nn.Module, images: torch.Tensor, layers: list[str], *, device: Device = "auto"
) -> dict[str, torch.Tensor]:
    """Every layer's output for every image in one pass per chunk:
    (N, 1, 28, 28) -> {layer: (N, D)} flattened, on the CPU."""
    found, _ = activations_and_logits(
        model, images, layers, reduce=lambda a: a.flatten(1), device=device
    )
    return found


def class_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    layers: list[str],
    *,
    device: Device = "auto",
) -> dict[str, torch.Tensor]:
    """Gradient of each image's own class logit w.r.t. each layer's output:
    (N, 1, 28, 28), (N,) -> {layer: (N, D)} flattened, on the CPU.

    One backward pass per chunk serves every image and layer: the sum of the images'
    logits has, w.r.t. image i's activations, the gradient of image i's logit alone
    (eval mode: no batch statistics tie the images together).
    """
    dev = resolve_device(device)
    net = model_on(model, dev)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with evaluating(net, freeze=True), capture(net, layers, detach=False) as acts:
        for start in range(0, len(images), ROWS):
            # the parameters are frozen: the input's flag makes autograd track the layers
            batch = images[start : start + ROWS].to(dev).requires_grad_(True)
            logits = net(batch)  # (n, 10)
            picked = logits.gather(1, labels[start : start + ROWS, None].to(dev)).sum()
            outputs = [acts[name] for name in layers]
            if not all(o.requires_grad for o in outputs):
                raise MnistlensError("the logits do not depend on the chosen layers")
            grads = torch.autograd.grad(picked, outputs)
            for name, grad in zip(layers, grads, strict=True):
                chunks[name].append(grad.flatten(1).cpu())  # (n, D)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def tcav(
    model: nn.Module,
    concepts: dict[str, torch.Tensor],
    randoms: list[torch.Tensor],
    class_images: torch.Tensor,
    class_labels: torch.Tensor,
    layers: list[str],
    method: str = "svm",
    alpha: float = 0.05,
    seed: int = 0,
    progress: bool = False,
    *,
    fixed_null: bool = False,
    device: Device = "auto",
) -> TCAVResult:
    """TCAV scores and their significance (module docstring).

    concepts: name -> (n, 1, 28, 28) concept images; randoms: R + 1 sets of random
    counterexamples (n, 1, 28, 28): sets 1..R are the other side of each concept's R
    CAVs, and run r's random-vs-random CAV is set r against set r + 1 (R >= 2, better 10
    or more: benchmarks/README.md); class_images (N, 1, 28, 28) with their
    class_labels (N,): the images whose logits are read, per class; layers: module
    names; method: "svm" or "mean" (`cav.fit_cav`); alpha: the family-wise error rate
    of the Holm-corrected tests; fixed_null: random set 0 on the positive side of every
    null CAV (tensorflow/tcav's plots with a random_counterpart; kept for the
    benchmark's comparison). -> TCAVResult.
    """
    check_method(method)
    if len(randoms) < 3:
        raise MnistlensError(f"TCAV needs at least 3 random sets (2 runs), got {len(randoms)}")
    if not concepts:
        raise MnistlensError("no concept given")
    for name in layers:
        get_layer(model, name)  # an unknown name lists the model's layers
    classes = sorted(int(k) for k in class_labels.unique())
    names = list(concepts)
    runs = len(randoms) - 1
    # Null run r: random set r against the run's own counterexamples, set r + 1. The
    # positive side changes from run to run, so the null's spread includes how much one
    # random set differs from another; one fixed random "concept" for every run (as in
    # tensorflow/tcav's utils_plot with a random_counterpart) leaves that out, and a
    # fresh random set then passes as a concept too often (benchmarks/README.md).
    null_pairs = [0] * runs if fixed_null else list(range(runs))

    everything = torch.cat([*concepts.values(), *randoms])  # (M, 1, 28, 28)
    acts = layer_outputs(model, everything, layers, device=device)
    grads = class_gradients(model, class_images, class_labels, layers, device=device)
    bounds = np.cumsum([0] + [len(s) for s in [*concepts.values(), *randoms]])

    scores = np.zeros((len(names), len(layers), len(classes), runs))
    random_scores = np.zeros((len(layers), len(classes), runs))
    accuracy = np.zeros((len(names), len(layers), runs))
    steps = tqdm(
        total=len(layers) * (len(names) + 1) * runs,
        desc=f"TCAV ({method} CAVs)",
        disable=not progress,
        unit="CAV",
    )
    with steps:
        for li, layer in enumerate(layers):
            sets = [acts[layer][a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            concept_sets, random_sets = sets[: len(names)], sets[len(names) :]
            vectors = []  # (C + 1) * R CAVs: each concept's R, then the R random ones
            for c in range(len(names) + 1):
                for r in range(runs):
                    positive = concept_sets[c] if c < len(names) else random_sets[null_pairs[r]]
                    cav = fit_cav(positive, random_sets[r + 1], method, seed=seed + r)
                    vectors.append(cav.vector)
                    if c < len(names):
                        accuracy[c, li, r] = cav.accuracy
                    steps.update()
            directions = torch.stack(vectors)  # (V, D)
            for i, k in enumerate(classes):
                derivative = grads[layer][class_labels == k] @ directions.T  # (n_k, V)
                share = (derivative > 0).double().mean(0).numpy()  # (V,)
                table = share.reshape(len(names) + 1, runs)
                scores[:, li, i] = table[:-1]
                random_scores[li, i] = table[-1]
    p_values = np.array(
        [
            [
                [t_test(scores[c, li, i], random_scores[li, i]) for i in range(len(classes))]
                for li in range(len(layers))
            ]
            for c in range(len(names))
        ]
    ).reshape(len(names), len(layers), len(classes))
    return TCAVResult(
        concepts=names,
        layers=list(layers),
        classes=classes,
        scores=scores,
        random_scores=random_scores,
        accuracy=accuracy,
        p_values=p_values,
        corrected=np.apply_along_axis(holm, -1, p_values),  # one family per concept x layer
        alpha=alpha,
        method=method,
        settings={"runs": runs, "seed": seed, "class_images": len(class_images)},
    )
