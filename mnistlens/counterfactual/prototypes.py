"""The autoencoder behind plausible counterfactuals, and the codes of real digits.

`load_autoencoder()` reads the shipped autoencoder (`checkpoints/autoencoder/`, trained
by `mnistlens train --arch autoencoder`); `training_codes(ae)` encodes the 60,000
training digits once per set of weights and process; `prototypes(ae, images, target)`
gives each image the mean code of the K training digits of its target class nearest to
its own code (Van Looveren & Klaise 2019, "Interpretable counterfactual explanations
guided by prototypes"): where in the autoencoder's space a digit of that class like this
one lies.

    >>> ae = load_autoencoder()
    >>> proto = prototypes(ae, images, target)      # (N, latent)
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import torch
from torch import nn

from mnistlens.errors import MnistlensError
from mnistlens.paths import checkpoint_dir

K_NEAREST = 5  # training codes averaged into one prototype (CFProto's default k)
AUTOENCODER = Path("autoencoder") / "autoencoder.pt"  # under the checkpoints folder

_codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # weights' hash -> codes, labels
_lock = threading.Lock()  # sessions of the explorer are threads: encode once, not twice


def load_autoencoder(path: str | os.PathLike | None = None) -> nn.Module:
    """The autoencoder in eval mode (default: the shipped one); a checkpoint of a
    classifier is refused, naming what it is."""
    from mnistlens.loading.checkpoint import load_checkpoint
    from mnistlens.models import Autoencoder

    path = Path(path) if path else checkpoint_dir() / AUTOENCODER
    if not path.is_file():
        raise MnistlensError(
            f"no autoencoder at {path}; train one with `mnistlens train --arch autoencoder "
            f"--out {path}`"
        )
    model, meta = load_checkpoint(path)
    if not isinstance(model, Autoencoder):
        raise MnistlensError(f"{path} holds a {meta.get('arch', 'model')}, not an autoencoder")
    return model.eval()


def load_class_autoencoders(folder: str | os.PathLike | None = None) -> dict[int, nn.Module]:
    """digit -> the autoencoder trained on that digit alone (`class-D.pt` beside the
    shipped autoencoder, made by `mnistlens train --arch autoencoder --classes D`): how
    well each rebuilds an image says which class's digits it is like (IM1, IM2)."""
    folder = Path(folder) if folder else (checkpoint_dir() / AUTOENCODER).parent
    return {d: load_autoencoder(folder / f"class-{d}.pt") for d in range(10)}


def weights_key(model: nn.Module) -> str:
    """A hash of the model's weights: two loads of one file share their codes."""
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def training_codes(ae: nn.Module, data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes of the 60,000 training digits and their labels: -> (60000, latent),
    (60000,); computed once per set of weights in this process."""
    from mnistlens.data import load_mnist

    key = weights_key(ae)
    with _lock:
        if key not in _codes:
            images, labels = load_mnist("train", data_dir)
            codes = torch.cat(
                [ae.encode(images[i : i + 2000]) for i in range(0, len(images), 2000)]
            )
            _codes[key] = codes, labels
        return _codes[key]


@torch.no_grad()
def prototypes(
    ae: nn.Module, images: torch.Tensor, target: torch.Tensor, k: int = K_NEAREST
) -> torch.Tensor:
    """Each image's prototype of its target class: the mean code of the k training
    digits of that class nearest to the image's own code: (N, 1, 28, 28), (N,) ->
    (N, latent)."""
    codes, labels = training_codes(ae)
    own = ae.encode(images)  # (N, latent)
    found = torch.empty_like(own)
    for digit in target.unique().tolist():
        rows = (target == digit).nonzero().squeeze(1)
        pool = codes[labels == digit]  # (M, latent)
        nearest = torch.cdist(own[rows], pool).topk(k, largest=False).indices  # (n, k)
        found[rows] = pool[nearest].mean(dim=1)
    return found
