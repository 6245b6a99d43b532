"""Methods that explain against a reference input: integrated gradients, DeepLIFT,
GradientSHAP. Each claims completeness: a map sums to f(x) - f(baseline)."""

from __future__ import annotations

import numbers
import os
import warnings

import torch
from torch import nn

from mnistlens.attribution.common import (
    INPUT_RANGE,
    Target,
    check_count,
    chunked,
    make_baseline,
    mean_image,
    placed,
    seeded_per_image,
)
from mnistlens.attribution.fastig import ig_adaptive
from mnistlens.attribution.registry import register_method
from mnistlens.device import Device, rows_per_pass
from mnistlens.errors import MnistlensError
from mnistlens.graph import prepare_for_explanation, with_relu_modules
from mnistlens.models import FAST_ROWS

# Captum is imported inside each method, not here: see the package docstring.

Baseline = str | float | torch.Tensor
# Captum's quadratures for IntegratedGradients(method=...).
IG_METHODS = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)


def baseline_score(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    baseline: Baseline = "black",
    data_dir: str | os.PathLike | None = None,
    device: Device = "auto",
    **_ignored,
) -> torch.Tensor:
    """f(baseline) for the target class, the score IG and DeepLIFT measure from: -> (N,)."""
    from mnistlens.metrics import predict_logits

    reference = make_baseline(baseline, images, data_dir=data_dir)
    return predict_logits(model, reference, device=device).gather(1, target[:, None])[:, 0]


def expected_baseline_score(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    baselines: torch.Tensor | None = None,
    data_dir: str | os.PathLike | None = None,
    device: Device = "auto",
    **_ignored,
) -> torch.Tensor:
    """E[f(baseline)] over GradientSHAP's reference distribution, per image: -> (N,)."""
    from mnistlens.metrics import predict_logits

    if baselines is None:
        baselines = shap_baselines(data_dir)
    scores = predict_logits(model, baselines, device=device)  # (B, C)
    return scores.mean(dim=0)[target]  # (N,)


@register_method(
    "integrated_gradients",
    "gradients averaged along the path from a baseline, times (image - baseline)",
    aliases=("ig",),
    signed=True,
    claims_completeness=True,
    options=("baseline", "n_steps", "tol", "data_dir"),
    reference=baseline_score,
)
def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    baseline: Baseline = "black",
    n_steps: int = 50,
    method: str = "gausslegendre",
    tol: float | None = None,
    max_steps: int = 256,
    return_delta: bool = False,
    data_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365).

    The path integral of gradients from `baseline` to the image, times (image -
    baseline). Completeness: each map should sum to score(image) - score(baseline);
    `delta` is how far it misses, per image.

    Two ways to approximate the integral:
    - `tol=None` (default): Captum's IntegratedGradients with `n_steps` points of
      `method` ("gausslegendre", "riemann_trapezoid", ...), on a copy of the model
      with batch norm folded and channels-last layout (same function, faster).
    - `tol=0.01`: adaptive steps (`fastig.ig_adaptive`, which Captum lacks): each image
      gets just enough gradient evaluations for |delta| <= tol * |score gap|, up to
      `max_steps`; images that never get there are reported in a warning.

    baseline: see `make_baseline` ("mean" is read from `data_dir`).
    Returns: maps (N, 1, 28, 28), and with return_delta=True also delta (N,), on the CPU.
    """
    check_count("n_steps", n_steps)
    check_count("max_steps", max_steps)
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1
    ):
        raise MnistlensError(f"tol must be a number between 0 and 1, e.g. 0.01, got {tol!r}")
    if method not in IG_METHODS:
        raise MnistlensError(
            f"unknown integration method {method!r}; choose one of {', '.join(IG_METHODS)}"
        )
    model, device = placed(model, device)
    fast = prepare_for_explanation(model, keep=True)  # never hooked
    rows = rows_per_pass(device, FAST_ROWS)  # cache-sized passes are fastest on a CPU
    deltas: list[torch.Tensor] = []
    not_converged = 0

    if tol is None:
        from captum.attr import IntegratedGradients  # local: see the note on Captum at the top

        ig = IntegratedGradients(fast)

        def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            maps, delta = ig.attribute(
                x,
                baselines=make_baseline(baseline, x, data_dir=data_dir),
                target=t,
                n_steps=n_steps,
                method=method,
                internal_batch_size=rows,
                return_convergence_delta=True,
            )
            deltas.append(delta.detach().cpu())
            return maps

    else:

        def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal not_converged
            x = x.detach()
            base = make_baseline(baseline, x, data_dir=data_dir)
            result = ig_adaptive(fast, x, base, t, tol, max_steps=max_steps, rows_per_pass=rows)
            deltas.append(result.delta.cpu())
            not_converged += int((~result.converged).sum())
            return result.maps

    batch_size = batch_size or (64 if tol is None else 500)
    maps = chunked(
        compute, model, images, target, batch_size, progress, "integrated gradients", device=device
    )
    if not_converged:
        warnings.warn(
            f"integrated_gradients: {not_converged} of {len(maps)} images did not reach "
            f"tol={tol} within max_steps={max_steps}; their delta says by how much",
            stacklevel=2,
        )
    delta = torch.cat(deltas) if deltas else torch.empty(0)
    return (maps, delta) if return_delta else maps


@register_method(
    "deeplift",
    "DeepLIFT rescale rule: differences from a baseline propagated layer by layer",
    aliases=("dl",),
    signed=True,
    claims_completeness=True,
    needs_relu_modules=True,
    options=("baseline", "data_dir"),
    reference=baseline_score,
)
def deeplift(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    baseline: Baseline = "black",
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """DeepLIFT rescale rule (Shrikumar et al. 2017) against `baseline`, signed.

    Captum overrides the gradient of nn.ReLU modules only, so functional ReLUs are
    first rewritten into modules (`graph.with_relu_modules`).
    (N, 1, 28, 28) -> (N, 1, 28, 28).
    """
    from captum.attr import DeepLift  # local: see the note on Captum at the top

    model, device = placed(with_relu_modules(model), device)
    method = DeepLift(model)
    return chunked(
        lambda x, t: method.attribute(
            x, baselines=make_baseline(baseline, x, data_dir=data_dir), target=t
        ),
        model,
        images,
        target,
        batch_size,
        progress,
        "deeplift",
        device=device,
    )


def shap_baselines(data_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """GradientSHAP's default references, black and the training mean: (2, 1, 28, 28)."""
    return torch.cat([torch.zeros(1, 1, 28, 28), mean_image(data_dir)])


@register_method(
    "gradient_shap",
    "expected gradients over random baselines and interpolation points (SHAP values)",
    aliases=("shap",),
    signed=True,
    claims_completeness=True,
    random=True,
    options=("data_dir",),
    reference=expected_baseline_score,
)
def gradient_shap(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    baselines: torch.Tensor | None = None,
    n_samples: int = 20,
    stdevs: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee 2017): expected gradients over random baselines.

    Completeness holds in expectation: E[sum(map)] = f(x) - E[f(baseline)]. Captum draws
    the noise on the device, so maps on a GPU equal the CPU's only in expectation
    (each is reproducible on its own device).

    Args:
        baselines: (B, 1, 28, 28) reference distribution; default `shap_baselines()`.
        n_samples: random (baseline, interpolation point) draws per image.
        stdevs: Gaussian noise added to each draw, as a fraction of the input range.
    """
    check_count("gradient_shap n_samples", n_samples)
    if isinstance(stdevs, bool) or not isinstance(stdevs, numbers.Real) or not stdevs >= 0:
        raise MnistlensError(f"gradient_shap stdevs must be a number >= 0, got {stdevs!r}")
    if baselines is None:
        baselines = shap_baselines(data_dir)
    from captum.attr import GradientShap  # local: see the note on Captum at the top

    # n_samples gradients per image, on the fast copy (the same function) as IG's.
    model, device = placed(model, device)
    method = GradientShap(prepare_for_explanation(model, keep=True))  # hooks nothing
    baselines = baselines.to(device)

    def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return method.attribute(
            x, baselines=baselines, n_samples=n_samples, stdevs=stdevs * INPUT_RANGE, target=t
        )

    return chunked(
        seeded_per_image(compute, seed),
        model,
        images,
        target,
        batch_size,
        progress,
        "gradient shap",
        device=device,
    )
