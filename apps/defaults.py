"""What each page shows before its user chooses anything: the first view of the explorer.

The sidebar and the pages start from these values; warm.py computes exactly these views
when the server starts, so the first visit of a page finds them in the caches. A value
changed here changes both.
"""

from __future__ import annotations

MODEL = "cnn.pt"  # the sidebar's model
INDEX = 42  # the sidebar's test image (a 4)

# Explain a digit: these methods, where they can explain the model and pass its sanity
# check (all three do on the shipped CNN; guided backprop fails it), with these options.
EXPLAIN_CANDIDATES = ("saliency", "integrated_gradients", "grad_cam")
EXPLAIN_TARGET = "predicted"
EXPLAIN_BASELINE = "black"
EXPLAIN_STEPS = 50

# Per-digit maps.
CLASS_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "grad_cam")
CLASS_IMAGES = 500

# Trust. Guided backprop is in because it fails: the page shows what failing looks like.
TRUST_METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "guided_backprop",
    "grad_cam",
)
TRUST_IMAGES = 100

# Compare models: these, where their checkpoints exist (else the first two offered).
COMPARE_MODELS = ("linear", "mlp", "lenet", "cnn")
# Its stress examples: this transform, at its hardest severity.
COMPARE_TRANSFORM = "translate"
