"""Does a map explain the model? Measures of an explanation, not of the classifier.

A heatmap can look convincing and still say nothing about the model. These tests
ask the model itself:

- completeness: do the attributions add up to the score change they claim to explain?
- deletion / insertion (Petsiuk et al. 2018, RISE, arXiv:1806.07421): remove the pixels
  a map ranks highest first and watch the class probability fall (fast fall = low area
  under the curve = faithful map); or insert them into a blank image and watch it rise
  (high area = faithful). A random ranking is the reference to beat.
- model-randomization sanity check (Adebayo et al. 2018, arXiv:1810.03292): re-initialize
  the layers from the top down; a map that barely changes while the model is destroyed
  is not explaining the model (guided backprop is the known offender).

One file per family; all functions take tensors and return tensors (`plots.py` draws them):
`completeness.py`, `curves.py` (deletion/insertion and `Scores`), `sanity.py`
(randomization checks and the verdict), `captum_metrics.py` (infidelity,
max-sensitivity), `methods.py` (all of them for several methods on the same images).
"""

from mnistlens.faithfulness.captum_metrics import infidelity, sensitivity_max
from mnistlens.faithfulness.completeness import completeness_error, method_completeness_error
from mnistlens.faithfulness.curves import (
    MODES,
    Scores,
    area_under_curve,
    perturbation_curve,
    random_maps,
    random_reference,
    score_maps,
)
from mnistlens.faithfulness.methods import compare_methods, score_methods
from mnistlens.faithfulness.sanity import (
    INK,
    SANITY_RULE,
    SANITY_THRESHOLD,
    data_randomization_check,
    randomization_check,
    sanity_verdict,
)

__all__ = [
    "INK",
    "MODES",
    "SANITY_RULE",
    "SANITY_THRESHOLD",
    "Scores",
    "area_under_curve",
    "compare_methods",
    "completeness_error",
    "data_randomization_check",
    "infidelity",
    "method_completeness_error",
    "perturbation_curve",
    "random_maps",
    "random_reference",
    "randomization_check",
    "sanity_verdict",
    "score_maps",
    "score_methods",
    "sensitivity_max",
]
