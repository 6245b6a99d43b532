"""TracIn: the training images whose gradient steps lowered (proponents) or raised
(opponents) the loss of a prediction most (Pruthi et al. 2020, arXiv:2002.08484).

Why it is computed here rather than by Captum's `TracInCPFast.influence`: Captum re-runs
the model over the whole training set on every call (seconds per query for the shipped
MLP, a full training pass for the CNN), while its scores are products of per-training-
image factors that do not depend on the query. The factors are computed once per set of
weights and cached (`passes.build`, `cache.py`); tests check the scores against
`TracInCPFast.influence` itself, with one checkpoint and with several.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from mnistlens.attribution.common import check_images, resolve_target
from mnistlens.influence import cache, passes
from mnistlens.influence.passes import Factors
from mnistlens.influence.snapshots import FINAL_WEIGHTS, Terms, tracin_terms


class TracInResult(NamedTuple):
    proponents: torch.Tensor  # (N, k) int64 training-set indices, most supporting first
    proponent_scores: torch.Tensor  # (N, k) float32, descending
    opponents: torch.Tensor  # (N, k) int64, most opposing first
    opponent_scores: torch.Tensor  # (N, k) float32, ascending (most negative first)
    used: str = FINAL_WEIGHTS  # the checkpoints summed over, in words (`FINAL_WEIGHTS`, ...)


def tracin(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    k: int = 8,
    data_dir: str | os.PathLike | None = None,
    *,
    snapshots: dict | str | os.PathLike | None = None,
    checkpoints: Sequence[dict | str | os.PathLike] | None = None,
    learning_rates: Sequence[float] | None = None,
    batch_size: int = 128,
    cache_dir: str | os.PathLike | None = None,
    train_subset: int | None = None,
    progress: bool = False,
) -> TracInResult:
    """The training images that most support and most oppose each prediction (TracIn).

    TracIn scores training image z for query z' by how much the gradient steps on z
    lowered the loss on z', summed over checkpoints i of training:
    sum_i eta_i grad L(w_i, z) . grad L(w_i, z'). As in Captum's `TracInCPFast` (the
    paper's appendix F) only the final linear layer's weight gradient is used, for which
    the dot product factorizes: (a . a') (g . g'), a = the layer's input, g = softmax -
    onehot = d CrossEntropy / d logits (the bias gradient is left out, as in Captum).
    Positive: a proponent (training on it made the query's target more likely);
    negative: an opponent. (The paper derives eta_i for SGD; with AdamW, which rescales
    each step, the sum is the usual heuristic, as in Captum.)

    With `snapshots` (a model trained with `mnistlens train --snapshots K`), the sum runs
    over the K snapshots of its training, each weighted by its learning rate times the
    epochs it stands for (`snapshots.py`). Without any (the default, or a checkpoint
    that has none), it has one term, the model's own weights with eta 1: TracIn-CP with a
    single checkpoint, the approximation the paper and Captum document. At the final
    weights well-learned training images have near-zero loss gradients, so proponents
    and opponents lean to the hard, atypical or mislabeled ones. `result.used` says which.

    Args:
        model: a classifier ending in an nn.Linear (`analyze(model).parameter_layers[-1]`).
        images: (N, 1, 28, 28) float32 in [0, 1].
        target: the class whose loss is traced: None = the model's prediction, an int,
            or (N,) classes.
        k: proponents and opponents per image, 1 <= k <= training images.
        data_dir: MNIST root.
        snapshots: where the model came from: the metadata `load_model` returned with it,
            or the checkpoint's path or shipped name; its training snapshots are used
            when it has them. The last snapshot must be the model's own weights.
        checkpoints: instead, weights saved during training: state_dicts, mnistlens
            checkpoints or their file paths, of the same architecture.
        learning_rates: one per checkpoint (default 1 each). batch_size: query chunk.
        cache_dir, train_subset, progress: as for `training_index`; the training-set
            factors of each set of weights are cached like the index, keyed by them.

    Returns TracInResult(proponents (N, k) int64, proponent_scores (N, k) descending,
    opponents (N, k) int64, opponent_scores (N, k) ascending, used: str). Each snapshot
    or checkpoint other than the model's own weights costs one pass over the training
    set the first time (then cached on disk).

        >>> model, meta = mnistlens.load_model("cnn.pt")
        >>> result = tracin(model, images[:1], k=8, snapshots=meta)
        >>> train_labels[result.proponents[0]], result.used  # mostly the predicted digit
    """
    images = check_images(images)
    options = dict(snapshots=snapshots, checkpoints=checkpoints, learning_rates=learning_rates)
    options.update(batch_size=batch_size, cache_dir=cache_dir, train_subset=train_subset)
    chunks, terms = _scores(model, images, target, data_dir, k=k, progress=progress, **options)
    parts = []
    for scores in chunks:
        top, bottom = scores.topk(k, dim=1), scores.topk(k, dim=1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
    if not parts:
        empty = torch.empty(0, k, dtype=torch.int64)
        return TracInResult(empty, empty.float(), empty, empty.float(), terms.used)
    return TracInResult(*(torch.cat(column) for column in zip(*parts, strict=True)), terms.used)


def tracin_scores(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    data_dir: str | os.PathLike | None = None,
    **options,
) -> torch.Tensor:
    """TracIn scores of every training image for every query: (N, 1, 28, 28) -> (N, M).

    The full matrix behind `tracin` (same options, without k, over the same checkpoints
    as `tracin(...).used` names); it takes N x M floats (240 kB per query for the 60,000
    training images), so ask `tracin` for top-k lists.
    """
    images = check_images(images)
    chunks = list(_scores(model, images, target, data_dir, **options)[0])
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def _scores(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None,
    data_dir: str | os.PathLike | None,
    snapshots: dict | str | os.PathLike | None = None,
    checkpoints: Sequence | None = None,
    learning_rates: Sequence[float] | None = None,
    batch_size: int = 128,
    cache_dir: str | os.PathLike | None = None,
    train_subset: int | None = None,
    progress: bool = False,
    k: int | None = None,
) -> tuple[Iterator[torch.Tensor], Terms]:
    """Check everything, get the training-set factors of every term; -> (scores (n, M)
    per chunk of queries, the terms)."""
    passes.check_batch_size(batch_size)
    head = passes.head_layer(model)
    terms = tracin_terms(model, checkpoints, learning_rates, snapshots)
    place = cache.Place.of(data_dir, train_subset, cache_dir)
    if k is not None:
        passes.check_k(k, place.size)
    target = resolve_target(model, images, target)  # the final model's prediction if None
    own = cache.model_key(model)  # a pass at the model's own weights also builds its index
    factors = [_factors(m, key, head, place, progress, key == own) for m, key in terms.models]
    return _chunks(images, target, head, terms, factors, batch_size), terms


def _chunks(
    images: torch.Tensor,
    target: torch.Tensor,
    head: str,
    terms: Terms,
    factors: list[Factors],
    batch_size: int,
) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        chunk, labels = images[start : start + batch_size], target[start : start + batch_size]
        scores = torch.zeros(len(chunk), len(factors[0].inputs))  # (n, M)
        for (model, _), train, rate in zip(terms.models, factors, terms.rates, strict=True):
            inputs, logits = passes.head_pass(model, chunk, head)  # (n, H), (n, C)
            errors = passes.loss_gradients(logits, labels)  # (n, C)
            scores += rate * (inputs @ train.inputs.T) * (errors @ train.errors.T)
        yield scores


def _factors(
    model: nn.Module,
    weights: str,
    head: str,
    place: cache.Place,
    progress: bool,
    with_index: bool,
) -> Factors:
    """The TracIn training-set factors of one set of weights: memory, disk, or a pass
    (which, `with_index`, also builds the default nearest-neighbour index)."""
    key = place.key(cache.TRACIN_FORMAT, weights, head)
    found = cache.lookup(
        place,
        cache.TRACIN_FORMAT,
        "tracin",
        head,
        key,
        cache.factors_problem,
        lambda payload, labels, path: Factors(payload["inputs"], payload["errors"], key, "disk"),
    )
    if found is not None:
        return found
    layer = passes.index_layer(model, None) if with_index else None
    if layer is not None and passes.index_bytes(model, layer, place.size) > passes.MAX_INDEX_BYTES:
        layer = None
    return passes.build(model, weights, layer, place, progress)[1]
