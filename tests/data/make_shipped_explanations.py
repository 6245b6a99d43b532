"""Record what mnistlens shows for the shipped models.

    python tests/data/make_shipped_explanations.py OUT.json

For each shipped model, every applicable method on test digits 0 and 42
(`explain(..., measure=True)`): each map's sum and L1 norm, its deletion and insertion
areas and its completeness error, and the model's logits. tests/test_unchanged.py
compares the library with `shipped_explanations.json`, written by this script at commit
a052042 (before the package was regrouped into folders). Write it again only when a
change of what users see is meant, and say so in the commit.
"""

import json
import sys

import mnistlens
from mnistlens import attribution as A
from mnistlens.data import load_mnist
from mnistlens.explain import explain
from mnistlens.metrics import predict_logits

DIGITS = [0, 42]
MODELS = ["linear", "mlp", "cnn"]


def record() -> dict:
    images, _ = load_mnist("test")
    x = images[DIGITS]
    out = {}
    for name in MODELS:
        model, _ = mnistlens.load_model(f"{name}.pt")
        result = explain(model, x, A.applicable_methods(model), measure=True)
        for method, maps in result.maps.items():
            scores = result.scores[method]
            error = scores.completeness_error
            out[f"{name}/{method}"] = {
                "sum": maps.flatten(1).sum(1).tolist(),
                "l1": maps.flatten(1).abs().sum(1).tolist(),
                "deletion_auc": scores.deletion_auc.tolist(),
                "insertion_auc": scores.insertion_auc.tolist(),
                "completeness_error": None if error is None else error.tolist(),
            }
        out[f"{name}/logits"] = predict_logits(model, x).tolist()
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(record(), f, indent=0)
