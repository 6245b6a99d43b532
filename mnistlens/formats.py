"""Load the model files users have, without running code from them.

`load_any(path)` reads three kinds of file:

- a mnistlens checkpoint (what `mnistlens train` writes), through `checkpoint.load_model`;
- a `torch.export` program (`.pt2`): graph and weights, no Python source;
- a plain state_dict (`torch.save(model.state_dict(), path)`), with the user's own class
  (`model_code="net.py:Net"`) or a registered architecture (`arch="mlp"`).

Everything else (TorchScript, ONNX, Keras, a whole pickled model, ...) is named and refused
with the way to convert it. The only code that runs is the `model_code` file the user names.

Why `.pt2` files get a check of their own: `torch.export.load` is not data-only. In torch
2.14 it unpickles archive members with `torch.load(weights_only=False)` (pickled weights and
constants in `pt2_archive/_package.py:_load_state_dict/_load_constants`, and as a silent
fallback for the sample inputs in `_export/serde/serialize.py:deserialize_torch_artifact`),
`pickle.loads` "opaque" constants, dlopens AOTInductor libraries, hands shape expressions to
`sympy.sympify` (which calls `eval`), imports modules named in tree-spec contexts
(`utils/_pytree.py:enum_object_hook`), and `ExportedProgram.module()` `exec`s the stored
`guards_code`. So before torch sees the file, `_check_pt2` reads the archive with torch's
own zip reader, passes every member torch could unpickle through
`torch.load(weights_only=True)`, and checks the program's JSON: ATen operators only, shape
expressions made of symbols, numbers and sympy functions only, plain tree specs. Then the
checked bytes (not the file again) go to `torch.export.load`, and `.module()` is called with
`check_guards=False`.

    >>> model, meta = load_any("net.pt", model_code="net.py:Net")  # (N, 1, 28, 28) -> (N, 10)
    >>> meta["format"]
    'state_dict'
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import json
import os
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, models
from .errors import MnistlensError

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
    (for a mnistlens checkpoint, everything `checkpoint.load_model` returns).

        >>> model, meta = load_any("cnn.pt")
        >>> meta["format"], meta["arch"]
        ('mnistlens-checkpoint', 'cnn')
    """
    if model_code is not None and arch is not None:
        raise MnistlensError("give either --model-code or --arch, not both")
    path = Path(path).expanduser()
    if not path.is_file():
        path = checkpoint.resolve_checkpoint(path)  # a shipped name, or a one-line error
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
        model, meta, shape, per_image = _load_program(path, data)
    elif kind == "torch":
        payload = _torch_load(path, data)
        if isinstance(payload, dict) and payload.get("format") == checkpoint.FORMAT:
            if builds or normalize:
                raise MnistlensError(
                    f"{path} is a mnistlens checkpoint, which names its own architecture and "
                    "normalizes inside; drop --model-code/--arch/normalize"
                )
            model, meta = checkpoint.load_model(path)
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
            f"{path}: the model fails on MNIST images ({_first_line(err)})"
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
        f"(N, 1, 28, 28) it raised {_first_line(first)}"
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


def _first_line(err: BaseException, limit: int = 120) -> str:
    """An exception as one short line, for messages that must stay one line."""
    text = (str(err).strip().splitlines() or [""])[0][:limit]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _refused_pickle(err: BaseException) -> str | None:
    """What a weights_only refusal is about ("it would import builtins.exec"), else None."""
    text = str(err)
    if "weights_only" not in text and "weights only" not in text.lower():
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    return f"it would import {found[1]}" if found else "it would import or call code"


def _torch_load(path: Path, data: bytes):
    """`torch.load(weights_only=True)` of bytes already read; refusals as MnistlensError."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refusals, truncated files, bad zips, odd pickles
        if why := _refused_pickle(err):
            raise MnistlensError(
                f"refusing to load {path}: it is a pickled model object or other Python object "
                f"({why}), which would run code to load; save model.state_dict() or export "
                "to .pt2 instead"
            ) from None
        raise MnistlensError(f"{path}: torch could not read it ({_first_line(err)})") from None


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
        raise MnistlensError(f"could not import {file_path}: {_first_line(err)}") from None
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
            f"{name}(**{kwargs}) from {file_path} failed: {_first_line(err)}"
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


# ---------------------------------------------------------------- torch.export programs

# Members torch.export.load reads as text (never unpickled), written by torch's zip writer.
_PT2_TEXT = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
}
_ATEN = re.compile(r"torch\.ops\.aten\.(\w+)\.(\w+)", re.ASCII)
# Symbolic-shape arithmetic that export graphs may hold next to ATen operators.
_SHAPE_OPS = frozenset(
    [
        f"_operator.{n}"
        for n in "getitem add mul sub truediv floordiv mod pow neg abs eq ne "
        "lt le gt ge and_ or_ not_".split()
    ]
    + [f"torch.{n}" for n in "sym_int sym_float sym_max sym_min sym_not sym_ite sym_sum".split()]
    + ["math.ceil", "math.floor", "math.trunc"]
)
# Names a shape expression may use (torch's deserializer adds torch.utils._sympy.functions
# to sympy's namespace); anything else, e.g. `__import__`, is refused before sympify sees it.
_SYMPY_NAMES = frozenset(
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift "
    "RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator "
    "TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity Max Min Abs Eq Ne Lt Le "
    "Gt Ge And Or Not oo zoo nan true false True False Integer Rational Float floor ceiling "
    "sqrt Piecewise Mul Add Pow".split()
)
_SYMBOL = re.compile(r"[a-z]{1,8}_?\d+", re.ASCII)  # s77, u0, zuf3, r0_1 ...
# Expressions come in sympy's srepr form, "Symbol('s77', positive=True, integer=True)": the
# only quoted text allowed is a symbol name or a number, checked like the rest once unquoted.
_QUOTED = re.compile(r"'([a-z]{1,8}_?\d+|[0-9.eE+\-]+)'", re.ASCII)
_ASSUMPTIONS = frozenset(
    "Symbol precision positive negative integer nonnegative nonpositive real finite infinite "
    "zero nonzero commutative rational even odd extended_real extended_positive "
    "extended_negative extended_nonnegative extended_nonpositive".split()
)
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_ +\-*/%().,<>=!&|~^]*", re.ASCII)  # no quotes, no [ ] : ;
_GUARD_SOURCE = re.compile(
    r"L\['\w+'\]|\.(?:size|stride)\(\)|\.storage_offset\(\)|\[\d+\]", re.ASCII
)
_TREESPEC_TYPES = {
    None,
    "builtins.tuple",
    "builtins.list",
    "builtins.dict",
    "collections.OrderedDict",
}


def _safe_expr(text) -> bool:
    """A shape expression of symbols, numbers, operators and sympy functions only."""
    if not isinstance(text, str) or len(text) > 2000:
        return False
    text = _QUOTED.sub(r"\1", text)
    if not _EXPR_CHARS.fullmatch(text):
        return False
    words = re.findall(r"[A-Za-z_]\w*", text, re.ASCII)
    return all(_SYMBOL.fullmatch(w) or w in _SYMPY_NAMES or w in _ASSUMPTIONS for w in words)


def _load_program(path: Path, data: bytes) -> tuple[nn.Module, dict, tuple, bool]:
    """A checked `.pt2` -> (GraphModule, metadata, one image's input shape, per_image)."""
    records = _check_pt2(path, data)
    try:
        program = torch.export.load(io.BytesIO(data))  # the checked bytes, not the file again
        module = program.module(check_guards=False)  # never compile the file's guards_code
    except Exception as err:  # noqa: BLE001 - deserialization errors of every kind
        raise MnistlensError(
            f"{path}: torch could not load the program ({_first_line(err)}); re-export it "
            f"with this torch ({torch.__version__})"
        ) from None
    # .module() swaps in train()/eval() that raise, since dropout and batch norm were fixed
    # at export time; mnistlens sets eval mode around every explanation, so give back
    # nn.Module's own (which change only the flag).
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    users = set(program.graph_signature.user_inputs)
    vals = [
        n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in users
    ]
    if len(vals) != 1 or not isinstance(vals[0], torch.Tensor) or vals[0].dim() < 2:
        raise MnistlensError(
            f"{path}: the program must take one batch of images (N, ...), "
            f"it takes {len(vals)} inputs; export with a single image tensor"
        )
    batch, *rest = vals[0].shape
    if not all(isinstance(d, int) for d in rest):
        raise MnistlensError(
            f"{path}: only the batch dimension may be dynamic, input is "
            f"{tuple(vals[0].shape)}; re-export with a fixed image size"
        )
    if isinstance(batch, int) and batch != 1:
        raise MnistlensError(
            f"{path} was exported for a fixed batch of {batch} images; re-export with a batch "
            "of 1, or dynamic_shapes=({0: torch.export.Dim('batch')},)"
        )
    version = json.loads(records["models/model.json"]).get("torch_version")
    meta = {
        "format": "torch-export",
        "dynamic_batch": not isinstance(batch, int),
        "per_image": isinstance(batch, int),  # exported for batch 1: run image by image
        "exported_with_torch": version,
    }
    return module, meta, tuple(rest), isinstance(batch, int)


def _check_pt2(path: Path, data: bytes) -> dict[str, bytes]:
    """Refuse a `.pt2` archive from which torch.export.load could run code; -> its members."""

    def refuse(why: str):
        raise MnistlensError(
            f"refusing to load {path}: {why}; mnistlens reads .pt2 files "
            "holding plain ATen programs, as torch.export.save writes them"
        )

    records = _pt2_records(path, data, refuse)
    if records.get("archive_format") != b"pt2" or "models/model.json" not in records:
        refuse("it is not a torch.export archive (no archive_format 'pt2' or models/model.json)")
    if any(n.startswith("data/aotinductor/") for n in records):
        refuse("it holds AOTInductor-compiled native code, which torch.export.load would load")
    plain = set(_PT2_TEXT)  # members torch reads as text, JSON or raw tensor bytes
    unpickled = set()  # members torch hands to torch.load (some with weights_only=False)
    for member in [n for n in records if n.startswith("models/")]:  # torch reads them all
        if not member.endswith(".json"):
            refuse(f"unexpected member {member!r}")
        name = member[len("models/") : -len(".json")]
        plain.add(member)
        _check_program(path, member, _json(records, member, refuse), refuse)
        # Sample inputs, and the legacy single-file weights/constants, go through
        # serialize.py:deserialize_torch_artifact, which falls back to weights_only=False.
        unpickled |= {
            f"data/sample_inputs/{name}.pt",
            f"data/weights/{name}.pt",
            f"data/constants/{name}.pt",
        }
        for kind in ("weights", "constants"):
            config = f"data/{kind}/{name}_{kind}_config.json"
            if config not in records:
                continue
            plain.add(config)
            entries = _json(records, config, refuse).get("config")
            for fqn, entry in (entries if isinstance(entries, dict) else {}).items():
                file = entry.get("path_name") if isinstance(entry, dict) else None
                if not isinstance(file, str) or not re.fullmatch(r"\w[\w.\-]*", file, re.ASCII):
                    refuse(f"{config} names an odd member {str(file)[:60]!r}")  # "../", "/"
                if file.startswith(("custom_obj_", "opaque_obj_")):
                    # _package.py:_load_constants would pickle.loads / torch._C._pickle_load_obj
                    refuse(f"it holds a Python object {fqn!r}, which torch would unpickle")
                # use_pickle members: torch.load(weights_only=False) in _load_state_dict
                (unpickled if entry.get("use_pickle") else plain).add(f"data/{kind}/{file}")
    for name, blob in records.items():
        if name not in unpickled and (name in plain or name.startswith("extra/")):
            continue  # read as text / JSON / raw storage by torch, never unpickled
        try:  # everything else might be unpickled: it must be plain tensor data
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - refused whatever the reason
            why = _refused_pickle(err) or _first_line(err, 80)
            refuse(f"member {name!r} is not plain tensor data ({why})")
    return records


def _pt2_records(path: Path, data: bytes, refuse) -> dict[str, bytes]:
    """Archive members, read with torch's own zip reader and cross-checked with Python's.

    torch.export.load reads through torch._C.PyTorchFileReader, and its pre-2.8 fallback
    through zipfile; both must see the same members with the same bytes, so that a crafted
    zip cannot show one reader a harmless member and the other a payload.
    """
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
        if sum(i.file_size for i in infos) > max(20 * len(data), 2**24):
            refuse("it would unpack to far more than its size (a zip bomb?)")
        names = [i.filename for i in infos]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or len(set(names)) != len(names) or any("/" not in n for n in names):
            refuse("the archive has duplicate members or more than one top folder")
        archive = zipfile.ZipFile(io.BytesIO(data))
        ours = {i.filename.split("/", 1)[1]: archive.read(i) for i in infos}
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))  # what PT2ArchiveReader uses
        theirs = {n: reader.get_record(n) for n in reader.get_all_records()}
    except MnistlensError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated or damaged archives
        raise MnistlensError(
            f"{path} is a damaged or truncated .pt2 archive ({_first_line(err)}); export it again"
        ) from None
    if ours.keys() != theirs.keys() or any(ours[n] != theirs[n] for n in ours):
        refuse("torch's and Python's zip readers see different members")
    return ours


def _json(records: dict, member: str, refuse) -> dict:
    try:
        value = json.loads(records[member])
    except (ValueError, RecursionError) as err:
        refuse(f"{member} is not valid JSON ({_first_line(err, 60)})")
    if not isinstance(value, dict):
        refuse(f"{member} is not a JSON object")
    return value


def _check_program(path: Path, member: str, program: dict, refuse) -> None:
    """Walk a serialized program and refuse whatever would make torch import or run code."""
    for guard in program.get("guards_code") or []:  # exec'd by ExportedProgram.module()
        if not isinstance(guard, str) or not _safe_expr(_GUARD_SOURCE.sub(" s0 ", guard)):
            refuse(f"{member} has a guard that is not a shape condition: {str(guard)[:60]!r}")
    for key in program.get("range_constraints") or {}:
        if not _safe_expr(key):
            refuse(f"{member} has a range constraint on {key[:60]!r}, not a shape symbol")
    stack = [(program, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > 200:
            refuse(f"{member} is nested too deeply")
        if isinstance(item, str):
            # Strings may hold JSON again (tree specs, their contexts, node metadata).
            if item[:1] in ("[", "{"):
                try:
                    stack.append((json.loads(item), depth + 1))
                except (ValueError, RecursionError):
                    pass  # not JSON: torch will not parse it either
            continue
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
            continue
        if not isinstance(item, dict):
            continue
        if "__enum__" in item:  # _pytree.enum_object_hook would import the module it names
            refuse(f"{member} names a Python class to import ({str(item.get('fqn'))[:60]!r})")
        if {"type", "context", "children_spec"} <= item.keys() and item[
            "type"
        ] not in _TREESPEC_TYPES:
            kind = str(item["type"])[:60]
            refuse(f"{member} passes values of type {kind!r}, which torch would import")
        if isinstance(item.get("target"), str) and "inputs" in item:  # a graph node
            _check_operator(member, item["target"], refuse)
            for arg in item["inputs"] if isinstance(item["inputs"], list) else []:
                if (
                    isinstance(arg, dict)
                    and arg.get("name") in ("train", "training")
                    and arg.get("arg") == {"as_bool": True}
                ):
                    raise MnistlensError(
                        f"{path} was exported in training mode ({item['target']} with "
                        f"{arg['name']}=True: dropout and batch norm act as in training); "
                        "export after model.eval()"
                    )
        if "as_operator" in item:
            _check_operator(member, item["as_operator"], refuse)
        if "expr_str" in item and not _safe_expr(item["expr_str"]):  # sympy.sympify would eval it
            expr = str(item["expr_str"])[:60]
            refuse(f"{member} has a shape expression that is not arithmetic: {expr!r}")
        if item.get("as_custom_obj") or item.get("custom_obj_values"):
            refuse(f"{member} uses TorchScript objects")
        stack.extend((v, depth + 1) for v in item.values())


def _check_operator(member: str, target, refuse) -> None:
    """ATen operators (looked up in torch's registry, never imported) and shape arithmetic."""
    match = _ATEN.fullmatch(target) if isinstance(target, str) else None
    if match and not any(part.startswith("__") for part in match.groups()):
        try:
            op = getattr(getattr(torch.ops.aten, match[1]), match[2])
        except Exception:  # noqa: BLE001 - unknown operator
            op = None
        if isinstance(op, torch._ops.OpOverload):
            return
    if target in _SHAPE_OPS:
        return
    refuse(f"{member} calls {str(target)[:60]!r}, which is not an ATen operator")


# ---------------------------------------------------------------- one input convention


class InputAdapter(nn.Module):
    """Feeds mnistlens images, (N, 1, 28, 28) in [0, 1], to a model that wants them otherwise.

    `norm` standardizes the pixels (for a model trained on normalized input), the images are
    reshaped to `shape` per image, and with `per_image` the model sees one image at a time
    (a program exported for a batch of 1). The wrapped model is the submodule `net`.
    """

    def __init__(
        self, net: nn.Module, shape: tuple, normalize: bool = False, per_image: bool = False
    ) -> None:
        super().__init__()
        self.norm = models.Normalize() if normalize else nn.Identity()
        self.net = net
        self.shape = tuple(shape)
        self.per_image = per_image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).reshape(x.shape[0], *self.shape)  # (N, *shape)
        if self.per_image:
            return torch.cat([self.net(x[i : i + 1]) for i in range(x.shape[0])])  # (N, 10)
        return self.net(x)
