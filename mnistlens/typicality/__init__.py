"""Is it a digit at all? A verdict on every input before it is explained.

`digit_like(model, images)` scores how typical each image's features are of MNIST
digits (pytorch-ood's detectors, fitted once per set of weights) and flags the least
typical, calibrated so that about 5% of real digits are flagged at most. `probes` builds
pictures that are not MNIST digits, `scoreboard` measures the detectors on them.
"""

from mnistlens.typicality.detectors import Spec, default_spec
from mnistlens.typicality.verdict import (
    DigitLike,
    Fit,
    Unjudged,
    digit_like,
    digit_like_or_why,
    fit_detector,
    verdict_line,
    warning_text,
)

__all__ = [
    "DigitLike",
    "Fit",
    "Spec",
    "Unjudged",
    "default_spec",
    "digit_like",
    "digit_like_or_why",
    "fit_detector",
    "verdict_line",
    "warning_text",
]
