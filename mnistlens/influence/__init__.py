"""Example-based explanations: "it is a 4 because it looks like these 4s".

Two ways to point at the training images behind a prediction:

- `nearest_training_images` (`neighbours.py`): the training images the network
  *represents* most like the query, by cosine similarity of their activations at the
  last hidden layer (the deep k-nearest-neighbour view, Papernot & McDaniel 2018,
  arXiv:1803.04765). It answers "what does this digit look like to the model?".
- `tracin` (`tracin.py`): TracIn (Pruthi et al. 2020, arXiv:2002.08484): the training
  images whose gradient steps lowered the loss of the prediction most (proponents) or
  raised it most (opponents). It answers "which training examples pushed the model
  towards this?". It sums over the training snapshots a checkpoint keeps (`mnistlens
  train --snapshots K`), else uses the final weights alone (`snapshots.py`).

Both need one forward pass of the model over the 60,000 training images (`passes.py`);
after it, a query is a few matrix products. The pass is done once per set of weights
and cached in memory and on disk (`cache.py`, `default_cache_dir()`), keyed by the
SHA-256 of the weights, the layer and the training data's checksum.

    >>> index = training_index(model)                      # once per model, then cached
    >>> near = nearest_training_images(index, model, images[:1], k=8)
    >>> near.indices.shape, near.similarities.shape        # (1, 8), most similar first
    >>> result = tracin(model, images[:1], k=8, snapshots=meta)  # meta from load_model
    >>> result.proponents, result.opponents, result.used   # used: which checkpoints
"""

from mnistlens.influence.cache import (
    FORMAT_VERSION,
    INDEX_FORMAT,
    TRACIN_FORMAT,
    clear_memory_cache,
    default_cache_dir,
    model_key,
)
from mnistlens.influence.neighbours import Neighbours, nearest_training_images, training_index
from mnistlens.influence.passes import MAX_INDEX_BYTES, PIXELS, TrainingIndex
from mnistlens.influence.snapshots import FINAL_WEIGHTS
from mnistlens.influence.tracin import TracInResult, tracin, tracin_scores

__all__ = [
    "FINAL_WEIGHTS",
    "FORMAT_VERSION",
    "INDEX_FORMAT",
    "MAX_INDEX_BYTES",
    "PIXELS",
    "TRACIN_FORMAT",
    "Neighbours",
    "TracInResult",
    "TrainingIndex",
    "clear_memory_cache",
    "default_cache_dir",
    "model_key",
    "nearest_training_images",
    "tracin",
    "tracin_scores",
    "training_index",
]
