"""Change the digit, watch the answer: what moves a model's prediction.

- `transforms.py`: controlled changes with a severity (translation, rotation, scale,
  shear, stroke thickness, elastic deformation, an occluding band), batched and
  deterministic.
- `corruptions.py`: MNIST-C's 15 corruptions (noise, blur, fog, lines, edges, ...).
- `registry.py`: every change by name, with the severities a stress test sweeps.
- `stress.py`: accuracy per model x change x severity (`evaluate`), and the gap of a
  pair of models as each change grows.
- `normalize.py`: the opposite changes: re-centre, deslant, rescale a digit, and give it
  a typical stroke width.
- `figures.py`: the severity curves, the corruption heatmap, the examples.
- `pipeline.py`: all of it as `mnistlens stress` runs it (`run`).

The smallest plausible change that changes the answer (counterfactuals) has its own
room, `mnistlens.counterfactual`.
"""

from mnistlens.perturb.pipeline import default_pairs, run
from mnistlens.perturb.registry import (
    Transform,
    get_transform,
    list_transforms,
    parse_severities,
    resolve_transforms,
)
from mnistlens.perturb.stress import StressResult, evaluate

__all__ = [
    "StressResult",
    "Transform",
    "default_pairs",
    "evaluate",
    "get_transform",
    "list_transforms",
    "parse_severities",
    "resolve_transforms",
    "run",
]
