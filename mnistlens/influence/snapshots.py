"""Which weights TracIn sums over, and how much each counts.

TracIn-CP (Pruthi et al. 2020, sec. 3.2) replaces the sum over every training step by a
sum over a few checkpoints w_i of the training, each weighted by the step size eta_i of
the training it stands for: score(z, z') = sum_i eta_i grad L(w_i, z) . grad L(w_i, z').
The checkpoints come from, in this order:

- `snapshots=`: the training snapshots a checkpoint keeps (`mnistlens train --snapshots
  K`), given by the metadata `load_model` returned or the checkpoint's path or name. Each
  snapshot holds the mean learning rate of the steps since the previous one; eta_i is
  that rate times the epochs since the previous snapshot, because every training image
  was visited once per epoch. A checkpoint without snapshots gives the next case;
- `checkpoints=` and `learning_rates=`: weights the caller saved, with their rates;
- neither: the model's own, final weights with eta = 1 (`FINAL_WEIGHTS`), the
  single-checkpoint approximation the paper and Captum document.

Snapshots keep every layer, not only the final linear layer that TracInCPFast
differentiates: its gradient there is (softmax - onehot) x (the layer's input), and that
input is computed by all the earlier layers *at the checkpoint*. Old final layers on top
of the final features would be a model that never existed during training.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from mnistlens.errors import MnistlensError, first_line
from mnistlens.influence.cache import model_key
from mnistlens.loading.checkpoint import FORMAT as CHECKPOINT_FORMAT
from mnistlens.loading.checkpoint import read_checkpoint
from mnistlens.paths import resolve_checkpoint

FINAL_WEIGHTS = "the final weights only"  # `TracInResult.used` without snapshots/checkpoints


class Terms(NamedTuple):
    """The sum's terms: the model at each checkpoint with its `model_key`, the rates
    eta_i, and what was used, in words (for captions)."""

    models: list[tuple[nn.Module, str]]
    rates: list[float]
    used: str


def tracin_terms(
    model: nn.Module,
    checkpoints: Sequence | dict | str | os.PathLike | None = None,
    learning_rates: Sequence[float] | None = None,
    snapshots: dict | str | os.PathLike | None = None,
) -> Terms:
    """The checkpoints and rates TracIn sums over (see the module docstring)."""
    if snapshots is not None:
        if checkpoints is not None or learning_rates is not None:
            raise MnistlensError(
                "pass snapshots (they carry their learning rates) or checkpoints with "
                "learning_rates, not both"
            )
        record, where = _snapshot_record(snapshots)
        if record is not None:
            return _snapshot_terms(model, record, where)
    if checkpoints is None:
        models, used = [(model, model_key(model))], FINAL_WEIGHTS
    else:
        models = _checkpoint_models(model, checkpoints)
        used = f"{len(models)} given checkpoint{'s' if len(models) > 1 else ''}"
    rates = [1.0] * len(models) if learning_rates is None else [float(r) for r in learning_rates]
    if len(rates) != len(models):
        raise MnistlensError(
            f"{len(rates)} learning rates for {len(models)} checkpoints; give one per checkpoint"
        )
    return Terms(models, rates, used)


def _snapshot_record(source) -> tuple[dict | None, str]:
    """The "snapshots" entry of a checkpoint's metadata (None if it has none), and where
    it comes from (for messages)."""
    if isinstance(source, (str, os.PathLike)):
        path = resolve_checkpoint(source)
        metadata, where = read_checkpoint(path).get("metadata"), str(path)
    elif isinstance(source, dict):
        # A raw checkpoint (read_checkpoint) holds its metadata; the metadata `load`
        # returns names the format too, but holds no weights of its own.
        raw = source.get("format") == CHECKPOINT_FORMAT and "state_dict" in source
        metadata = source.get("metadata") if raw else source
        where = str(source.get("path") or "the given checkpoint")
    else:
        raise MnistlensError(
            f"snapshots is a {type(source).__name__}; pass the metadata load_model returned "
            "with the model, or the checkpoint's path or shipped name"
        )
    return (metadata.get("snapshots") if isinstance(metadata, dict) else None), where


def _snapshot_terms(model: nn.Module, record, where: str) -> Terms:
    epochs, rates, states = _check_record(record, where)
    own = model_key(model)
    if model_key(states[-1]) != own:  # the last snapshot is taken after the last step
        raise MnistlensError(
            f"the last training snapshot of {where} (epoch {epochs[-1]}) holds other weights "
            "than this model; pass the metadata or checkpoint this model was loaded from"
        )
    models = [
        _with_weights(model, state, f"snapshot {i} (epoch {epochs[i]}) of {where}")
        for i, state in enumerate(states[:-1])
    ]
    models.append((model, own))
    spans = [b - a for a, b in zip([0, *epochs], epochs, strict=False)]  # epochs per snapshot
    etas = [rate * span for rate, span in zip(rates, spans, strict=True)]
    s = "s" if len(epochs) > 1 else ""
    used = f"{len(epochs)} training snapshot{s} (epoch{s} {', '.join(map(str, epochs))})"
    return Terms(models, etas, used)


def _check_record(record, where: str) -> tuple[list[int], list[float], list[dict]]:
    """(epochs, learning rates, state_dicts) of a snapshot record, checked: a checkpoint
    is data from a file, and a malformed one must say so rather than fail deep inside."""
    epochs = rates = states = None
    if isinstance(record, dict):
        epochs, rates, states = (record.get(k) for k in ("epochs", "learning_rates", "state_dicts"))
    if not all(isinstance(f, list) for f in (epochs, rates, states)) or not (
        len(epochs) == len(rates) == len(states) >= 1
    ):
        problem = "no lists epochs, learning_rates and state_dicts of one length"
    elif any(isinstance(e, bool) or not isinstance(e, int) for e in epochs) or not all(
        a < b for a, b in zip([0, *epochs], epochs, strict=False)
    ):
        problem = f"epochs {epochs} are not increasing positive integers"
    elif not all(isinstance(r, (int, float)) and math.isfinite(r) and r >= 0 for r in rates):
        problem = f"learning rates {rates} are not finite non-negative numbers"
    elif not all(
        isinstance(s, dict) and all(isinstance(v, torch.Tensor) for v in s.values()) for s in states
    ):
        problem = "its state_dicts are not dicts of tensors"
    else:
        return epochs, [float(r) for r in rates], states
    raise MnistlensError(
        f"the training snapshots of {where} are malformed ({problem}); retrain with "
        "`mnistlens train --snapshots K`"
    )


def _checkpoint_models(model: nn.Module, checkpoints) -> list[tuple[nn.Module, str]]:
    """(model with those weights, their key) per checkpoint the caller gave."""
    if isinstance(checkpoints, (str, os.PathLike, dict)):
        checkpoints = [checkpoints]
    result = []
    for i, item in enumerate(checkpoints):
        if isinstance(item, (str, os.PathLike)):
            state = _state_from_file(item)
        elif isinstance(item, dict):
            state = item["state_dict"] if item.get("format") == CHECKPOINT_FORMAT else item
        else:
            raise MnistlensError(
                f"checkpoint {i} is a {type(item).__name__}; pass state_dicts, mnistlens "
                "checkpoints or their file paths"
            )
        result.append(_with_weights(model, state, f"checkpoint {i}"))
    if not result:
        raise MnistlensError("checkpoints is empty; pass None to use the model's own weights")
    return result


def _with_weights(model: nn.Module, state: dict, what: str) -> tuple[nn.Module, str]:
    """A copy of `model` holding `state` (the model itself is never touched), its key."""
    at_checkpoint = copy.deepcopy(model)
    try:
        at_checkpoint.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise MnistlensError(
            f"{what} does not fit this model ({first_line(err)}); pass checkpoints of the "
            "same architecture"
        ) from None
    return at_checkpoint.eval(), model_key(at_checkpoint)


def _state_from_file(path: str | os.PathLike) -> dict:
    """A state_dict from an mnistlens checkpoint or a plain state_dict file, as data only."""
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused pickles, zip errors, text files ...
        raise MnistlensError(
            f"cannot read checkpoint {path} as data ({first_line(err)}); pass a state_dict "
            "or a checkpoint written by `mnistlens train`"
        ) from None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return read_checkpoint(path)["state_dict"]  # its version checks and messages
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    raise MnistlensError(f"{path} holds neither a state_dict nor a mnistlens checkpoint")
