"""Concept activation vectors (CAVs): the direction of a concept in a layer's activations.

A CAV (Kim et al. 2018, arXiv:1711.11279, section 3.2) is the normal of a linear
boundary between a layer's activations for concept images and for random
counterexamples, pointing towards the concept. Two ways to get it:

- "svm" (the paper's and `captum.concept.DefaultClassifier`'s): a linear SVM trained
  by scikit-learn's SGDClassifier (hinge loss, alpha=0.01, as Captum's default), its
  weight vector normalized. The held-out accuracy says whether the concept is
  linearly separable from random at this layer at all.
- "mean" (fast; the difference of the two class means, as captum#1619 proposes and
  Martin & Weller 2019, "Shedding light on CAV robustness", found as consistent): no
  training, one subtraction. `benchmarks/bench_concepts.py` measures how often the two
  agree and how much time the fast one saves.

    >>> cav = fit_cav(concept_acts, random_acts, method="svm", seed=0)
    >>> cav.vector.shape, cav.accuracy        # (D,), held-out accuracy in [0, 1]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from mnistlens.errors import MnistlensError

METHODS = ("svm", "mean")
HELD_OUT = 0.33  # share of each set kept aside to measure the CAV's accuracy (Captum's)


@dataclass(frozen=True)
class CAV:
    """vector: (D,) unit vector towards the concept; accuracy: how well it separates
    held-out concept from random activations (0.5 = not at all)."""

    vector: torch.Tensor
    accuracy: float


def check_method(method: str) -> str:
    if method not in METHODS:
        raise MnistlensError(f"unknown CAV method {method!r}; choose {' or '.join(METHODS)}")
    return method


def _split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    cut = max(1, int(round(n * HELD_OUT)))
    return order[cut:], order[:cut]  # train, held out


def fit_cav(concept: torch.Tensor, random: torch.Tensor, method: str = "svm", seed: int = 0) -> CAV:
    """The CAV separating `concept` from `random` activations.

    concept: (N, ...) and random: (M, ...) activations of one layer (flattened here to
    (N, D)); method: "svm" or "mean" (module docstring); seed fixes the held-out split
    and the SGD's shuffling. -> CAV with a (D,) unit vector, float32 on the CPU.
    """
    check_method(method)
    a = concept.flatten(1).double().cpu().numpy()  # (N, D)
    b = random.flatten(1).double().cpu().numpy()  # (M, D)
    if len(a) < 2 or len(b) < 2:
        raise MnistlensError("a CAV needs at least 2 concept and 2 random images")
    rng = np.random.default_rng(seed)
    (a_fit, a_out), (b_fit, b_out) = _split(len(a), rng), _split(len(b), rng)
    x_fit = np.concatenate([a[a_fit], b[b_fit]])  # (n_fit, D)
    y_fit = np.r_[np.ones(len(a_fit)), np.zeros(len(b_fit))]
    x_out = np.concatenate([a[a_out], b[b_out]])  # (n_out, D)
    y_out = np.r_[np.ones(len(a_out)), np.zeros(len(b_out))]
    if method == "mean":
        direction = x_fit[y_fit == 1].mean(0) - x_fit[y_fit == 0].mean(0)  # (D,)
        # the boundary halfway between the two means
        middle = (x_fit[y_fit == 1].mean(0) + x_fit[y_fit == 0].mean(0)) / 2 @ direction
        predicted = x_out @ direction > middle
    else:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import SGDClassifier

        svm = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)
        with warnings.catch_warnings():
            # a separable pair stops on max_iter now and then; the direction is still good
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(x_fit, y_fit)
        direction = svm.coef_[0]  # (D,), positive side = label 1 = the concept
        predicted = svm.predict(x_out) == 1
    norm = np.linalg.norm(direction)
    vector = direction / norm if norm > 0 else direction
    accuracy = float((predicted == (y_out == 1)).mean())
    return CAV(torch.from_numpy(vector).float(), accuracy)
