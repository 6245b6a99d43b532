"""Every command-line option that reaches a library call arrives there, with its value.

Each case runs a command with options away from their defaults, with the library
function the command hands them to replaced by a recorder that stops the command; the
test then reads what the function was given. A command that dropped or mixed up an
option (say --steps passed as the tolerance) would fail here even where its output
still looks plausible.
"""

import importlib
from pathlib import Path

import pytest

from mnistlens import cli


class Reached(Exception):
    """Raised by the recorder: the command got as far as the library call."""


def recorder(calls: list):
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        raise Reached

    return record


def reach(monkeypatch, module: str, function: str, argv: list[str]) -> tuple[tuple, dict]:
    """Run `mnistlens argv` with module.function recording its arguments: -> (args, kwargs)."""
    calls: list = []
    monkeypatch.setattr(importlib.import_module(module), function, recorder(calls))
    with pytest.raises(Reached):
        cli.main(argv)
    assert len(calls) == 1
    return calls[0]


def test_explain_options_reach_explain(monkeypatch):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.explain",
        "explain",
        ["explain", "--model", "mlp.pt", "--index", "7", "--methods", "ig,sg", "--target", "3"]
        + ["--baseline", "blur", "--steps", "12", "--device", "cpu"],
    )
    model, images, methods, target = args
    assert images.shape == (1, 1, 28, 28) and methods == ["integrated_gradients", "smoothgrad"]
    assert target == 3 and str(kwargs["device"]) == "cpu"
    assert kwargs["integrated_gradients"] == {"baseline": "blur", "n_steps": 12}
    assert kwargs["smoothgrad"] == {}  # it takes none of the shared options


def test_the_index_picks_the_digit(monkeypatch, test_set):
    args, _ = reach(
        monkeypatch,
        "mnistlens.explain",
        "explain",
        ["explain", "--model", "mlp.pt", "--index", "42"],
    )
    assert args[1].equal(test_set[0][42:43])


def test_explain_all_options_reach_attribute(monkeypatch, tmp_path):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.attribution",
        "attribute",
        ["explain", "--model", "mlp.pt", "--all", "--method", "ig", "--tol", "0.02"]
        + ["--target", "5", "--out", str(tmp_path / "m.npy")],
    )
    name, _, images, target = args
    assert name == "integrated_gradients" and images.shape == (10_000, 1, 28, 28)
    assert target == 5 and kwargs["tol"] == 0.02 and kwargs["progress"] is True


def test_measure_options_reach_compare_methods(monkeypatch):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.faithfulness",
        "compare_methods",
        ["measure", "--model", "mlp.pt", "--n", "7", "--methods", "saliency,dl"]
        + ["--randomization", "--captum-metrics"],
    )
    _, images, methods = args[:3]
    assert len(images) == 7 and methods == ["saliency", "deeplift"]
    assert kwargs.get("randomization", args[3:4] == (True,)) is True
    assert kwargs.get("captum_metrics") is True


def test_evaluate_split_reaches_evaluate(monkeypatch):
    args, _ = reach(
        monkeypatch,
        "mnistlens.metrics",
        "evaluate",
        ["evaluate", "--model", "linear.pt", "--split", "train"],
    )
    assert len(args[1]) == 60_000 and len(args[2]) == 60_000


def test_units_options_reach_layer_activations(monkeypatch):
    args, _ = reach(
        monkeypatch,
        "mnistlens.internals.activations",
        "layer_activations",
        ["units", "--model", "mlp.pt", "--layer", "relu2", "--unit", "5", "--out", "u.png"],
    )
    assert args[2] == "relu2"


def test_visualize_options_reach_maximize(monkeypatch):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.internals.featureviz",
        "maximize",
        ["visualize", "--model", "mlp.pt", "--class", "3", "--steps", "7", "--seed", "2"],
    )
    assert args[1] == 3 and kwargs == {"steps": 7, "seed": 2}


def test_train_options_reach_train(monkeypatch, tmp_path):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.train",
        "train",
        ["train", "--arch", "linear", "--arch-kwargs", "normalize=false", "--epochs", "2"]
        + ["--batch-size", "64", "--lr", "0.5", "--weight-decay", "0.01", "--seed", "3"]
        + ["--label-smoothing", "0.1", "--no-augment", "--train-subset", "500"]
        + ["--optimizer", "sgd", "--momentum", "0.8", "--zero-init", "--snapshots", "2"]
        + ["--out", str(tmp_path / "m.pt"), "--data-dir", "/nowhere", "--quiet"],
    )
    config = args[0]
    assert config.arch == "linear" and config.arch_kwargs == {"normalize": False}
    assert (config.epochs, config.batch_size, config.lr, config.seed) == (2, 64, 0.5, 3)
    assert (config.weight_decay, config.label_smoothing) == (0.01, 0.1)
    assert config.augment is False and config.train_subset == 500
    assert (config.optimizer, config.momentum, config.zero_init) == ("sgd", 0.8, True)
    assert config.snapshots == 2
    assert kwargs["data_dir"] == "/nowhere" and kwargs["progress"] is False


def test_series_options_reach_train_series(monkeypatch, tmp_path):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.series",
        "train_series",
        ["series", "train", "--only", "linear,mlp-32", "--force", "--epochs", "1"]
        + ["--out-dir", str(tmp_path)],
    )
    assert Path(args[0]) == tmp_path and args[1] == ["linear", "mlp-32"] and args[2] is True
    assert {"epochs": 1} in list(args) + list(kwargs.values())


def test_compare_options_reach_comparison_run(monkeypatch, tmp_path):
    args, kwargs = reach(
        monkeypatch,
        "mnistlens.comparison",
        "run",
        ["compare", "--models", "linear.pt,mlp.pt", "--faithfulness", "--maps"]
        + ["--pair", "mlp,linear", "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r")],
    )
    assert list(args[0]) == ["linear", "mlp"]
    assert kwargs["faithfulness"] is True and kwargs["maps"] is True
    assert kwargs["pair"] == ["mlp", "linear"]
    assert kwargs["out"] == str(tmp_path / "o") and kwargs["report_dir"] == str(tmp_path / "r")


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--input", "unit"], {"input": "unit"}),
        (["--arch", "mlp", "--arch-kwargs", "hidden=64,"], {"arch": "mlp"}),
        (["--model-code", "net.py:Net"], {"model_code": "net.py:Net"}),
        (["--data-dir", "/data"], {"data_dir": "/data"}),
    ],
)
def test_model_options_reach_load(monkeypatch, extra, expected):
    args, kwargs = reach(
        monkeypatch, "mnistlens.loading", "load", ["inspect", "--model", "net.pt", *extra]
    )
    assert args == ("net.pt",)
    assert expected.items() <= kwargs.items()
    if "--arch-kwargs" in extra:
        assert kwargs["arch_kwargs"] == {"hidden": [64]}
