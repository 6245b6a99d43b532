"""What hidden units respond to: capture activations, per-digit profiles, top images, PCA.

Activations are read with forward hooks held in a context manager that always
removes them, also when the body raises (a forgotten hook silently slows and
changes every later forward pass).

    >>> with capture(model, ["conv1", "fc1"]) as acts:
    ...     model(images[:8])
    >>> acts["fc1"].shape
    torch.Size([8, 128])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from mnistlens.device import Device, fork_rng, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.graph import analyze
from mnistlens.models import evaluating, for_inference, get_layer


@contextlib.contextmanager
def capture(
    model: nn.Module, layers: list[str] | str, of: str = "output", detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output (or, with of="input", the input) of each named layer during
    forward passes inside the block.

    Yields a dict layer name -> the latest tensor (detached unless detach=False). The
    hooks are removed on exit, whatever happens in the block.
    """
    if of not in ("output", "input"):
        raise MnistlensError(f"capture of={of!r}; choose output or input")
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = [get_layer(model, name) for name in names]  # fails before any hook is set
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in zip(names, modules, strict=True):

            def hook(_module, inputs, output, name=name):
                seen = output if of == "output" else inputs[0]
                outputs[name] = seen.detach() if detach else seen

            handles.append(module.register_forward_hook(hook))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def layer_activations(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    batch_size: int | None = None,
    progress: bool = False,
    *,
    device: Device = "auto",
) -> torch.Tensor:
    """Outputs of `layer` for every image, in eval mode: (N, 1, 28, 28) -> (N, ...), on
    the CPU.

    E.g. (N, 32, 28, 28) for a conv layer, (N, 128) for a linear one. On the CPU, run as
    `models.for_inference` says (fast copy, rows per pass); on a GPU, as a copy there,
    `device.GPU_ROWS` rows a pass; batch_size overrides either. device: "auto" (CUDA if
    available, else the CPU), "cpu" or "cuda[:N]"; your model itself never moves.
    """
    found, _ = activations_and_logits(
        model, images, [layer], batch_size=batch_size, progress=progress, device=device
    )
    return found[layer]


@torch.no_grad()
def activations_and_logits(
    model: nn.Module,
    images: torch.Tensor,
    layers: list[str],
    *,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    device: Device = "auto",
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Outputs of several layers and the logits for every image, one pass per chunk, run
    as `layer_activations` runs: (N, 1, 28, 28) -> ({layer: (N, ...)}, (N, C) logits),
    on the CPU. reduce: applied to each chunk of a layer's outputs before it is kept
    (e.g. flattening, or pooling conv maps, so that the whole set is never held)."""
    for layer in layers:
        get_layer(model, layer)  # an unknown name fails here, naming the model's layers
    device = resolve_device(device)
    fast, rows = for_inference(model, len(images), device=device)
    rows = batch_size or rows
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    logits = []
    with evaluating(fast), capture(fast, layers) as acts:
        for start in tqdm(
            range(0, len(images), rows),
            desc=f"activations {', '.join(layers)}",
            disable=not progress,
            unit="batch",
        ):
            logits.append(fast(images[start : start + rows].to(device)).float().cpu())
            for layer in layers:
                # the copy's channels-last -> default layout, and to the CPU
                out = acts[layer].contiguous()
                chunks[layer].append((out if reduce is None else reduce(out)).cpu())
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}, torch.cat(logits)


def unit_activations(activations: torch.Tensor) -> torch.Tensor:
    """One number per unit: (N, units) as is; conv maps (N, C, H, W) -> spatial mean (N, C)."""
    if activations.dim() == 2:
        return activations
    if activations.dim() == 4:
        return activations.mean(dim=(2, 3))  # (N, C)
    return activations.flatten(1)  # (N, units)


def class_profile(units: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Mean activation of every unit for each digit: (N, units), (N,) -> (10, units)."""
    sums = torch.zeros(n_classes, units.shape[1]).index_add_(0, labels, units.float())
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1)
    return sums / counts[:, None]


def selectivity(profile: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Class selectivity index of each unit (Morcos et al. 2018, arXiv:1803.06959).

    (mu_max - mu_rest) / (mu_max + mu_rest), where mu_max is the unit's mean
    activation on its preferred digit and mu_rest the mean over the other digits.
    1 = fires for one digit only, 0 = no preference. Meant for non-negative
    (post-ReLU) activations.

    profile (10, units) -> (selectivity (units,), preferred digit (units,))
    """
    mu_max, preferred = profile.max(dim=0)
    mu_rest = (profile.sum(dim=0) - mu_max) / (profile.shape[0] - 1)
    return (mu_max - mu_rest) / (mu_max + mu_rest).clamp(min=eps), preferred


def most_selective(
    profile: torch.Tensor, k: int = 10, min_share: float = 0.05
) -> list[tuple[int, int, float]]:
    """The k most class-selective units as (unit, preferred digit, selectivity).

    Units whose strongest mean activation is below `min_share` of the layer's
    strongest are left out: a nearly dead unit that twitches for one digit scores
    a selectivity of 1 but explains nothing.
    """
    index, preferred = selectivity(profile)
    alive = profile.max(dim=0).values >= min_share * profile.max()
    index = torch.where(alive, index, torch.full_like(index, -float("inf")))
    values, units = index.sort(descending=True)
    n = min(k, int(alive.sum()))
    return [
        (int(u), int(preferred[u]), float(v)) for u, v in zip(units[:n], values[:n], strict=True)
    ]


def top_images(units: torch.Tensor, unit: int, k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and activations of the k images that excite `unit` most: -> (k,), (k,)."""
    if not 0 <= unit < units.shape[1]:
        raise MnistlensError(
            f"unit {unit} is out of range; this layer has units 0 to {units.shape[1] - 1}"
        )
    values, indices = units[:, unit].topk(min(k, len(units)))
    return indices, values


def pca_2d(features: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (N, ...) features on their first two principal components.

    Up to 4,000 samples: exact, via the (N, N) Gram matrix, which stays small however
    wide the layer is (25,088 features for 32 x 28 x 28). More: randomized PCA
    (`torch.pca_lowrank`, seeded). -> coordinates (N, 2), explained variance ratio (2,).
    """
    x = features.flatten(1).double()  # (N, D)
    x = x - x.mean(dim=0)
    total = x.pow(2).sum().clamp(min=1e-12)
    if len(x) <= 4000:
        eigvals, eigvecs = torch.linalg.eigh(x @ x.T)  # ascending; x x^T = U S^2 U^T
        top = eigvals.flip(0)[:2].clamp(min=0)  # (2,)
        coords = eigvecs.flip(1)[:, :2] * top.sqrt()  # U S = x V: (N, 2)
        return coords.float(), (top / total).float()
    with fork_rng(torch.device("cpu")):  # one seeded block at a time in the process
        torch.manual_seed(seed)
        _, s, v = torch.pca_lowrank(x, q=10, center=False, niter=8)
    return (x @ v[:, :2]).float(), (s[:2] ** 2 / total).float()


def projections_by_layer(
    model: nn.Module, images: torch.Tensor, extra: list[str] | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PCA of the pixels, of every hidden activation's output in execution order, and of
    the logits, for the same images: how the digits pull apart layer by layer.

    -> {"pixels": (coords (N, 2), ratio (2,)), "relu1": ..., ..., "logits": ...};
    `extra` layer names are added (in execution order) if not already there.
    """
    info = analyze(model)
    names = list(info.hidden_layers)
    for name in extra or []:
        get_layer(model, name)
        if name not in names:
            names.append(name)
    order = {layer.name: i for i, layer in enumerate(info.layers)}
    names.sort(key=lambda name: order.get(name, len(order)))
    result = {"pixels": pca_2d(images)}
    with torch.no_grad(), evaluating(model), capture(model, names) as acts:
        logits = model(images)
        for name in names:
            result[name] = pca_2d(acts[name])
    result["logits"] = pca_2d(logits)
    return result
