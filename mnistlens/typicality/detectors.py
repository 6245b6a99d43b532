"""Scores of how unlike an MNIST digit an image is, from pytorch-ood's detectors.

Each detector reads a model's logits or the activations of one hidden layer; higher
scores mean less digit-like (pytorch-ood's convention). The detectors themselves are
pytorch-ood's (Apache-2.0): `MaxSoftmax` (Hendrycks & Gimpel 2017), `EnergyBased` (Liu
et al. 2020), `Mahalanobis` (Lee et al. 2018, class means and one shared covariance),
`KNN` (Sun et al. 2022, distance to the k-th nearest normalized training feature) and
`ViM` (Wang et al. 2022). Importing pytorch-ood imports torchvision, seconds of every
command's start-up (benchmarks/README.md), so the short scores the verdict may use (max
softmax, energy, Mahalanobis, KNN) are written out here exactly as pytorch-ood computes
them, and a test checks each against pytorch-ood's own; ViM imports it. What
this module adds is the plumbing mnistlens needs: one
forward pass that reads every layer asked for, conv maps reduced to their channels'
means over a 2x2 grid (`reduce_maps`), and a fitted
detector as a dict of tensors, so that it can be cached with `torch.save` and read back
with `weights_only=True`.

A detector is named `kind` (logits only: "msp", "energy") or `kind@layer`
("mahalanobis@relu3", "knn@relu3", "vim@relu_fc1").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.internals.activations import activations_and_logits
from mnistlens.models import get_layer

LOGIT_KINDS = ("msp", "energy")
FEATURE_KINDS = ("mahalanobis", "knn", "vim")
KNN_K = 10  # few neighbours: the fit uses a few thousand training images, not 60,000
PIXELS = "pixels"  # not a layer: the image itself, for models with no hidden layer
MAX_FEATURES = 512  # per conv layer: a 2x2 grid of at most 128 channels' means


@dataclass(frozen=True)
class Spec:
    """One detector: its kind and, for feature detectors, the layer it reads."""

    kind: str
    layer: str | None = None

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}@{self.layer}"

    @classmethod
    def parse(cls, name: str) -> Spec:
        """'energy' or 'mahalanobis@relu3' -> Spec; unknown kinds list the known ones."""
        kind, _, layer = name.partition("@")
        if kind in LOGIT_KINDS and not layer:
            return cls(kind)
        if kind in FEATURE_KINDS and layer:
            return cls(kind, layer)
        raise MnistlensError(
            f"unknown detector {name!r}: use one of {', '.join(LOGIT_KINDS)}, or "
            f"{', '.join(k + '@LAYER' for k in FEATURE_KINDS)} (LAYER a hidden layer's name)"
        )


def default_spec(model: nn.Module) -> Spec:
    """The detector the verdict uses, chosen by the scoreboard (benchmarks/README.md):
    Mahalanobis at the output of the last conv block for a model with convolutions (the
    only score measured that flags most letters and passes most printed digits on the
    CNN); else KNN at the last hidden layer (an MLP: Mahalanobis there lets noise and
    blank images pass); else, for a model with no hidden layer a hook can reach (one
    linear layer, or an exported program), KNN on the pixels themselves: there are no
    features of the model's own to read, and its logits tell digits from the rest worse.
    """
    info = analyze(model)
    if info.cam_layer is not None:
        return Spec("mahalanobis", info.cam_layer)
    if info.hidden_layers:
        return Spec("knn", info.hidden_layers[-1])
    return Spec("knn", PIXELS)


def head_of(model: nn.Module) -> nn.Linear | None:
    """The final linear layer (ViM needs its weights), or None."""
    layers = analyze(model).parameter_layers
    head = get_layer(model, layers[-1]) if layers else None
    return head if isinstance(head, nn.Linear) else None


def reduce_maps(activations: torch.Tensor) -> torch.Tensor:
    """Conv maps (N, C, H, W) -> the channels' means over a 2x2 grid of the image, (N, 4C),
    or over the whole image, (N, C), when 4C > MAX_FEATURES; flat (N, D) as they are.

    Why a 2x2 grid: one mean per channel (what pytorch-ood's Mahalanobis takes of a conv
    layer) forgets *where* a shape's parts are, and a letter has an MNIST digit's strokes
    in other places. On cnn.pt the grid flags more letters, and fewer printed digits and
    scikit-learn's 8x8 digits, on every training subset tried (benchmarks/README.md).
    The cap keeps the covariance of a wide layer estimable from a few thousand images."""
    if activations.dim() == 2:
        return activations
    if activations.dim() != 4:
        return activations.flatten(1)  # (N, D)
    if 4 * activations.shape[1] > MAX_FEATURES:
        return activations.mean(dim=(2, 3))  # (N, C)
    return F.adaptive_avg_pool2d(activations, 2).flatten(1)  # (N, C * 4)


def features(
    model: nn.Module, images: torch.Tensor, layers: list[str], *, device: Device = "cpu"
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass reading `layers` and the logits, in eval mode, on the CPU after.

    images (N, 1, 28, 28) -> ({layer: (N, D)}, logits (N, C)); conv maps (N, C, H, W)
    become a 2x2 grid of channel means (`reduce_maps`).
    """
    hooked = [layer for layer in layers if layer != PIXELS]
    out, logits = activations_and_logits(
        model, images, hooked, reduce=lambda a: reduce_maps(a.float()), device=device
    )
    if PIXELS in layers:
        out[PIXELS] = images.detach().float().cpu().flatten(1)  # (N, 784)
    return out, logits


def fit(
    spec: Spec,
    feats: dict[str, torch.Tensor],
    logits: torch.Tensor,
    labels: torch.Tensor,
    model: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Fit `spec` on training features (M, D) and labels (M,): -> its state, a dict of
    tensors."""
    if spec.kind in LOGIT_KINDS:
        return {}
    z = feats[spec.layer].float()  # (M, D)
    if spec.kind == "mahalanobis":
        return mahalanobis_fit(z, labels)
    if spec.kind == "knn":
        return {"bank": unit_rows(z).contiguous()}  # (M, D)
    from pytorch_ood.detector import ViM

    head = head_of(model) if model is not None else None
    if head is None or head.bias is None or head.in_features != z.shape[1]:
        raise MnistlensError(
            f"ViM needs the layer that feeds the model's final linear layer; {spec.layer!r} "
            "does not"
        )
    det = ViM(
        None, d=min(64, z.shape[1] // 2), w=head.weight.detach().cpu(), b=head.bias.detach().cpu()
    )
    det.fit_features(z, labels)
    return {
        "w": det.w,
        "b": det.b,
        "subspace": det.principal_subspace,
        "alpha": torch.tensor(float(det.alpha)),
    }


@torch.no_grad()
def score(
    spec: Spec, state: dict[str, torch.Tensor], feats: dict[str, torch.Tensor], logits: torch.Tensor
) -> torch.Tensor:
    """How unlike a digit each image is (higher: less): -> (N,) float32."""
    if spec.kind == "msp":
        return -logits.float().softmax(dim=1).amax(dim=1)  # MaxSoftmax.score
    if spec.kind == "energy":
        return -torch.logsumexp(logits.float(), dim=1)  # EnergyBased.score at t = 1
    z = feats[spec.layer].float()
    if spec.kind == "mahalanobis":
        return mahalanobis_score(state, z)
    if spec.kind == "knn":
        return knn_score(state, z)
    from pytorch_ood.detector import ViM

    det = ViM(None, d=1, w=state["w"], b=state["b"])
    det.principal_subspace, det.alpha = state["subspace"], float(state["alpha"])
    return det.predict_features(z).float()


def mahalanobis_fit(z: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """pytorch-ood's `Mahalanobis.fit_features`, step for step: class means, the summed
    (not averaged) centred outer products plus a 1e-6 ridge, inverted.
    z (M, D), labels (M,) -> {"mu": (C, D), "precision": (D, D)}."""
    classes = int(labels.max()) + 1
    if torch.bincount(labels, minlength=classes).min() == 0:
        raise MnistlensError("the Mahalanobis fit needs training images of every class")
    mu = torch.stack([z[labels == c].mean(dim=0) for c in range(classes)])  # (C, D)
    centred = z - mu[labels]  # (M, D)
    cov = centred.T @ centred + 1e-6 * torch.eye(z.shape[1])  # (D, D)
    return {"mu": mu, "precision": torch.linalg.inv(cov)}


def unit_rows(z: torch.Tensor) -> torch.Tensor:
    """pytorch-ood's `KNN` normalization: rows to unit length, zero rows kept finite."""
    return z / z.norm(dim=1, keepdim=True).clamp(min=1e-12)


def knn_score(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """pytorch-ood's `KNN.predict_features` (normalize=True): the Euclidean distance of
    the normalized feature to its KNN_K-th nearest normalized training feature.
    z (N, D) -> (N,)."""
    distances = torch.cdist(unit_rows(z), state["bank"])  # (N, M)
    return distances.kthvalue(KNN_K, dim=1).values


def mahalanobis_score(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """pytorch-ood's `Mahalanobis.predict_features`: half the squared distance to the
    closest class mean. z (N, D) -> (N,)."""
    centred = z[:, None, :] - state["mu"][None]  # (N, C, D)
    distances = 0.5 * ((centred @ state["precision"]) * centred).sum(dim=2)  # (N, C)
    return distances.amin(dim=1)
