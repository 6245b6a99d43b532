"""One digit, moved and turned: does the model keep its answer? (an invariance strip)

A stress test says how a model fares on 10,000 changed digits; this says it for the
digit in front of you: shifted copies in four directions, turned copies both ways,
grown, shrunk, thinned and thickened, each with the model's answer and probability.

    >>> strip = invariance(cnn, image)               # image: (1, 1, 28, 28)
    >>> [(c["label"], c["prediction"]) for c in strip.changes][:3]
    [('original', 7), ('right 2 px', 7), ('right 4 px', 7)]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnistlens.device import Device
from mnistlens.perturb import transforms as T

# (label, change): what the strip shows, in order; each change (1, 1, 28, 28) -> same
STRIP = (
    ("right 2 px", lambda x: T.translate(x, 2, "right")),
    ("right 4 px", lambda x: T.translate(x, 4, "right")),
    ("left 4 px", lambda x: T.translate(x, 4, "left")),
    ("up 4 px", lambda x: T.translate(x, 4, "up")),
    ("down 4 px", lambda x: T.translate(x, 4, "down")),
    ("turned 15° left", lambda x: T.rotate(x, -15)),
    ("turned 30° left", lambda x: T.rotate(x, -30)),
    ("turned 15° right", lambda x: T.rotate(x, 15)),
    ("turned 30° right", lambda x: T.rotate(x, 30)),
    ("shrunk to 0.7", lambda x: T.scale(x, 0.7)),
    ("grown to 1.3", lambda x: T.scale(x, 1.3)),
    ("thinner", lambda x: T.thickness(x, -1)),
    ("thicker", lambda x: T.thickness(x, 2)),
)


@dataclass
class Strip:
    """The changed copies of one digit and what the model says about each.

    images (K, 1, 28, 28), the first the digit itself; `changes` one dict per copy:
    {"label", "prediction", "probability" (of that prediction), "kept" (the same
    answer as for the original)}."""

    images: torch.Tensor
    changes: list[dict]

    @property
    def n_kept(self) -> int:
        """How many changed copies (not the original) keep the original's answer."""
        return sum(c["kept"] for c in self.changes[1:])

    @property
    def kept(self) -> float:
        """Share of the changed copies (not the original) with the original's answer."""
        return self.n_kept / max(1, len(self.changes) - 1)


def invariance(model: nn.Module, image: torch.Tensor, *, device: Device = "auto") -> Strip:
    """The strip for one digit: (1, 1, 28, 28) or (1, 28, 28) -> Strip of 1 + len(STRIP)."""
    from mnistlens.data import check_images
    from mnistlens.metrics import predict_logits

    if image.dim() == 3:
        image = image.unsqueeze(0)
    image = check_images(image)[:1]
    images = torch.cat([image] + [change(image) for _, change in STRIP])  # (K, 1, 28, 28)
    probs = predict_logits(model, images, device=device).softmax(dim=1)
    top, predicted = probs.max(dim=1)
    labels = ["original"] + [label for label, _ in STRIP]
    changes = [
        {
            "label": label,
            "prediction": int(predicted[k]),
            "probability": float(top[k]),
            "kept": bool(predicted[k] == predicted[0]),
        }
        for k, label in enumerate(labels)
    ]
    return Strip(images, changes)
