"""What every attribution method shares: input checks, targets, chunking, seeding, baselines."""

from __future__ import annotations

import functools
import numbers
import os
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mnistlens.data import check_images, gaussian_blur
from mnistlens.device import Device, fork_rng, model_on, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.metrics import predict_logits
from mnistlens.models import evaluating

Target = int | torch.Tensor | None
Compute = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (chunk, target) -> maps
INPUT_RANGE = 1.0  # images live in [0, 1]; noise levels are fractions of this range


def resolve_target(
    model: nn.Module, images: torch.Tensor, target: Target, *, device: Device = "auto"
) -> torch.Tensor:
    """Target classes as a (N,) int64 tensor on the CPU; None means the model's
    prediction (computed on `device`, see `metrics.predict_logits`).

    A class outside the model's outputs 0..C-1 is refused here, with the valid range,
    rather than deep inside a gather.
    """
    n = images.shape[0]
    if target is None:
        return predict_logits(model, images, device=device).argmax(dim=1)
    target = torch.as_tensor(target).cpu()
    if target.is_floating_point() or target.is_complex():
        raise MnistlensError(f"target must be integer classes, got dtype {target.dtype}")
    target = target.to(torch.int64)
    if target.dim() == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise MnistlensError(
            f"target must be an int or a tensor of {n} classes, got {tuple(target.shape)}"
        )
    n_classes = predict_logits(model, images[:1], device=device).shape[1] if n else 10
    if n and not ((target >= 0) & (target < n_classes)).all():
        bad = int(target[(target < 0) | (target >= n_classes)][0])
        raise MnistlensError(
            f"target class {bad} is out of range; this model has classes 0-{n_classes - 1}"
        )
    return target.clone()


def check_count(name: str, value, low: int = 1, high: int | None = None) -> int:
    """An integer option in [low, high] (high=None: no upper bound), else MnistlensError
    naming the option and the valid range: a float or a string would otherwise fail deep
    inside Captum or numpy with a message that names neither."""
    valid = f">= {low}" if high is None else f"{low}-{high}"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
        or (high is not None and value > high)
    ):
        raise MnistlensError(f"{name} must be an integer {valid}, got {value!r}")
    return int(value)


def placed(model: nn.Module, device: Device) -> tuple[nn.Module, torch.device]:
    """Where a method runs: -> (the model on `device`, itself or a copy there
    (`device.model_on`), the resolved device)."""
    dev = resolve_device(device)
    return model_on(model, dev), dev


def explaining(model: nn.Module):
    """Eval mode and frozen parameters for the duration (no method can write into a
    weight's .grad, and dropout is off); each module's previous state is restored."""
    return evaluating(model, freeze=True)


def chunked(
    compute: Compute,
    model: nn.Module,
    images: torch.Tensor,
    target: Target,
    batch_size: int,
    progress: bool = False,
    desc: str = "explaining",
    *,
    device: Device = "auto",
) -> torch.Tensor:
    """Run `compute(chunk, chunk_target)` over chunks of images: -> (N, 1, 28, 28), on
    the CPU.

    Each chunk and its targets are moved to `device` ("auto": CUDA if available, else
    the CPU) and the maps brought back, so `compute` must run a model already there:
    a method passes `device.model_on(model, device)` as `model` and builds `compute`
    on it. Memory stays bounded by `batch_size` whatever N is; the caller's tensor and
    its .grad are never touched (each chunk is a fresh leaf).
    """
    images = check_images(images)
    batch_size = check_count("batch_size", batch_size)
    dev = resolve_device(device)
    target = resolve_target(model, images, target, device=dev)
    outputs = []
    with explaining(model), warnings.catch_warnings():
        # Captum announces each hook it sets on ReLUs; they are removed when it returns.
        warnings.filterwarnings("ignore", message=".*(hooks|Setting backward hooks).*")
        chunks = zip(images.split(batch_size), target.split(batch_size), strict=True)
        total = -(-len(images) // batch_size)
        for x, t in tqdm(chunks, total=total, desc=desc, disable=not progress, unit="batch"):
            x = x.to(dev, copy=True).requires_grad_(True)
            outputs.append(compute(x, t.to(dev)).detach().cpu())
    return torch.cat(outputs) if outputs else torch.empty_like(images, device="cpu")


def seeded_per_image(compute: Compute, seed: int) -> Compute:
    """Wrap a random method so each image's noise depends only on (seed, the image).

    Captum draws noise for a whole batch from the global generator, so an image's
    map would change with its batch-mates. Seeding per image from its pixels makes
    an explanation a pure function of (model, image, seed): a batch of N equals N
    single calls. One Captum call per image still batches its n_samples copies.
    """

    def per_image(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        maps = []
        for xi, ti in zip(x.split(1), t.split(1), strict=True):
            maps.append(with_image_seed(xi, seed, lambda xi=xi, ti=ti: compute(xi, ti)))
        return torch.cat(maps)

    return per_image


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A 32-bit seed from (seed, the image's float32 bytes): the same image, the same seed
    (on any device)."""
    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return zlib.crc32(data, seed & 0xFFFFFFFF)


def with_image_seed(image: torch.Tensor, seed: int, run: Callable[[], torch.Tensor]):
    """Call `run()` with torch's and numpy's global generators seeded from the image,
    both restored afterwards (Captum's GradientShap also draws from numpy), and the
    image's CUDA generator too when it is on a GPU."""
    s = image_seed(image, seed)
    numpy_state = np.random.get_state()
    try:
        with fork_rng(image.device):
            torch.manual_seed(s)
            np.random.seed(s)
            return run()
    finally:
        np.random.set_state(numpy_state)


# ---------------------------------------------------------------- baselines

BASELINES = ("black", "mean", "blur", "noise")


@functools.lru_cache(maxsize=4)
def _mean_image(data_dir: str | None) -> torch.Tensor:
    from mnistlens.data import load_mnist

    return load_mnist("train", data_dir)[0].mean(dim=0, keepdim=True)  # (1, 1, 28, 28)


def mean_image(data_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """The training set's mean image (1, 1, 28, 28), read from `data_dir` (default: the
    library's data directory), cached per directory."""
    from mnistlens.data import resolve_data_dir

    return _mean_image(str(resolve_data_dir(data_dir).resolve()))


def make_baseline(
    kind: str | float | torch.Tensor,
    images: torch.Tensor,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """A reference input for each image: (N, 1, 28, 28) -> (N, 1, 28, 28), on the
    images' device.

    kind: "black" (zeros: no ink), "mean" (the training set's mean image, from
    `data_dir`), "blur" (the image itself under a heavy Gaussian blur: strokes gone,
    mass kept), "noise" (uniform noise in [0, 1], seeded per image from (seed, its
    pixels), drawn on the CPU), a number (a constant image) or a tensor broadcastable
    to the images.
    """
    if isinstance(kind, torch.Tensor):
        try:
            return kind.to(images.device, images.dtype).expand_as(images)
        except RuntimeError:
            raise MnistlensError(
                f"baseline tensor of shape {tuple(kind.shape)} does not fit images of shape "
                f"{tuple(images.shape)}; give one (1, 1, 28, 28) baseline for all images, or "
                "per-image baselines with batch_size >= the number of images"
            ) from None
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(images, float(kind))
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        return mean_image(data_dir).to(images.device, images.dtype).expand_as(images)
    if kind == "blur":
        # data.gaussian_blur makes its kernel on the CPU: blur there, move the result.
        blurred = gaussian_blur(images.cpu(), kernel_size=13, sigma=4.0)
        return blurred.to(images.device)
    if kind == "noise":
        # Per image, like the random methods: drawn for a whole batch, an image's noise
        # would depend on its position in the chunk, so IG would integrate from another
        # baseline than the one `baseline_score` (over all images at once) measures from.
        noise = [
            torch.rand(x.shape, generator=torch.Generator().manual_seed(image_seed(x, seed)))
            for x in images.split(1)
        ]
        if not noise:
            return torch.empty_like(images)
        return torch.cat(noise).to(images.device, images.dtype)
    raise MnistlensError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
