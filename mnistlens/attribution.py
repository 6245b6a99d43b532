"""Attribution maps: which pixels made the model say what it said.

Every method has one signature, after Captum's uniform `attribute()`:

    method(model, images, target=None, **options) -> maps

    images: (N, 1, 28, 28) float32 in [0, 1] (the library's input convention)
    target: None (the predicted class), an int, or a (N,) tensor of classes
    maps:   (N, 1, 28, 28) float32, one map per image

Each method is Captum's (https://captum.ai); what Captum lacks is written here, with
a comment saying why. Every method works for any `nn.Module` mapping such images to
(N, C) scores, not only mnistlens models. While explaining, the model is put in eval
mode and its parameters stop requiring gradients (only input gradients are needed,
which saves the weight-gradient half of every backward pass); both are restored after.
Images are processed in chunks of `batch_size`, so memory stays bounded for any N.

    >>> maps = saliency(model, images[:8])                     # (8, 1, 28, 28)
    >>> maps, delta = integrated_gradients(model, images[:8], return_delta=True)
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from .errors import MnistlensError
from .metrics import predict_logits
from .models import conv_layer_names, evaluating, get_layer

Target = int | torch.Tensor | None
INPUT_RANGE = 1.0  # images live in [0, 1]; noise levels are fractions of this range


# ---------------------------------------------------------------- input checks


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a batch in the input convention: (N, 1, 28, 28) floating point."""
    if not isinstance(images, torch.Tensor):
        raise MnistlensError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        hint = " (add a batch axis: images.unsqueeze(0))" if images.dim() == 3 else ""
        raise MnistlensError(
            f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}{hint}"
        )
    if not images.is_floating_point():
        raise MnistlensError(f"images must be float in [0, 1], got dtype {images.dtype}")
    return images.detach()


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Model scores (N, C) for (N, 1, 28, 28) images, in eval mode (`metrics.predict_logits`)."""
    return predict_logits(model, images, batch_size)


def resolve_target(model: nn.Module, images: torch.Tensor, target: Target) -> torch.Tensor:
    """Target classes as a (N,) int64 tensor; None means the model's prediction."""
    n = images.shape[0]
    if target is None:
        return predict(model, images).argmax(dim=1)
    target = torch.as_tensor(target, dtype=torch.int64)
    if target.dim() == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise MnistlensError(
            f"target must be an int or a tensor of {n} classes, got {tuple(target.shape)}"
        )
    return target.clone()


def explaining(model: nn.Module):
    """Eval mode and frozen parameters for the duration; the previous state is restored."""
    return evaluating(model, freeze=True)


def _chunked(
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    images: torch.Tensor,
    target: Target,
    batch_size: int,
    progress: bool = False,
    desc: str = "explaining",
) -> torch.Tensor:
    """Run `compute(chunk, chunk_target)` over chunks of images: -> (N, 1, 28, 28)."""
    images = check_images(images)
    target = resolve_target(model, images, target)
    outputs = []
    with explaining(model), warnings.catch_warnings():
        # Captum announces each hook it sets on ReLUs; they are removed when it returns.
        warnings.filterwarnings("ignore", message=".*(hooks|Setting backward hooks).*")
        chunks = zip(images.split(batch_size), target.split(batch_size), strict=True)
        total = -(-len(images) // batch_size)
        for x, t in tqdm(chunks, total=total, desc=desc, disable=not progress, unit="batch"):
            # A fresh leaf that requires grad: the caller's tensor and its .grad stay untouched.
            x = x.clone().requires_grad_(True)
            outputs.append(compute(x, t).detach())
    return torch.cat(outputs) if outputs else torch.empty_like(images)


def _seeded_per_image(
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap a random method so each image's noise depends only on (seed, the image).

    Captum draws noise for a whole batch from the global generator, so an image's
    map would change with its batch-mates. Seeding per image from its pixels makes
    an explanation a pure function of (model, image, seed): a batch of N equals N
    single calls. One Captum call per image still batches its n_samples copies.
    """

    def per_image(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        maps = []
        for xi, ti in zip(x.split(1), t.split(1), strict=True):
            image_seed = zlib.crc32(xi.detach().numpy().tobytes(), seed & 0xFFFFFFFF)
            numpy_state = np.random.get_state()  # Captum's GradientShap also draws from numpy
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(image_seed)
                    np.random.seed(image_seed)
                    maps.append(compute(xi, ti))
            finally:
                np.random.set_state(numpy_state)
        return torch.cat(maps)

    return per_image


# ---------------------------------------------------------------- baselines


@functools.lru_cache(maxsize=2)
def _mean_image(data_dir: str | None) -> torch.Tensor:
    from .data import load_mnist

    return load_mnist("train", data_dir)[0].mean(dim=0, keepdim=True)  # (1, 1, 28, 28)


BASELINES = ("black", "mean", "blur", "noise")


def make_baseline(
    kind: str | float | torch.Tensor, images: torch.Tensor, seed: int = 0
) -> torch.Tensor:
    """A reference input for each image: (N, 1, 28, 28) -> (N, 1, 28, 28).

    kind: "black" (zeros: no ink), "mean" (the training set's mean image), "blur" (the
    image itself under a heavy Gaussian blur: strokes gone, mass kept), "noise"
    (uniform noise in [0, 1], seeded), a number (a constant image) or a tensor
    broadcastable to the images.
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(images.dtype).expand_as(images)
    if isinstance(kind, (int, float)):
        return torch.full_like(images, float(kind))
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        return _mean_image(None).expand_as(images)
    if kind == "blur":
        return gaussian_blur(images, kernel_size=[13, 13], sigma=[4.0, 4.0])
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(images.shape, generator=gen, dtype=images.dtype)
    raise MnistlensError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")


# ---------------------------------------------------------------- methods


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """|d score_target / d pixel| (Simonyan et al. 2013): (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    method = Saliency(model)
    return _chunked(
        lambda x, t: method.attribute(x, target=t, abs=True),
        model,
        images,
        target,
        batch_size,
        progress,
        "saliency",
    )


def input_x_gradient(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Pixel x gradient, signed (Shrikumar et al. 2016): (N, 1, 28, 28) -> (N, 1, 28, 28)."""
    method = InputXGradient(model)
    return _chunked(
        lambda x, t: method.attribute(x, target=t),
        model,
        images,
        target,
        batch_size,
        progress,
        "input x gradient",
    )


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    baseline: str | float | torch.Tensor = "black",
    n_steps: int = 50,
    method: str = "gausslegendre",
    tol: float | None = None,
    max_steps: int = 256,
    return_delta: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
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

    Returns: maps (N, 1, 28, 28), and with return_delta=True also delta (N,).
    """
    from .fastig import ig_adaptive, prepare_for_explanation

    if n_steps < 1 or (tol is not None and not 0 < tol < 1):
        raise MnistlensError(f"need n_steps >= 1 and 0 < tol < 1, got {n_steps}, {tol}")
    fast = prepare_for_explanation(model)
    deltas: list[torch.Tensor] = []
    not_converged = 0

    if tol is None:
        ig = IntegratedGradients(fast)

        def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            maps, delta = ig.attribute(
                x,
                baselines=make_baseline(baseline, x),
                target=t,
                n_steps=n_steps,
                method=method,
                internal_batch_size=64,  # cache-sized passes (~64 rows) are fastest on CPU
                return_convergence_delta=True,
            )
            deltas.append(delta.detach())
            return maps

    else:

        def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal not_converged
            x = x.detach()
            result = ig_adaptive(fast, x, make_baseline(baseline, x), t, tol, max_steps=max_steps)
            deltas.append(result.delta)
            not_converged += int((~result.converged).sum())
            return result.maps

    batch_size = batch_size or (64 if tol is None else 500)
    maps = _chunked(compute, model, images, target, batch_size, progress, "integrated gradients")
    if not_converged:
        warnings.warn(
            f"integrated_gradients: {not_converged} of {len(maps)} images did not reach "
            f"tol={tol} within max_steps={max_steps}; their delta says by how much",
            stacklevel=2,
        )
    return (maps, torch.cat(deltas)) if return_delta else maps


def deeplift(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    baseline: str | float | torch.Tensor = "black",
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """DeepLIFT rescale rule (Shrikumar et al. 2017) against `baseline`, signed.

    Needs each ReLU as its own nn.ReLU module (Captum overrides their gradients).
    """
    method = DeepLift(model)
    return _chunked(
        lambda x, t: method.attribute(x, baselines=make_baseline(baseline, x), target=t),
        model,
        images,
        target,
        batch_size,
        progress,
        "deeplift",
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
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee 2017): expected gradients over random baselines.

    Args:
        baselines: (B, 1, 28, 28) reference distribution; default: black and the
            training mean image.
        n_samples: random (baseline, interpolation point) draws per image.
        stdevs: Gaussian noise added to each draw, as a fraction of the input range.
    """
    if baselines is None:
        baselines = torch.cat([torch.zeros(1, 1, 28, 28), _mean_image(None)])
    method = GradientShap(model)

    def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return method.attribute(
            x, baselines=baselines, n_samples=n_samples, stdevs=stdevs * INPUT_RANGE, target=t
        )

    return _chunked(
        _seeded_per_image(compute, seed),
        model,
        images,
        target,
        batch_size,
        progress,
        "gradient shap",
    )


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    window: int = 4,
    stride: int = 2,
    baseline: float = 0.0,
    batch_size: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): score drop when a window x window patch is
    replaced by `baseline`, averaged over the patches covering each pixel."""
    if not 1 <= window <= 28 or not 1 <= stride <= 28:
        raise MnistlensError(f"occlusion window and stride must be 1-28, got {window}, {stride}")
    method = Occlusion(model)
    return _chunked(
        lambda x, t: method.attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=baseline,
            target=t,
            perturbations_per_eval=8,
        ),
        model,
        images,
        target,
        batch_size,
        progress,
        "occlusion",
    )


def default_cam_layer(model: nn.Module) -> str:
    """The name of the last nn.Conv2d in `model` (Grad-CAM's usual choice)."""
    convs = conv_layer_names(model)
    if not convs:
        raise MnistlensError("grad_cam needs a convolutional layer; this model has none")
    return convs[-1]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    layer: str | nn.Module | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at a conv layer, upsampled to 28 x 28.

    Channel weights = mean gradient of the target score over each feature map; the
    map is ReLU(sum of weighted feature maps), so it is non-negative, then resized
    bilinearly from the layer's resolution to (N, 1, 28, 28).

    Args:
        layer: a layer name (e.g. "conv2") or module; default: the last nn.Conv2d.
    """
    if layer is None:
        layer = default_cam_layer(model)
    module = get_layer(model, layer) if isinstance(layer, str) else layer
    method = LayerGradCam(model, module)

    def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cam = method.attribute(x, target=t, relu_attributions=True)  # (n, 1, h, w)
        return LayerAttribution.interpolate(cam, (28, 28), interpolate_mode="bilinear")

    return _chunked(compute, model, images, target, batch_size, progress, "grad-cam")


def guided_backprop(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2014): only positive gradients pass
    back through each ReLU. Sharp pictures, but known to ignore the model's upper
    layers (Adebayo et al. 2018): see the sanity checks."""
    method = GuidedBackprop(model)
    return _chunked(
        lambda x, t: method.attribute(x, target=t),
        model,
        images,
        target,
        batch_size,
        progress,
        "guided backprop",
    )


_NOISE_TUNNEL_BASES = {  # method -> (Captum class, fixed attribute() options)
    "saliency": (Saliency, {"abs": True}),
    "input_x_gradient": (InputXGradient, {}),
    "integrated_gradients": (IntegratedGradients, {"n_steps": 16}),
    "guided_backprop": (GuidedBackprop, {}),
    "deeplift": (DeepLift, {}),
}


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    base: str = "saliency",
    noise: float = 0.15,
    n_samples: int = 25,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of `base` over noisy copies of the image.

    Args:
        base: any other method. Gradient methods (saliency, input_x_gradient,
            integrated_gradients, guided_backprop, deeplift) go through Captum's
            NoiseTunnel; the others (occlusion, grad_cam, gradient_shap) are averaged
            over the same kind of noisy copies here, since NoiseTunnel only wraps
            Captum attribution objects.
        noise: Gaussian noise std as a fraction of the input range (0.15 = 15%).
        n_samples: noisy copies per image.
    """
    base = resolve_method(base)
    if base == "smoothgrad":
        raise MnistlensError("smoothgrad cannot smooth itself; choose another base method")
    if noise < 0 or n_samples < 1:
        raise MnistlensError(
            f"smoothgrad needs noise >= 0 and n_samples >= 1, got {noise}, {n_samples}"
        )
    if base in _NOISE_TUNNEL_BASES:
        captum_class, options = _NOISE_TUNNEL_BASES[base]
        tunnel = NoiseTunnel(captum_class(model))

        def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=n_samples,
                stdevs=noise * INPUT_RANGE,
                target=t,
                **options,
            )

    else:

        def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = x.detach()
            noisy = x.repeat(n_samples, 1, 1, 1)  # (S * n, 1, 28, 28), sample-major
            noisy = noisy + torch.randn_like(noisy) * noise * INPUT_RANGE
            maps = METHODS[base](model, noisy, t.repeat(n_samples))
            return maps.view(n_samples, *x.shape).mean(dim=0)  # (n, 1, 28, 28)

    return _chunked(
        _seeded_per_image(compute, seed), model, images, target, batch_size, progress, "smoothgrad"
    )


# ---------------------------------------------------------------- registry

METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "deeplift": deeplift,
    "gradient_shap": gradient_shap,
    "occlusion": occlusion,
    "grad_cam": grad_cam,
    "guided_backprop": guided_backprop,
}
ALIASES = {
    "ig": "integrated_gradients",
    "ixg": "input_x_gradient",
    "sg": "smoothgrad",
    "shap": "gradient_shap",
    "gradcam": "grad_cam",
    "gbp": "guided_backprop",
    "dl": "deeplift",
}
SIGNED = {"input_x_gradient", "integrated_gradients", "deeplift", "gradient_shap", "occlusion"}


def list_methods() -> list[str]:
    """Canonical method names, in the registry's order."""
    return list(METHODS)


def resolve_method(name: str) -> str:
    """Canonical name for a method name or alias (ig, sg, gradcam, ...)."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise MnistlensError(
            f"unknown attribution method {name!r}; choose from {', '.join(METHODS)} "
            f"(aliases: {', '.join(ALIASES)})"
        )
    return key


def attribute(
    method: str, model: nn.Module, images: torch.Tensor, target: Target = None, **options
) -> torch.Tensor:
    """Run a method by name: attribute("ig", model, images, n_steps=32) -> (N, 1, 28, 28)."""
    return METHODS[resolve_method(method)](model, images, target, **options)
