"""What would change its mind? Counterfactual and contrastive explanations.

- `search.py`: `counterfactuals(model, images, target)` for a batch: the smallest change
  that makes the model say `target`, plausible in "proto" mode (guided by an
  autoencoder's prototypes), plain elastic net in "plain" mode, and CEM's pertinent
  negatives (ink to add) and positives (ink to keep).
- `prototypes.py`: the shipped autoencoder, the codes of the training digits, and each
  image's prototype of its target class.

    >>> from mnistlens.counterfactual import counterfactuals
    >>> found = counterfactuals(model, images[:8])      # each to its runner-up class
    >>> found.images.shape, found.valid, found.l1
"""

from mnistlens.counterfactual.prototypes import load_autoencoder, prototypes, training_codes
from mnistlens.counterfactual.search import MODES, Counterfactuals, counterfactuals, runner_up

__all__ = [
    "MODES",
    "Counterfactuals",
    "counterfactuals",
    "load_autoencoder",
    "prototypes",
    "runner_up",
    "training_codes",
]
