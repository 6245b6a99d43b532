"""load_any: the model files users have load with their own outputs; nothing in a file runs."""

import importlib.util
import inspect
import io
import json
import pickle
import sys
import warnings
import zipfile
from types import SimpleNamespace

import cli_child
import nets
import pytest
import torch

from mnistlens import MnistlensError, models, save_checkpoint
from mnistlens.data import MEAN, STD
from mnistlens.loading.formats import load_any

from conftest import CHECKPOINTS, WritesAFile

BATCH = torch.export.Dim("batch")


def images(n, seed=1):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def refused(path, pattern, **kwargs):
    """load_any raises a one-line MnistlensError matching `pattern`; -> the message."""
    with pytest.raises(MnistlensError, match=pattern) as info:
        load_any(path, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's source file (tests/nets.py: PyTorch's examples/mnist Net, a flat-input
    MLP, a class that needs an argument, ...), their models (seed 0, eval mode) and the
    files they saved."""
    root = tmp_path_factory.mktemp("user")
    code = root / "net.py"
    code.write_text(inspect.getsource(nets))
    spec = importlib.util.spec_from_file_location("user_net", code)
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_net"] = module  # so torch.save(model) can pickle the class by name
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net, mlp = module.Net().eval(), module.MLP().eval()
    torch.save(net.state_dict(), root / "net_state.pt")
    torch.save(mlp.state_dict(), root / "mlp_state.pt")
    example = (torch.zeros(2, 1, 28, 28),)
    program = torch.export.export(net, example, dynamic_shapes=({0: BATCH},))
    torch.export.save(program, root / "net.pt2")
    one = torch.export.export(net, (torch.zeros(1, 1, 28, 28),))  # the batch is fixed to 1
    torch.export.save(one, root / "net_batch1.pt2")
    yield SimpleNamespace(root=root, code=code, module=module, net=net, mlp=mlp)
    del sys.modules["user_net"]


# ---------------------------------------------------------------- state_dict files


@pytest.mark.parametrize("normalize", [False, True])
def test_state_dict_with_users_class_gives_the_same_outputs(user, normalize):
    model, meta = load_any(
        user.root / "net_state.pt", model_code=f"{user.code}:Net", normalize=normalize
    )
    x = images(5)
    expected = user.net((x - MEAN) / STD if normalize else x)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert not model.training
    assert meta["format"] == "state_dict" and meta["class_name"] == "Net"
    assert meta["outputs"] == "log_probabilities"  # examples/mnist ends in F.log_softmax
    assert meta["normalize"] is normalize and meta["input_shape"] == [1, 28, 28]


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_state_dict_wrapped_in_a_training_checkpoint(user, tmp_path, key):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, key: user.net.state_dict(), "lr": 0.1}, path)
    model, meta = load_any(path, model_code=f"{user.code}:Net")
    assert meta["state_dict_key"] == key
    torch.testing.assert_close(model(images(2)), user.net(images(2)))


def test_data_parallel_prefix_is_stripped(user, tmp_path):
    path = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in user.mlp.state_dict().items()}, path)
    model, meta = load_any(path, model_code=f"{user.code}:MLP")
    assert meta["stripped_prefix"] == "module."
    torch.testing.assert_close(model(images(3)), user.mlp(images(3).reshape(3, 784)))


def test_flat_input_mlp_is_fed_flattened_images(user):
    model, meta = load_any(user.root / "mlp_state.pt", model_code=f"{user.code}:MLP")
    x = images(4)
    torch.testing.assert_close(model(x), user.mlp(x.reshape(4, 784)))  # (N, 784)
    assert meta["input_shape"] == [784] and meta["outputs"] == "logits"


def test_registered_architecture_keeps_its_layer_names(tmp_path):
    torch.manual_seed(0)
    net = models.build("mlp", hidden=(32,), dropout=0.0).eval()
    torch.save(net.state_dict(), tmp_path / "mlp.pt")
    model, meta = load_any(
        tmp_path / "mlp.pt", arch="mlp", arch_kwargs={"hidden": [32], "dropout": 0.0}
    )
    torch.testing.assert_close(model(images(3)), net(images(3)))
    assert "fc1" in models.layer_names(model)  # not wrapped: explanations address its layers
    assert meta["arch"] == "mlp"


def test_state_dict_without_a_class_says_how_to_name_one(user):
    refused(user.root / "net_state.pt", r"only weights.*--model-code file\.py:Class or --arch NAME")


def test_model_code_and_arch_together_are_refused(user):
    refused(user.root / "net_state.pt", "not both", model_code=f"{user.code}:Net", arch="mlp")


@pytest.mark.parametrize(
    "model_code, pattern",
    [
        ("{root}/missing.py:Net", "no file .*missing.py"),
        (
            "{root}/net.py:Resnet",
            r"no class 'Resnet'; its nn.Module classes: MLP, Net, RawMLP, SmallNet, TinyNet, Wide",
        ),
        ("{root}/net.py:Wide", r"Wide\(\) .* needs arguments \(width\); pass them as arch_kwargs"),
        ("{root}/net.py", "must look like path/to/net.py:Net"),
        ("{root}/broken.py:Net", "could not import .*broken.py: ZeroDivisionError"),
    ],
)
def test_model_code_errors_name_the_fix(user, model_code, pattern):
    (user.root / "broken.py").write_text("x = 1 / 0\n")
    refused(user.root / "net_state.pt", pattern, model_code=model_code.format(root=user.root))


def test_constructor_arguments_come_from_arch_kwargs(user, tmp_path):
    torch.manual_seed(0)
    wide = user.module.Wide(7).eval()
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    model, meta = load_any(
        tmp_path / "wide.pt", model_code=f"{user.code}:Wide", arch_kwargs={"width": 7}
    )
    torch.testing.assert_close(model(images(2)), wide(images(2)))
    assert meta["arch_kwargs"] == {"width": 7}


def test_weights_that_do_not_fit_name_the_first_key(user, tmp_path):
    refused(
        user.root / "net_state.pt",
        r"do not fit .*: unexpected key 'conv1.weight' \(and 3 more\); check that",
        model_code=f"{user.code}:MLP",
    )
    refused(
        user.root / "mlp_state.pt",
        r"'fc1.weight' is \(64, 784\) in the file but \(32, 784\) in the model",
        model_code=f"{user.code}:MLP",
        arch_kwargs={"hidden": 32},
    )
    partial = {k: v for k, v in user.mlp.state_dict().items() if k != "fc2.bias"}
    torch.save(partial, tmp_path / "partial.pt")
    refused(tmp_path / "partial.pt", "missing key 'fc2.bias'", model_code=f"{user.code}:MLP")


# ---------------------------------------------------------------- mnistlens checkpoints


def test_mnistlens_checkpoints_load_through_checkpoint(tmp_path):
    net = models.build("mlp", hidden=(16,), dropout=0.0)
    path = save_checkpoint(
        tmp_path / "m.pt", net, "mlp", {"hidden": [16], "dropout": 0.0}, {"test_accuracy": 0.5}
    )
    model, meta = load_any(path)
    assert meta["format"] == "mnistlens-checkpoint" and meta["arch"] == "mlp"
    assert meta["test_accuracy"] == 0.5 and meta["path"] == str(path)
    torch.testing.assert_close(model(images(2)), net.eval()(images(2)))


def test_bare_names_resolve_to_shipped_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, meta = load_any("linear.pt")
    assert meta["path"] == str(CHECKPOINTS / "linear.pt") and meta["arch"] == "linear"


# ---------------------------------------------------------------- torch.export programs


def test_exported_program_gives_the_same_outputs_for_any_batch(user):
    model, meta = load_any(user.root / "net.pt2")
    for n in (1, 4):
        torch.testing.assert_close(model(images(n)), user.net(images(n)), rtol=1e-5, atol=1e-5)
    assert meta["format"] == "torch-export" and meta["dynamic_batch"] is True
    assert meta["exported_with_torch"] == torch.__version__
    assert "_guards_fn" not in dict(model.named_modules())  # guards_code is never compiled


def test_program_exported_for_one_image_runs_a_whole_batch(user):
    """Exported for a batch of 1, its graph names no batch size: it runs batches as they
    come (tests/test_loading.py has a program that must go image by image)."""
    model, meta = load_any(user.root / "net_batch1.pt2")
    torch.testing.assert_close(model(images(3)), user.net(images(3)), rtol=1e-5, atol=1e-5)
    assert meta["per_image"] is False and meta["dynamic_batch"] is False


def test_exported_program_explains_like_the_original(user):
    """eval() works (torch's .module() forbids it) and input gradients match the original's."""
    model, _ = load_any(user.root / "net.pt2", normalize=True)
    x, x0 = images(2).requires_grad_(), images(2).requires_grad_()
    with models.evaluating(model, freeze=True):
        model(x)[:, 3].sum().backward()
    user.net((x0 - MEAN) / STD)[:, 3].sum().backward()
    assert x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, x0.grad, rtol=1e-4, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # restored after the block


def test_program_exported_in_training_mode_is_refused(user, tmp_path):
    torch.manual_seed(0)
    net = user.module.Net().train()  # forgot model.eval(): dropout would stay on
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 28, 28),)), tmp_path / "t.pt2")
    refused(tmp_path / "t.pt2", r"exported in training mode .*export after model.eval\(\)")


def test_program_for_a_fixed_batch_of_several_is_refused(user, tmp_path):
    program = torch.export.export(user.mlp, (torch.zeros(4, 784),))
    torch.export.save(program, tmp_path / "b4.pt2")
    refused(tmp_path / "b4.pt2", r"fixed batch of 4 images; re-export with a batch of 1")


def test_truncated_program_is_refused(user, tmp_path):
    data = (user.root / "net.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.pt2", "damaged or truncated")


def test_program_with_model_code_is_refused(user):
    refused(user.root / "net.pt2", "carries its own architecture", model_code=f"{user.code}:Net")


# ---------------------------------------------------------------- crafted .pt2 archives


def _torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _craft(source, target, edit=None, extra=(), first=()):
    """Copy a .pt2 archive; `edit(name, data, root)` may change a member's bytes, `extra`
    appends (name, bytes) members, `first` puts members before the originals."""
    with zipfile.ZipFile(source) as zin:
        members = [(i.filename, zin.read(i)) for i in zin.infolist()]
    root = members[0][0].split("/")[0]
    with zipfile.ZipFile(target, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": on purpose
        for name, data in [(f"{root}/{n}", d) for n, d in first]:
            zout.writestr(name, data)
        for name, data in members:
            inner = name.split("/", 1)[1]
            zout.writestr(name, edit(inner, data) if edit else data)
        for name, data in extra:
            zout.writestr(f"{root}/{name}", data)
    return target


def _edit_program(change):
    """An `edit` applying `change(program_dict)` to models/model.json."""

    def edit(name, data):
        if name != "models/model.json":
            return data
        program = json.loads(data)
        change(program)
        return json.dumps(program).encode()

    return edit


def _guards(marker):
    def change(program):
        program["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    return change


def _sympy(marker):
    def change(program):
        sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        sizes[0] = {
            "as_expr": {
                "expr_str": f"__import__('os').system('touch {marker}')",
                "hint": {"as_int": 2},
            }
        }

    return change


def _enum(marker):
    def change(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["context"] = json.dumps({"__enum__": True, "fqn": "mnistlens_probe:C", "name": "A"})
        signature["in_spec"] = json.dumps(spec)

    return change


def _pickled_weight(marker):
    def edit(name, data):
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            config["config"]["conv1.bias"]["use_pickle"] = True
            return json.dumps(config).encode()
        return _torch_saved(WritesAFile(marker)) if name == "data/weights/weight_1" else data

    return edit


def _opaque_constant(name, data):
    if name != "data/constants/model_constants_config.json":
        return data
    entry = {
        "path_name": "opaque_obj_0",
        "is_param": False,
        "use_pickle": True,
        "tensor_meta": None,
    }
    return json.dumps({"config": {"c": entry}}).encode()


def _sample_inputs(marker):
    def edit(name, data):
        is_sample = name == "data/sample_inputs/model.pt"
        return _torch_saved(((WritesAFile(marker),), {})) if is_sample else data

    return edit


# case -> (how to craft it from the legitimate net.pt2 and a marker path, refusal pattern)
LIVE_PAYLOADS = {
    "sample inputs pickle": (
        lambda src, dst, m: _craft(src, dst, _sample_inputs(m)),
        r"member 'data/sample_inputs/model.pt' is not plain tensor data \(it would import",
    ),
    "pickled weight": (
        lambda src, dst, m: _craft(src, dst, _pickled_weight(m)),
        r"member 'data/weights/weight_1' is not plain tensor data",
    ),
    "opaque constant": (
        lambda src, dst, m: _craft(
            src,
            dst,
            _opaque_constant,
            extra=[("data/constants/opaque_obj_0", pickle.dumps(WritesAFile(m)))],
        ),
        "holds a Python object 'c', which torch would unpickle",
    ),
    "legacy weights file": (
        lambda src, dst, m: _craft(
            src, dst, extra=[("data/weights/model.pt", _torch_saved({"w": WritesAFile(m)}))]
        ),
        r"member 'data/weights/model.pt' is not plain tensor data",
    ),
    "guards code": (
        lambda src, dst, m: _craft(src, dst, _edit_program(_guards(m))),
        "has a guard that is not a shape condition",
    ),
    "sympy expression": (
        lambda src, dst, m: _craft(src, dst, _edit_program(_sympy(m))),
        "has a shape expression that is not arithmetic",
    ),
    "module import": (
        lambda src, dst, m: _craft(src, dst, _edit_program(_enum(m))),
        "names a Python class to import",
    ),
    "duplicate member": (  # torch reads the first copy, Python's zipfile the last
        lambda src, dst, m: _craft(
            src, dst, first=[("data/sample_inputs/model.pt", _torch_saved(((WritesAFile(m),), {})))]
        ),
        "duplicate members",
    ),
}


@pytest.fixture(scope="module")
def crafted(user, tmp_path_factory):
    """case -> (crafted .pt2, its marker file, whether plain torch.export.load ran it).
    What makes its tests slow: the files run in a child of cli_child's fork server,
    which first imports torch and the command's modules."""
    root = tmp_path_factory.mktemp("crafted")
    probe = root / "probe"  # a module that announces its import, for the import payload
    probe.mkdir()
    cases = {}
    for i, (case, (make, _)) in enumerate(LIVE_PAYLOADS.items()):
        marker = root / f"pwned_{i}.txt"
        cases[case] = (make(user.root / "net.pt2", root / f"evil_{i}.pt2", marker), marker)
    # The import payload names a module; this one marks the file when it is imported.
    marker = cases["module import"][1]
    (probe / "mnistlens_probe.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    # Each file run the way a user would without mnistlens, in a child process.
    pairs = [(str(p), str(m)) for p, m in cases.values()]
    report = root / "ran.json"
    child = cli_child.start(cli_child.plain_export_load, pairs, str(probe), str(report))
    assert child.wait(timeout=600) == 0
    ran = json.loads(report.read_text())
    for _, marker in cases.values():
        marker.unlink(missing_ok=True)
    return {case: (path, marker, ran[str(path)], probe) for case, (path, marker) in cases.items()}


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("case", sorted(LIVE_PAYLOADS))
def test_crafted_program_is_refused_and_never_runs(crafted, case, monkeypatch):
    path, marker, ran, probe = crafted[case]
    # The payload is live: plain torch.export.load(...).module()(x) ran it (in a child process) ...
    assert ran, f"{case}: payload did not run under plain torch.export.load; the test is vacuous"
    monkeypatch.syspath_prepend(str(probe))  # the import payload's module is importable here too
    # ... but load_any refuses the file without running it.
    refused(path, f"refusing to load .*{LIVE_PAYLOADS[case][1]}")
    assert not marker.exists()
    assert "mnistlens_probe" not in sys.modules


@pytest.mark.parametrize(
    "case, extra, edit, pattern",
    [
        (
            "native code",
            [("data/aotinductor/model/model.so", b"\x7fELF")],
            None,
            "AOTInductor-compiled native code",
        ),
        (
            "python callable",
            [],
            _edit_program(
                lambda p: p["graph_module"]["graph"]["nodes"][1].update(target="torch.os.system")
            ),
            "calls 'torch.os.system', which is not an ATen operator",
        ),
    ],
)
def test_programs_that_would_reach_code_are_refused(user, tmp_path, case, extra, edit, pattern):
    path = _craft(user.root / "net.pt2", tmp_path / "evil.pt2", edit, extra=extra)
    refused(path, pattern)


# ---------------------------------------------------------------- everything else


def test_pickled_model_object_is_refused(user, tmp_path):
    torch.save(user.net, tmp_path / "whole.pt")  # torch.save(model): needs user_net.Net to load
    refused(tmp_path / "whole.pt", r"pickled model object .*user_net.Net.*save model.state_dict")


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned.txt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": WritesAFile(target)}, tmp_path / "e.pt")
    pickle.loads(pickle.dumps(WritesAFile(target)))  # the payload is live ...
    assert target.exists()
    target.unlink()
    refused(tmp_path / "e.pt", "refusing to load .*would run code")  # ... and never runs here
    assert not target.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_is_named_and_never_loaded(user, tmp_path, monkeypatch):
    torch.jit.save(torch.jit.trace(user.net, torch.zeros(1, 1, 28, 28)), tmp_path / "ts.pt")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    message = refused(tmp_path / "ts.pt", "is a TorchScript archive")
    assert "torch.export.save(torch.export.export(model.eval()" in message


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("model.onnx", b"anything", "is an ONNX model"),
        ("model.bin", b"\x08\x08\x12\x07pytorch\x1a\x052.1.0" + bytes(64), "is an ONNX model"),
        ("model.bin", b"\x89HDF\r\n\x1a\n" + bytes(64), "is a Keras/HDF5 model"),
        ("model.h5", b"not really", "is a Keras/HDF5 model"),
        ("model.keras", None, "is a Keras/HDF5 model"),
        ("noise.pt", bytes(range(7, 256)) * 8, "is not a model file mnistlens knows"),
        ("empty.pt", b"", "is empty"),
    ],
)
def test_other_formats_are_named_with_the_way_to_convert(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is None:  # Keras 3 saves a zip
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{}")
            z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    else:
        path.write_bytes(content)
    message = refused(path, pattern)
    assert "--model-code file.py:Class or --arch NAME" in message
    assert (
        "torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 1, 28, 28)" in message
    )


def test_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused("nothing.pt2", "no checkpoint 'nothing.pt2'")
