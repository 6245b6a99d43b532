"""Concepts: does the idea of a closed loop push the model towards 9? (TCAV)

sets.py (built-in concept images drawn by code, random counterexamples, your own
pictures), cav.py (concept activation vectors: linear SVM or mean difference),
tcav.py (scores per class and layer, tested against random), pipeline.py (`run`: what
`mnistlens concepts` and the explorer's Concepts page do), figures.py.
"""

from mnistlens.concepts.cav import CAV, fit_cav
from mnistlens.concepts.pipeline import default_layers, run
from mnistlens.concepts.sets import (
    concept_set,
    folder_set,
    list_concepts,
    picture_set,
    random_set,
)
from mnistlens.concepts.tcav import TCAVResult, holm, tcav

__all__ = [
    "CAV",
    "TCAVResult",
    "concept_set",
    "default_layers",
    "fit_cav",
    "folder_set",
    "holm",
    "list_concepts",
    "picture_set",
    "random_set",
    "run",
    "tcav",
]
