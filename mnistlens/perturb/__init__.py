"""Change the digit, watch the answer: what moves a model's prediction.

- `transforms.py`: controlled changes with a severity (translation, rotation, scale,
  shear, stroke thickness, an occluding band), batched and deterministic.

Stress tests (accuracy per model, change and severity) and counterfactuals (the smallest
plausible change that changes the answer) are to come here.
"""
