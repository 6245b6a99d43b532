"""Load the model files users have, without running code from them.

`load_any(path)` reads three kinds of file:

- a mnistlens checkpoint (what `mnistlens train` writes), through `checkpoint.load_checkpoint`;
- a `torch.export` program (`.pt2`): graph and weights, no Python source;
- a plain state_dict (`torch.save(model.state_dict(), path)`), with the user's own class
  (`model_code="net.py:Net"`) or a registered architecture (`arch="mlp"`).

Everything else (TorchScript, ONNX, Keras, a whole pickled model, ...) is named and refused
with the way to convert it. The only code that runs is the `model_code` file the user names.

A `.pt2` file is checked by `pt2.load_program` before torch reads it: `torch.export.load`
is not data-only (see that module for every route by which it would run code).

    >>> model, meta = load_any("net.pt", model_code="net.py:Net")  # (N, 1, 28, 28) -> (N, 10)
    >>> meta["format"]
    'state_dict'
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import os
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from mnistlens import models
from mnistlens.errors import MnistlensError, first_line, refused_pickle
from mnistlens.loading.adapter import InputAdapter
from mnistlens.loading.checkpoint import FORMAT as CHECKPOINT_FORMAT
from mnistlens.loading.checkpoint import load_checkpoint
from mnistlens.loading.pt2 import load_program
from mnistlens.paths import resolve_checkpoint

CONVERT = (
    "torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 1, 28, 28),)), "
    '"model.pt2") or torch.save(model.state_dict(), "model.pt")'
)
SUPPORTED = (
    "mnistlens reads mnistlens checkpoints, torch.export programs (.pt2) and state_dict files "
    "(with --model-code file.py:Class or --arch NAME)"
)
_PROBE_SHAPES = ((1, 28, 28), (784,), (28, 28))  # input layouts tried for Python models


def load_any(
    path: str | os.PathLike,
    *,
    model_code: str | None = None,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    normalize: bool = False,
) -> tuple[nn.Module, dict]:
    """Load a model file of any supported format, in eval mode: -> (model, metadata).

    The model takes mnistlens images, (N, 1, 28, 28) float32 in [0, 1], and returns
    (N, 10) class scores; a model that expects (N, 784) or (N, 28, 28), or a program
    exported for batch 1, is wrapped so that it does.

    Args:
        path: a file, or the name of a shipped checkpoint (`"cnn.pt"`).
        model_code: for a state_dict file, `"path/to/net.py:Net"`: the user's own class,
            built with `Net(**arch_kwargs)`.
        arch: for a state_dict file, a registered mnistlens architecture (`models.list_models()`).
        arch_kwargs: constructor arguments for `model_code` or `arch` (default none).
        normalize: the model was trained on standardized pixels ((x - 0.1307) / 0.3081, as
            PyTorch's examples/mnist does): put `models.Normalize` in front of it.

    `metadata` has `format` ("mnistlens-checkpoint", "torch-export" or "state_dict"),
    `path`, `input_shape` (one image as the model takes it), `outputs` ("logits",
    "log_probabilities" or "probabilities"), `normalize`, and what the format records
    (for a mnistlens checkpoint, everything `checkpoint.load_checkpoint` returns).

        >>> model, meta = load_any("cnn.pt")
        >>> meta["format"], meta["arch"]
        ('mnistlens-checkpoint', 'cnn')
    """
    if model_code is not None and arch is not None:
        raise MnistlensError("give either --model-code or --arch, not both")
    path = Path(path).expanduser()
    if not path.is_file():
        path = resolve_checkpoint(path)  # a shipped name, or a one-line error
    data = path.read_bytes()
    kind = sniff(path, data)
    builds = model_code is not None or arch is not None
    shape, per_image = None, False  # None: found by trying the model
    if kind == "torch-export":
        if builds:
            raise MnistlensError(
                f"{path} is a torch.export program, which carries its own architecture; "
                "drop --model-code/--arch"
            )
        model, meta, shape, per_image = load_program(path, data)
    elif kind == "torch":
        payload = _torch_load(path, data)
        if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
            if builds or normalize:
                raise MnistlensError(
                    f"{path} is a mnistlens checkpoint, which names its own architecture and "
                    "normalizes inside; drop --model-code/--arch/normalize"
                )
            model, meta = load_checkpoint(path)
            extra = {"input_shape": [1, 28, 28], "outputs": "logits", "normalize": False}
            return model, dict(meta, format="mnistlens-checkpoint", **extra)
        model, meta = _load_state_dict(path, payload, model_code, arch, arch_kwargs or {})
    else:
        raise MnistlensError(_not_supported(path, kind))
    return _adapt(path, model, dict(meta, path=str(path)), normalize, shape, per_image)


def _adapt(path, model, meta, normalize, shape, per_image) -> tuple[nn.Module, dict]:
    """Wrap `model` to take (N, 1, 28, 28) in [0, 1] if it must; check it returns (N, 10)."""
    model.eval()
    if shape is None:
        shape = _probe_shape(path, model)
    if normalize or per_image or shape != (1, 28, 28):
        model = InputAdapter(model, shape, normalize, per_image).eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model(x)  # (2, 10)
    except Exception as err:  # noqa: BLE001 - whatever the model raises
        raise MnistlensError(
            f"{path}: the model fails on MNIST images ({first_line(err)})"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise MnistlensError(
            f"{path}: the model returns {got} for 2 images; mnistlens needs (N, 10) class scores"
        )
    one = torch.ones(2)
    if (out <= 0).all() and torch.allclose(out.exp().sum(1), one, atol=1e-3):
        outputs = "log_probabilities"  # e.g. F.log_softmax, as PyTorch's examples/mnist ends
    elif (out >= 0).all() and torch.allclose(out.sum(1), one, atol=1e-3):
        outputs = "probabilities"
    else:
        outputs = "logits"
    meta.update(input_shape=list(shape), normalize=normalize, outputs=outputs)
    return model, meta


def _probe_shape(path, model: nn.Module) -> tuple:
    """The first of (1, 28, 28), (784,), (28, 28) that the model takes, per image."""
    first = None
    for shape in _PROBE_SHAPES:
        try:
            with torch.no_grad():
                model(torch.zeros(2, *shape))
            return shape
        except Exception as err:  # noqa: BLE001 - try the next layout
            first = first or err
    raise MnistlensError(
        f"{path}: the model takes none of (N, 1, 28, 28), (N, 784), (N, 28, 28): on "
        f"(N, 1, 28, 28) it raised {first_line(first)}"
    )


def sniff(path: Path, data: bytes) -> str:
    """What a file holds, from its bytes (and, where bytes cannot tell, its suffix).

    -> "torch-export", "torch" (torch.save/pickle), "torchscript", "onnx", "keras",
    "safetensors", "empty", "damaged-zip", "zip" or "unknown".
    """
    suffix = path.suffix.lower()
    if not data:
        return "empty"
    if data.startswith(b"\x89HDF\r\n\x1a\n") or suffix in (".h5", ".hdf5", ".keras"):
        return "keras"
    if data.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, ValueError, EOFError):
            return "damaged-zip"
        tails = {n.split("/", 1)[-1] for n in names}
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"  # torch.jit.save; torch.jit.load would run its code
        if "archive_format" in tails or any(t.startswith("models/") for t in tails):
            return "torch-export"
        if "data.pkl" in tails:
            return "torch"  # torch.save's zip format
        if "config.json" in tails and any(n.endswith(".weights.h5") for n in names):
            return "keras"  # Keras 3 `.keras` files are zips
        return "zip"
    if suffix == ".onnx" or re.match(rb"\x08[\x01-\x20]\x12", data):  # ir_version, producer
        return "onnx"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a pickle: torch.save's legacy format, or pickle.dump
    if len(data) > 9 and data[8:10] == b'{"' and int.from_bytes(data[:8], "little") < len(data):
        return "safetensors"
    return "unknown"


def _not_supported(path: Path, kind: str) -> str:
    """The one-line refusal for a file mnistlens does not read."""
    what = {
        "empty": "is empty",
        "damaged-zip": "is a damaged or truncated zip archive (.pt2 or torch.save file?)",
        "torchscript": "is a TorchScript archive (torch.jit.save), whose code torch.jit.load "
        "compiles and runs, so mnistlens does not open it",
        "onnx": "is an ONNX model, which mnistlens does not run",
        "keras": "is a Keras/HDF5 model, which mnistlens does not run",
        "safetensors": "is a safetensors file, which mnistlens does not read (torch.save("
        "safetensors.torch.load_file(path), 'model.pt') makes it a state_dict file)",
        "zip": "is a zip archive of no known model format",
        "unknown": "is not a model file mnistlens knows",
    }[kind]
    return f"{path} {what}; {SUPPORTED}; from a PyTorch model, write one with {CONVERT}"


def _torch_load(path: Path, data: bytes):
    """`torch.load(weights_only=True)` of bytes already read; refusals as MnistlensError."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refusals, truncated files, bad zips, odd pickles
        if why := refused_pickle(err):
            raise MnistlensError(
                f"refusing to load {path}: it is a pickled model object or other Python object "
                f"({why}), which would run code to load; save model.state_dict() or export "
                "to .pt2 instead"
            ) from None
        raise MnistlensError(f"{path}: torch could not read it ({first_line(err)})") from None


# ---------------------------------------------------------------- state_dict files


def _load_state_dict(path, payload, model_code, arch, arch_kwargs) -> tuple[nn.Module, dict]:
    """A state_dict (bare or under a common key) into the named class or architecture."""
    state, key = _find_state_dict(path, payload)
    if model_code is None and arch is None:
        raise MnistlensError(
            f"{path} holds only weights (a state_dict); name the class they belong to with "
            f"--model-code file.py:Class or --arch NAME (one of {', '.join(models.list_models())})"
        )
    if arch is not None:
        model, meta = models.build(arch, **arch_kwargs), {"arch": arch}
    else:
        model, meta = _build_user_model(model_code, arch_kwargs), {"model_code": model_code}
    prefix = "module." if all(k.startswith("module.") for k in state) else ""
    state = {k[len(prefix) :]: v for k, v in state.items()}  # nn.DataParallel adds "module."
    _check_fit(path, model, state, arch or model_code)
    model.load_state_dict(state)
    meta.update(
        format="state_dict",
        arch_kwargs=arch_kwargs,
        class_name=type(model).__name__,
        state_dict_key=key,
        stripped_prefix=prefix or None,
    )
    return model, meta


def _find_state_dict(path, payload) -> tuple[dict, str | None]:
    """-> (name -> tensor, the key it was found under or None)."""

    def is_state(d):
        return (
            isinstance(d, dict)
            and d
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
        )

    if is_state(payload):
        return payload, None
    if isinstance(payload, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if is_state(payload.get(key)):
                return payload[key], key
        keys = ", ".join(repr(k) for k in list(payload)[:6])
        raise MnistlensError(
            f"{path} is a torch file but no state_dict: a dict with keys {keys}, and none of "
            "'state_dict', 'model_state_dict', 'model' maps names to tensors"
        )
    raise MnistlensError(
        f"{path} is a torch file holding a {type(payload).__name__}, not a state_dict; "
        "save model.state_dict()"
    )


def _build_user_model(model_code: str, kwargs: dict) -> nn.Module:
    """Import the user's `file.py:Class` by path and build `Class(**kwargs)`."""
    file, sep, name = model_code.rpartition(":")
    if not sep or not file or not name.isidentifier():
        raise MnistlensError(f"--model-code must look like path/to/net.py:Net, got {model_code!r}")
    file_path = Path(file).expanduser()
    if not file_path.is_file():
        raise MnistlensError(f"--model-code {model_code!r}: no file {file_path}")
    digest = hashlib.sha1(str(file_path.resolve()).encode()).hexdigest()[:8]
    module_name = f"_mnistlens_user_{re.sub(r'[^0-9a-zA-Z_]', '_', file_path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickle look classes up here
    sys.path.insert(0, str(file_path.resolve().parent))  # so it can import its neighbours
    try:
        spec.loader.exec_module(module)  # the user's own source: the one code we run
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any error in the user's file
        del sys.modules[module_name]
        raise MnistlensError(f"could not import {file_path}: {first_line(err)}") from None
    finally:
        sys.path.remove(str(file_path.resolve().parent))
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        found = sorted(
            k
            for k, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module_name
        )
        problem = "no class" if cls is None else "a name that is not an nn.Module class"
        found = ", ".join(found) or "none"
        raise MnistlensError(f"{file_path} has {problem} {name!r}; its nn.Module classes: {found}")
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call tell
        params = []
    needed = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in kwargs
    ]
    if needed:
        raise MnistlensError(
            f"{name}() in {file_path} needs arguments ({', '.join(needed)}); "
            f"pass them as arch_kwargs, e.g. {{{needed[0]!r}: ...}}"
        )
    try:
        return cls(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's constructor
        raise MnistlensError(
            f"{name}(**{kwargs}) from {file_path} failed: {first_line(err)}"
        ) from None


def _check_fit(path, model: nn.Module, state: dict, source: str) -> None:
    """One-line error naming the first key that does not fit `model`."""
    own = model.state_dict()
    fix = f"check that {source!r} is the class these weights were saved from (and arch_kwargs)"
    if missing := [k for k in own if k not in state]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MnistlensError(
            f"{path}: weights do not fit {source}: missing key {missing[0]!r}{more}; {fix}"
        )
    if extra := [k for k in state if k not in own]:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise MnistlensError(
            f"{path}: weights do not fit {source}: unexpected key {extra[0]!r}{more}; {fix}"
        )
    for k, v in own.items():
        if v.shape != state[k].shape:
            raise MnistlensError(
                f"{path}: weights do not fit {source}: {k!r} is {tuple(state[k].shape)} in the "
                f"file but {tuple(v.shape)} in the model; {fix}"
            )


# ---------------------------------------------------------------- one input convention
