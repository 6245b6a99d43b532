"""Comparing models: which is better, significantly or not, and how they differ.

- `stats.py`: the numbers (accuracy with Wilson intervals, McNemar's exact test per
  pair, calibration, speed, the images they disagree on);
- `maps.py`: explanations side by side (several models on the same digits, and the
  images one model gets right and another wrong);
- `figures.py`: the comparison's figures (matplotlib);
- `report.py`: the Markdown report (`docs/architectures.md`);
- `pipeline.py`: all of it in one call, `run(models, ...)`, what `mnistlens compare`
  and the explorer's Compare page do.

    >>> from mnistlens import comparison
    >>> report = comparison.run(comparison.load_models(["mlp.pt", "cnn.pt"]), out="cmp/")
"""

from mnistlens.comparison.pipeline import check_pair, load_models, run

__all__ = ["check_pair", "load_models", "run"]
