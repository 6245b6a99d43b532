"""The device choice: `device=` in the library, `--device` on the command line.

On the CPU, device="cpu" and the default ("auto" on a machine without CUDA) must give
the very same numbers; a device that cannot be had is a one-line error; `--device`
reaches the library call of each command. The `cuda` tests compare a GPU with the CPU
where there is one (skipped elsewhere).
"""

import copy
import importlib
import subprocess
import sys

import pytest
import torch

import mnistlens
from mnistlens import attribution as A
from mnistlens import cli, explain, faithfulness, metrics
from mnistlens.device import GPU_ROWS, model_on, resolve_device, rows_per_pass
from mnistlens.errors import MnistlensError
from mnistlens.internals import activations
from mnistlens.train import TrainConfig, train

CUDA = torch.cuda.is_available()


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has: "auto" means the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def nets():
    """The shipped models, loaded here: name -> model in eval mode."""
    return {name: mnistlens.load_model(f"{name}.pt")[0] for name in ("linear", "mlp", "cnn")}


@pytest.fixture(scope="module")
def digits():
    """The first 24 test images and their labels."""
    images, labels = mnistlens.load_mnist("test")
    return images[:24], labels[:24]


def same(a, b):
    """Bit-for-bit equal, on the CPU: tensors, and dicts / lists / tuples of them."""
    if isinstance(a, torch.Tensor):
        assert b.device.type == "cpu"
        assert torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    else:
        assert a == b or (a != a and b != b)  # NaN == NaN here


# ---------------------------------------------------------------- resolve_device


def test_auto_is_cuda_when_available_else_the_cpu():
    expected = "cuda" if CUDA else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device().type == expected


@pytest.mark.parametrize("name", ["cpu", " CPU ", torch.device("cpu"), torch.device("cpu", 0)])
def test_cpu_spellings(name):
    assert resolve_device(name) == torch.device("cpu")


def test_auto_without_cuda_is_the_cpu(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda0", "", "cpu,cuda", 0, 1.5])
def test_an_unknown_device_names_the_choices(name):
    with pytest.raises(
        MnistlensError, match=r"unknown device .*; choose auto, cpu, cuda or cuda:N"
    ):
        resolve_device(name)


def test_another_kind_of_device_is_refused():
    with pytest.raises(MnistlensError, match=r"device 'meta' is not supported; choose auto, cpu"):
        resolve_device(torch.device("meta"))


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1", torch.device("cuda")])
def test_cuda_without_cuda_says_to_use_the_cpu(no_cuda, name):
    with pytest.raises(MnistlensError, match=r"CUDA is not available.*use --device cpu") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_a_cuda_index_the_machine_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(MnistlensError, match=r"'cuda:3'.* has 1 CUDA device: cuda:0 to cuda:0"):
        resolve_device("cuda:3")


def test_rows_per_pass():
    assert rows_per_pass(torch.device("cpu"), 64) == 64
    assert rows_per_pass(torch.device("cuda", 0), 64) == GPU_ROWS


def test_a_model_already_there_is_not_copied(nets):
    assert model_on(nets["cnn"], "cpu") is nets["cnn"]


class Uncopyable(torch.nn.Linear):
    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'generator' object")


def test_a_model_that_cannot_be_copied_there_says_what_to_do():
    elsewhere = Uncopyable(784, 10, device="meta")  # not on the CPU, as a GPU model is not
    with pytest.raises(MnistlensError, match=r"cannot copy the model to cpu \(TypeError: can"):
        model_on(elsewhere, "cpu")


# ---------------------------------------------------------------- the CPU, bit for bit


@pytest.mark.slow
@pytest.mark.parametrize("name", ["linear", "cnn"])
def test_every_method_on_cpu_equals_the_default(no_cuda, nets, digits, name):
    model, images = nets[name], digits[0][:6]
    small = {"smoothgrad": {"n_samples": 3}, "gradient_shap": {"n_samples": 4}}
    for method in A.applicable_methods(model):
        options = small.get(method, {})
        given = A.attribute(method, model, images, device="cpu", **options)
        same(A.attribute(method, model, images, **options), given)
    fast = A.integrated_gradients(model, images, tol=0.05, return_delta=True, device="cpu")
    same(A.integrated_gradients(model, images, tol=0.05, return_delta=True), fast)


def test_forward_passes_on_cpu_equal_the_default(no_cuda, nets, digits):
    images, labels = digits
    model = nets["cnn"]
    same(metrics.predict_logits(model, images), metrics.predict_logits(model, images, device="cpu"))
    same(
        metrics.evaluate(model, images, labels),
        metrics.evaluate(model, images, labels, device="cpu"),
    )
    for layer in ("relu1", "relu_fc1"):
        same(
            activations.layer_activations(model, images, layer),
            activations.layer_activations(model, images, layer, device="cpu"),
        )


@pytest.mark.slow
def test_explain_and_scores_on_cpu_equal_the_default(no_cuda, nets, digits):
    model, images = nets["cnn"], digits[0][:4]
    runs = [
        explain.explain(model, images, ["saliency", "ig", "gradcam"], measure=True, **device)
        for device in ({}, {"device": "cpu"})
    ]
    for field in ("target", "predictions", "probabilities", "maps", "deltas"):
        same(getattr(runs[0], field), getattr(runs[1], field))
    assert runs[0].layers == runs[1].layers
    for name, scores in runs[0].scores.items():
        same(vars(scores), vars(runs[1].scores[name]))

    target = runs[0].target
    maps = runs[0].maps["integrated_gradients"]
    same(
        faithfulness.perturbation_curve(model, images, maps, target),
        faithfulness.perturbation_curve(model, images, maps, target, device="cpu"),
    )
    same(
        faithfulness.random_reference(model, images, target, keep_curves=True),
        faithfulness.random_reference(model, images, target, keep_curves=True, device="cpu"),
    )
    same(
        vars(faithfulness.score_maps(model, images, maps, target, "ig")),
        vars(faithfulness.score_maps(model, images, maps, target, "ig", device="cpu")),
    )
    scored = [
        faithfulness.score_methods(model, images, ["saliency", "dl"], **device)
        for device in ({}, {"device": "cpu"})
    ]
    for name, (maps, scores) in scored[0].items():
        same(maps, scored[1][name][0])
        same(vars(scores), vars(scored[1][name][1]))


def test_compare_methods_on_cpu_equals_the_default(no_cuda, nets, digits):
    model, images = nets["mlp"], digits[0][:8]
    options = dict(randomization=True, randomization_images=3, captum_metrics=True)
    default = faithfulness.compare_methods(model, images, ["saliency", "gbp"], **options)
    same(
        default,
        faithfulness.compare_methods(model, images, ["saliency", "gbp"], device="cpu", **options),
    )


@pytest.mark.slow
def test_training_on_cpu_equals_the_default_and_records_the_device(no_cuda):
    config = TrainConfig(
        arch="cnn", arch_kwargs={"channels": [4], "hidden": 8}, epochs=1, train_subset=256,
        snapshots=1,
    )  # fmt: skip
    (model_a, meta_a), (model_b, meta_b) = (
        train(config, progress=False, **device) for device in ({}, {"device": "cpu"})
    )
    same(model_a.state_dict(), model_b.state_dict())
    same(meta_a["snapshots"], meta_b["snapshots"])
    assert meta_a["history"] == meta_b["history"]
    assert meta_a["test_accuracy"] == meta_b["test_accuracy"]
    assert meta_a["device"] == meta_b["device"] == "cpu"
    assert "device" not in meta_a["config"]  # where it ran is not part of the recipe


# ---------------------------------------------------------------- --device on the command line


class Reached(Exception):
    """Raised by a stand-in for the library call, carrying the device it was given."""


def _stand_in(*args, device, **kwargs):
    raise Reached(device)


COMMANDS = {
    "train": (["train", "--arch", "mlp", "--out", "{tmp}/x.pt"], "mnistlens.train", "train"),
    "series": (["series", "train", "--out-dir", "{tmp}"], "mnistlens.series", "train_series"),
    "explain": (
        ["explain", "--model", "linear.pt", "--index", "0"],
        "mnistlens.explain",
        "explain",
    ),
    "explain --all": (
        [
            "explain",
            "--model",
            "linear.pt",
            "--all",
            "--method",
            "saliency",
            "--out",
            "{tmp}/m.npy",
        ],
        "mnistlens.attribution",
        "attribute",
    ),
    "measure": (
        ["measure", "--model", "linear.pt", "--n", "2"],
        "mnistlens.faithfulness",
        "compare_methods",
    ),
    "explain several": (
        ["explain", "--model", "linear.pt,mlp.pt", "--index", "0"],
        "mnistlens.comparison.maps",
        "explain_models",
    ),
    "compare": (
        ["compare", "--models", "linear.pt,mlp.pt"],
        "mnistlens.comparison",
        "run",
    ),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("given, expected", [([], "auto"), (["--device", "cpu"], "cpu")])
def test_device_reaches_the_library(command, given, expected, monkeypatch, tmp_path):
    words, module, function = COMMANDS[command]
    monkeypatch.setattr(importlib.import_module(module), function, _stand_in)
    argv = [word.format(tmp=tmp_path) for word in words] + given
    with pytest.raises(Reached) as reached:
        cli.main(argv)
    assert reached.value.args[0] == resolve_device(expected)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cuda_on_a_machine_without_it_is_a_one_line_error(command, no_cuda, capsys, tmp_path):
    words = [word.format(tmp=tmp_path) for word in COMMANDS[command][0]]
    # A model that does not exist: the device is checked before anything is loaded.
    words = [("nowhere.pt" if word == "linear.pt" else word) for word in words]
    code = cli.main([*words, "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mnistlens: error: ")
    assert "CUDA is not available" in err and "--device cpu" in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("command", ["train", "series", "explain", "measure", "compare"])
def test_help_documents_device(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # as one line, whatever the wrapping
    assert "--device auto|cpu|cuda" in out and "a CUDA GPU when there is one" in out


def test_a_misspelled_device_is_a_usage_error_without_torch():
    script = (
        "import sys; from mnistlens import cli\n"
        "code = cli.main(['train', '--arch', 'mlp', '--out', 'x.pt', '--device', 'gpu'])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["2", "False"], result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'" in lines[0]


# ---------------------------------------------------------------- a GPU against the CPU


def close(gpu: torch.Tensor, cpu: torch.Tensor, rel: float = 1e-3) -> None:
    """On the CPU, and equal to the CPU's up to float32 rounding, scaled to the values."""
    assert gpu.device.type == "cpu" and gpu.shape == cpu.shape
    scale = float(cpu.abs().max()) or 1.0
    torch.testing.assert_close(gpu, cpu, rtol=rel, atol=rel * scale)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_cuda_gives_the_cpus_maps_and_predictions(nets, digits, name):
    model, (images, labels) = nets[name], digits
    logits = metrics.predict_logits(model, images, device="cpu")
    on_gpu = metrics.predict_logits(model, images, device="cuda")
    close(on_gpu, logits)
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3 * float(logits.abs().max())
    assert torch.equal(on_gpu.argmax(1)[clear], logits.argmax(1)[clear])
    assert metrics.evaluate(model, images, labels, device="cuda")["n_images"] == len(images)

    x = images[:6]
    for method in A.applicable_methods(model):
        if A.get_spec(method).name == "gradient_shap":
            continue  # Captum draws its noise on the device: equal only in expectation
        options = {"n_samples": 3} if method == "smoothgrad" else {}
        cpu = A.attribute(method, model, x, device="cpu", **options)
        close(A.attribute(method, model, x, device="cuda", **options), cpu)
    # Adaptive IG may refine other segments on another device; both keep the tolerance,
    # so their sums (f(x) - f(baseline) within 5%) agree within about 10%.
    maps, delta = A.integrated_gradients(model, x, tol=0.05, return_delta=True, device="cuda")
    assert maps.device.type == delta.device.type == "cpu"
    sums = A.integrated_gradients(model, x, tol=0.05, device="cpu").sum(dim=(1, 2, 3))
    assert ((maps.sum(dim=(1, 2, 3)) - sums).abs() <= 0.11 * sums.abs() + 1e-4).all()

    result = explain.explain(model, x, ["saliency", "ig"], measure=True, device="cuda")
    reference = explain.explain(model, x, ["saliency", "ig"], measure=True, device="cpu")
    close(result.probabilities, reference.probabilities)
    for method, scores in result.scores.items():
        for key, value in vars(scores).items():
            if isinstance(value, torch.Tensor):  # rankings may swap near-ties
                torch.testing.assert_close(
                    value, vars(reference.scores[method])[key], atol=0.02, rtol=0
                )

    layer = "relu_fc1" if name == "cnn" else "relu1"
    close(
        activations.layer_activations(model, images, layer, device="cuda"),
        activations.layer_activations(model, images, layer, device="cpu"),
    )
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model never moved

    # A model the caller put on the GPU is explained on the CPU as a copy, and stays there.
    on_gpu = copy.deepcopy(model).cuda()
    close(
        A.attribute("saliency", on_gpu, x, device="cpu"),
        A.attribute("saliency", model, x, device="cpu"),
    )
    assert all(p.device.type == "cuda" for p in on_gpu.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_training_on_cuda_gives_a_checkpoint_for_the_cpu(tmp_path):
    config = TrainConfig(arch="mlp", arch_kwargs={"hidden": [32]}, epochs=1, train_subset=2048)
    model, meta = train(config, progress=False, device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert meta["device"].startswith("cuda:") and meta["test_accuracy"] > 0.5
    path = mnistlens.save_checkpoint(tmp_path / "gpu.pt", model, "mlp", config.arch_kwargs, meta)
    loaded, _ = mnistlens.load_model(path)
    images = mnistlens.load_mnist("test")[0][:64]
    torch.testing.assert_close(
        metrics.predict_logits(loaded, images, device="cpu"),
        metrics.predict_logits(model, images, device="cpu"),
    )
