"""Where the computing happens: the CPU or a CUDA GPU.

Every function that loops over images or trains takes `device=` (keyword only), with
one convention throughout:

- "auto" (the default; None means the same): CUDA when `torch.cuda.is_available()`,
  else the CPU;
- "cpu", "cuda" (the current CUDA device) or "cuda:N", or a `torch.device`.

What stays the same whatever the device:
- **results come back on the CPU**: maps, scores, logits, activations, deltas;
- **the caller's model never moves**: a model not already on the device is run as a
  *copy* there (`model_on`); a model already there is used as it is. `train` builds its
  own model and returns it on the CPU, so a checkpoint trained on a GPU loads anywhere;
- **random draws that define a result** (random rankings, baselines, SmoothGrad's noise,
  training's shuffling and augmentation) come from CPU generators, so they are the same
  numbers on every device. (Captum's GradientSHAP and dropout draw on the device itself.)

A CPU model on the CPU (device "cpu", or "auto" without CUDA) is neither copied nor
moved, and the results are bit for bit those of the code before devices existed. On
CUDA they agree with the CPU's to float32 rounding (kernels sum in another order), not
bit for bit; GradientSHAP's maps and a trained model differ more (their draws above).

For code in mnistlens: a function that hands the model to an attribution method passes
the caller's model, not its own copy: each method places its own copy, after choosing
layers on the model as given (`graph.analyze` runs a CPU forward pass).

    resolve_device("auto")        # device(type='cpu') on a machine without CUDA
    attribution.saliency(model, images, device="cuda")  # computed on the GPU, maps on the CPU
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import re
import threading
from collections.abc import Iterator

import torch
from torch import nn

from mnistlens.errors import MnistlensError, first_line

Device = str | torch.device | None  # what every `device=` accepts; None means "auto"

CHOICES = "auto, cpu, cuda or cuda:N"

# Rows per forward or gradient pass on a GPU, where the CPU code uses cache-sized passes
# of ~64 rows (`models.FAST_ROWS`): a GPU wants many rows per kernel launch.
GPU_ROWS = 1024


def resolve_device(device: Device = "auto") -> torch.device:
    """The `torch.device` that `device` names: "auto" or None -> CUDA if available, else
    the CPU; "cpu"; "cuda" (the current CUDA device, with its index) or "cuda:N".

    Raises MnistlensError, one line, for a name that is none of these, for CUDA on a
    machine without it, and for a CUDA index the machine does not have.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return _cuda() if torch.cuda.is_available() else torch.device("cpu")
    elif isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device.strip().lower()):
        dev = torch.device(device.strip().lower())
    else:
        raise MnistlensError(f"unknown device {device!r}; choose {CHOICES}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise MnistlensError(f"device {str(dev)!r} is not supported; choose {CHOICES}")
    if not torch.cuda.is_available():
        raise MnistlensError(
            f"device {str(dev)!r} asked for, but CUDA is not available on this machine: "
            "use --device cpu (device='cpu' in Python)"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise MnistlensError(
            f"device {str(dev)!r} asked for, but this machine has {count} CUDA "
            f"device{'s' if count > 1 else ''}: cuda:0 to cuda:{count - 1}"
        )
    return _cuda(dev.index)


def _cuda(index: int | None = None) -> torch.device:
    """A CUDA device with its index, so that it compares equal to a tensor's `.device`."""
    return torch.device("cuda", torch.cuda.current_device() if index is None else index)


def describe(device: torch.device) -> str:
    """A device for people and for a checkpoint's metadata: 'cpu', 'cuda:0 (NVIDIA L4)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def model_on(model: nn.Module, device: Device = "auto") -> nn.Module:
    """`model` itself if its parameters and buffers are all on `device` (or it has none),
    else a deep copy moved there: the caller's model is never moved.

    A model that cannot be copied raises MnistlensError saying how to go on.
    """
    dev = resolve_device(device)
    tensors = itertools.chain(model.parameters(), model.buffers())
    if all(t.device == dev for t in tensors):
        return model
    try:
        moved = copy.deepcopy(model)
    except Exception as err:  # noqa: BLE001 - any failure to copy: say what to do
        raise MnistlensError(
            f"cannot copy the model to {dev} ({first_line(err, 80)}); move it there "
            "yourself (model.to(device)) or use device='cpu'"
        ) from None
    return moved.to(dev)


def rows_per_pass(device: torch.device, cpu_rows: int) -> int:
    """How many rows to push through the model at once: `cpu_rows` on the CPU (its
    cache-sized passes), at least GPU_ROWS on a GPU."""
    return cpu_rows if device.type == "cpu" else max(cpu_rows, GPU_ROWS)


# torch's and numpy's global generators belong to the process, not to a thread: a seed
# set in one thread changes the numbers every other thread draws meanwhile, and its
# restore undoes theirs. So seeded blocks run one at a time (re-entrant: a seeded method
# inside a seeded check); the explorer serves its sessions from threads of one process.
_SEEDED = threading.RLock()


@contextlib.contextmanager
def fork_rng(device: torch.device) -> Iterator[None]:
    """`torch.random.fork_rng` for the CPU generator and, on CUDA, `device`'s generator
    too: seeding inside the block (`torch.manual_seed` seeds every device) leaves the
    caller's random streams as they were, on both. One such block at a time in the
    process (`_SEEDED`)."""
    devices = [device.index] if device.type == "cuda" else []
    with _SEEDED, torch.random.fork_rng(devices=devices):
        yield


def cpu_randn(like: torch.Tensor) -> torch.Tensor:
    """`torch.randn_like(like)`, drawn from the CPU generator whatever `like`'s device,
    so that seeded noise is the same numbers on a GPU as on the CPU."""
    if like.device.type == "cpu":
        return torch.randn_like(like)
    return torch.randn(like.shape, dtype=like.dtype).to(like.device)


class OnDevice(nn.Module):
    """`model` (already on `device`: see `model_on`) as a function of tensors on any
    device: inputs go to `device`, outputs come back to the CPU. For code that calls
    the model itself, e.g. Captum's metrics."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device)).cpu()
