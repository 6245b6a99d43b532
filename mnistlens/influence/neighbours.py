"""Nearest training images: "it is a 4 because, to the network, it looks like these 4s".

The training images the network *represents* most like the query, by cosine similarity
of their activations at the last hidden layer: the deep k-nearest-neighbour view
(Papernot & McDaniel 2018, arXiv:1803.04765). The training images' activations are read
in one pass per model (`passes.build`) and cached; a query is one matrix product.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mnistlens.attribution.common import check_images
from mnistlens.errors import MnistlensError
from mnistlens.influence import cache, passes
from mnistlens.influence.passes import PIXELS, TrainingIndex
from mnistlens.internals.activations import layer_activations


class Neighbours(NamedTuple):
    indices: torch.Tensor  # (N, k) int64 training-set indices, most similar first
    similarities: torch.Tensor  # (N, k) float32 cosine similarities in [-1, 1]


def training_index(
    model: nn.Module,
    data_dir: str | os.PathLike | None = None,
    layer: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    *,
    train_subset: int | None = None,
) -> TrainingIndex:
    """Unit-length activations of every training image at `layer`, built once per model.

    Args:
        model: any classifier of (N, 1, 28, 28) images.
        data_dir: MNIST root (default: $MNISTLENS_DATA, else the user cache).
        layer: default: the last hidden layer (`graph.analyze(model).hidden_layers[-1]`),
            or "pixels" for a model without one. Conv outputs are flattened.
        cache_dir: where index files go; default `default_cache_dir()`.
        progress: show a progress bar during the training-set pass.
        train_subset: use only the first M training images (tests, quick looks).

    Returns a TrainingIndex: features (M, D) float32 unit rows, labels (M,).
    Looked up in memory, then on disk, else built by one pass over the training set
    (seconds for an MLP, longer for a CNN: benchmarks/README.md). A build also stores the
    TracIn factors of the same pass, so `tracin` on this model needs no pass of its own.

        >>> index = training_index(model)
        >>> index.features.shape, index.layer
        (torch.Size([60000, 128]), 'relu_fc1')
    """
    layer = passes.index_layer(model, layer)
    place = cache.Place.of(data_dir, train_subset, cache_dir)
    weights = cache.model_key(model)
    key = place.key(cache.INDEX_FORMAT, weights, layer)
    found = cache.lookup(
        place,
        cache.INDEX_FORMAT,
        "index",
        layer,
        key,
        cache.index_problem,
        lambda payload, labels, path: TrainingIndex(
            payload["features"], labels, layer, weights, key, "disk", path
        ),
    )
    if found is not None:
        return found
    passes.check_index_size(model, layer, place.size)
    index, _ = passes.build(model, weights, layer, place, progress)
    return index


@torch.no_grad()
def nearest_training_images(
    index: TrainingIndex,
    model: nn.Module,
    images: torch.Tensor,
    k: int = 8,
    batch_size: int = 256,
) -> Neighbours:
    """The k training images most similar to each image, at the index's layer.

    Cosine similarity of activations: one matrix product (N, D) @ (D, M), in chunks of
    `batch_size` images so memory stays at batch_size x M floats.

    Args:
        index: from `training_index(model)` (same weights, else an error).
        images: (N, 1, 28, 28) float32 in [0, 1].
        k: neighbours per image, 1 <= k <= len(index).

    Returns Neighbours(indices (N, k) int64 into the training set, similarities (N, k)),
    most similar first. The images: `data.load_mnist("train")[0][indices]`.
    """
    passes.check_batch_size(batch_size)
    if not isinstance(index, TrainingIndex):
        raise MnistlensError(
            f"index must be a TrainingIndex from training_index(model), got {type(index).__name__}"
        )
    images = check_images(images)
    k = passes.check_k(k, len(index))
    if index.layer != PIXELS and cache.model_key(model) != index.model_key:
        raise MnistlensError(
            "this index was built for other weights than this model's; "
            "build it with training_index(model)"
        )
    found, similar = [torch.empty(0, k, dtype=torch.int64)], [torch.empty(0, k)]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if index.layer == PIXELS:
            query = chunk.flatten(1)  # (n, 784)
        else:
            query = layer_activations(model, chunk, index.layer).flatten(1)  # (n, D)
        scores = F.normalize(query.float(), dim=1) @ index.features.T  # (n, M)
        top = scores.topk(k, dim=1)
        found.append(top.indices)
        similar.append(top.values)
    return Neighbours(torch.cat(found), torch.cat(similar))
