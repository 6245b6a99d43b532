"""Reading a `torch.export` program (`.pt2`) without running code from it.

Why `.pt2` files get a check of their own: `torch.export.load` is not data-only. In torch
2.14 it unpickles archive members with `torch.load(weights_only=False)` (pickled weights and
constants in `pt2_archive/_package.py:_load_state_dict/_load_constants`, and as a silent
fallback for the sample inputs in `_export/serde/serialize.py:deserialize_torch_artifact`),
`pickle.loads` "opaque" constants, dlopens AOTInductor libraries, hands shape expressions to
`sympy.sympify` (which calls `eval`), imports modules named in tree-spec contexts
(`utils/_pytree.py:enum_object_hook`), and `ExportedProgram.module()` `exec`s the stored
`guards_code`. So before torch sees the file, `check_pt2` reads the archive with torch's
own zip reader, passes every member torch could unpickle through
`torch.load(weights_only=True)`, and checks the program's JSON: ATen operators only, shape
expressions made of symbols, numbers and sympy functions only, plain tree specs. Then the
checked bytes (not the file again) go to `torch.export.load`, and `.module()` is called with
`check_guards=False`.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from mnistlens.errors import MnistlensError, first_line, refused_pickle
from mnistlens.graph import trace

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


def load_program(path: Path, data: bytes) -> tuple[nn.Module, dict, tuple, bool]:
    """A checked `.pt2` -> (GraphModule, metadata, one image's input shape, per_image)."""
    records = check_pt2(path, data)
    try:
        program = torch.export.load(io.BytesIO(data))  # the checked bytes, not the file again
        module = program.module(check_guards=False)  # never compile the file's guards_code
    except Exception as err:  # noqa: BLE001 - deserialization errors of every kind
        raise MnistlensError(
            f"{path}: torch could not load the program ({first_line(err)}); re-export it "
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
    per_image = isinstance(batch, int)  # exported for batch 1
    if per_image:
        batched = runs_batched(module, tuple(rest))
        if batched is not None:
            module, per_image = batched, False
    meta = {
        "format": "torch-export",
        "dynamic_batch": not isinstance(batch, int),
        "per_image": per_image,  # run image by image: a batch-1 program that needs it
        "exported_with_torch": version,
    }
    return module, meta, tuple(rest), per_image


PROBE_IMAGES = 4  # images of the check that a batch-1 program runs a batch
PROBE_TOLERANCE = 1e-4  # relative to the largest output: the same function, other kernels


def runs_batched(module: nn.Module, shape: tuple) -> nn.Module | None:
    """The batch-1 program as a module that runs a whole batch, or None if it cannot.

    `torch.export.export(net, (torch.zeros(1, 1, 28, 28),))`, what most people write,
    fixes the batch at 1, and `.module()` checks every input's shape. Most MNIST
    networks still treat each image on its own and never name the batch size (no
    `view(1, ...)`): their torch.fx retrace, which keeps the graph and drops the input
    check, then takes any batch. That is what lets methods built on module hooks
    (DeepLIFT, guided backprop) see the batch they explain rather than one image at a
    time, and it is much faster. Accepted only if it runs a batch of PROBE_IMAGES random
    images and gives each image's output as the program does on that image alone.
    """
    traced = trace(module)
    if traced is None:
        return None
    x = torch.rand(PROBE_IMAGES, *shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            one_by_one = torch.cat([module(x[i : i + 1]) for i in range(len(x))])
            together = traced(x)
    except Exception:  # noqa: BLE001 - e.g. a reshape that names the batch of 1
        return None
    if not isinstance(together, torch.Tensor) or together.shape != one_by_one.shape:
        return None
    scale = float(one_by_one.abs().max()) or 1.0
    if not torch.allclose(together, one_by_one, rtol=0, atol=PROBE_TOLERANCE * scale):
        return None
    return traced


def check_pt2(path: Path, data: bytes) -> dict[str, bytes]:
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
            why = refused_pickle(err) or first_line(err, 80)
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
            f"{path} is a damaged or truncated .pt2 archive ({first_line(err)}); export it again"
        ) from None
    if ours.keys() != theirs.keys() or any(ours[n] != theirs[n] for n in ours):
        refuse("torch's and Python's zip readers see different members")
    return ours


def _json(records: dict, member: str, refuse) -> dict:
    try:
        value = json.loads(records[member])
    except (ValueError, RecursionError) as err:
        refuse(f"{member} is not valid JSON ({first_line(err, 60)})")
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
