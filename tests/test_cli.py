"""The `mnistlens` command on real data.

Most tests call `cli.main(argv)` in this process, which is what the console script
runs, so they pay for importing torch once, not once per test. A few run a real
`python -m mnistlens` for what only a fresh interpreter shows: help without torch,
an end-to-end explain, the refusal of an untrusted pickle, the exit code.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistlens import attribution, cli, load_model
from mnistlens.data import resolve_data_dir
from mnistlens.options import parse_value

from conftest import CHECKPOINTS, WritesAFile, assert_clean_error, save_user_model


def run_process(*args) -> subprocess.CompletedProcess:
    """Run `python -m mnistlens ARGS`; -> CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", "mnistlens", *args], capture_output=True, text=True, timeout=600
    )


def mnist_subset(folder: Path, n: int) -> Path:
    """A data dir in `folder` whose test split is the first `n` real MNIST test images
    (the train split is linked to the real one): for commands that go over the whole
    test set."""
    source = resolve_data_dir() / "MNIST" / "raw"
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # IDX files: a magic number, the item count, the item shape, then one byte per value.
    images = (source / "t10k-images-idx3-ubyte").read_bytes()
    header = images[:4] + n.to_bytes(4, "big") + images[8:16]
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + images[16 : 16 + n * 28 * 28])
    labels = (source / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(
        labels[:4] + n.to_bytes(4, "big") + labels[8 : 8 + n]
    )
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).symlink_to(source / name)
    return folder


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory) -> Path:
    """The first 1,000 test images (see mnist_subset)."""
    return mnist_subset(tmp_path_factory.mktemp("small_mnist"), 1000)


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and min(image.size) > 50


# ---------------------------------------------------------------- help, startup, exit codes


@pytest.mark.process
def test_help_reads_like_a_manual():
    result = run_process("--help")
    assert result.returncode == 0
    for word in ("train", "evaluate", "predict", "MNISTLENS_DATA", "examples:"):
        assert word in result.stdout


HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "captum")
NO_TORCH_SCRIPT = f"""
import json, sys
from mnistlens import cli
codes = [cli.main(["--help"])]
codes += [cli.main([name, "--help"]) for name in cli.COMMANDS]
codes += [cli.main(["explode"]), cli.main(["predict", "--model", "cnn.pt"])]
codes += [cli.main(["train", "--arch", "mlp", "--arch-kwargs", "hidden", "--out", "x.pt"])]
print(json.dumps({{"codes": codes, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.mark.process
def test_help_and_usage_errors_do_not_import_torch(fresh_python):
    """--help, COMMAND --help and argument errors answer without loading the library."""
    out = fresh_python(NO_TORCH_SCRIPT, timeout=120)
    assert out["codes"] == [0] * (1 + len(cli.COMMANDS)) + [2, 2, 2]
    assert out["loaded"] == []


def test_package_names_resolve_on_first_use():
    import mnistlens
    import mnistlens.data
    import mnistlens.loading

    assert load_model is mnistlens.loading.load
    assert mnistlens.load_mnist is mnistlens.data.load_mnist
    assert set(mnistlens.__all__) <= set(dir(mnistlens))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mnistlens.nothing  # noqa: B018


INTERRUPT_SCRIPT = """
import runpy, sys
import mnistlens.commands.predict as predict

def interrupted(args):
    raise KeyboardInterrupt

predict.run = interrupted  # picked up when main() builds the parser
sys.argv = ["mnistlens", "predict", "--model", "cnn.pt", "--index", "1"]
runpy.run_module("mnistlens", run_name="__main__")
"""


def test_the_command_keeps_freed_memory_where_malloc_is_glibcs():
    """The command's process asks glibc to keep freed memory (cli.keep_freed_memory),
    and glibc accepts both settings (mallopt answers 0 to a value it refuses)."""
    import platform

    glibc = platform.libc_ver()[0] == "glibc"
    assert cli.keep_freed_memory() is glibc


@pytest.mark.process
def test_interrupt_exits_130():
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPT_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 130
    assert result.stderr == "mnistlens: interrupted\n"


def test_explain_help_names_every_method(run):
    """The explain epilog is written out (no torch for --help): it must not fall behind."""
    result = run("explain", "--help")
    assert result.returncode == 0
    for name in [*attribution.list_methods(), *attribution.aliases()]:
        assert name in result.stdout, name


# ---------------------------------------------------------------- evaluate, predict, train


def test_evaluate_json_and_confusion_png(run, tmp_path):
    png = tmp_path / "confusion.png"
    result = run("evaluate", "--model", "linear.pt", "--plot", png, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_images"] == 10_000 and report["accuracy"] >= 0.92
    assert sum(map(sum, report["confusion"])) == 10_000
    assert report["plot"] == str(png)
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 200


def test_evaluate_text_names_accuracy_and_confusions(run):
    result = run("evaluate", "--model", CHECKPOINTS / "mlp.pt")
    assert result.returncode == 0, result.stderr
    assert "accuracy 98." in result.stdout or "accuracy 99." in result.stdout
    assert "most confused" in result.stdout


def test_predict_index_42(run):
    result = run("predict", "--model", "cnn.pt", "--index", "42", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["index"] == 42 and out["label"] == 4 and out["prediction"] == 4
    assert len(out["probabilities"]) == 10 and sum(out["probabilities"]) == pytest.approx(1, 1e-4)


@pytest.mark.slow
def test_train_writes_a_loadable_checkpoint(run, tmp_path):
    out = tmp_path / "tiny.pt"
    args = ["train", "--arch", "mlp", "--arch-kwargs", "hidden=32,", "dropout=0.05"]
    args += ["--epochs", "2", "--lr", "1e-2", "--quiet", "--train-subset", "2000", "--out", out]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    _, meta = load_model(out)
    assert meta["arch_kwargs"] == {"hidden": [32], "dropout": 0.05}
    assert meta["command"] == "mnistlens " + " ".join(map(str, args))
    report = json.loads(run("evaluate", "--model", out, "--json").stdout)
    assert report["accuracy"] > 0.6  # chance is 0.1


@pytest.mark.parametrize(
    "words, expected",
    [
        (["hidden=512,256", "dropout=0.1"], {"hidden": [512, 256], "dropout": 0.1}),
        (
            ["channels=32,;hidden=128 batch_norm=false"],
            {"channels": [32], "hidden": 128, "batch_norm": False},
        ),
        (
            ["kernel_size=5", "normalize=True", "x=1e-3"],
            {"kernel_size": 5, "normalize": True, "x": 1e-3},
        ),
    ],
)
def test_arch_kwargs_parsing(words, expected):
    args = cli.build_parser().parse_args(
        ["train", "--arch", "cnn", "--arch-kwargs", *words, "--out", "x.pt"]
    )
    assert args.arch_kwargs == expected
    assert all(type(args.arch_kwargs[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize("text", ["", "abc", "1.5,2", ",", "32,x"])
def test_arch_kwargs_bad_values(text):
    with pytest.raises(ValueError, match="bad value"):
        parse_value(text)


def test_offline_with_empty_data_dir(run, tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLENS_OFFLINE", "1")
    result = run("evaluate", "--model", "linear.pt", "--data-dir", tmp_path)
    assert_clean_error(result, "MNIST files missing", str(tmp_path), "t10k-images-idx3-ubyte")


def test_unknown_model(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run("evaluate", "--model", "resnet50.pt"), "no checkpoint 'resnet50.pt'")


@pytest.mark.parametrize("index", ["10000", "-1"])
def test_out_of_range_index(run, index):
    result = run("predict", "--model", "linear.pt", "--index", index)
    assert_clean_error(result, f"test index {index} is out of range")


@pytest.mark.slow
@pytest.mark.process
def test_untrusted_pickle_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    torch.save({"state_dict": WritesAFile(target)}, tmp_path / "evil.pt")
    result = run_process("evaluate", "--model", str(tmp_path / "evil.pt"))
    assert_clean_error(result, "refusing to load", "would run code")
    assert not target.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--arch", "vgg", "--out", "x.pt"], "unknown architecture 'vgg'"),
        (["train", "--arch", "linear", "--arch-kwargs", "hidden=3", "--out", "x.pt"], "bad arg"),
        (["train", "--arch", "mlp", "--arch-kwargs", "hidden=32", "--out", "x.pt"], "hidden=N,"),
        (["train", "--arch", "mlp", "--arch-kwargs", "hidden", "--out", "x.pt"], "KEY=VALUE"),
        (["train", "--arch", "mlp", "--arch-kwargs", "dropout=a", "--out", "x.pt"], "bad value"),
        (["train", "--arch", "mlp", "--arch-kwargs", "a=1", "a=2", "--out", "x.pt"], "twice"),
        (["predict", "--model", "cnn.pt"], "--index"),
        (["explode"], "invalid choice"),
    ],
)
def test_bad_options(run, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run(*args), fragment)
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------- explain


@pytest.mark.slow
@pytest.mark.process
def test_explain_index_42_png_and_json(tmp_path):
    """End to end, as a user runs it; without importing torchvision, which is slow to
    import and which nothing on this path needs. Checked by what is imported, not by a
    time limit, so that a busy machine does not fail it."""
    png = tmp_path / "e42.png"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnistlens"]
        + "explain --model cnn.pt --index 42 --methods saliency,ig --json --out".split()
        + [str(png)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "captum.attr" in imported and "torch" in imported  # the list is what it seems
    assert not {name for name in imported if name.split(".")[0] == "torchvision"}
    out = json.loads(result.stdout)
    assert out["index"] == 42 and out["label"] == 4 and out["prediction"] == 4
    assert len(out["probabilities"]) == 10
    assert set(out["methods"]) == {"saliency", "integrated_gradients"}
    assert abs(out["methods"]["integrated_gradients"]["delta"]) < 0.5
    assert out["methods"]["saliency"]["png"] == str(png)
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_explain_text_output_and_user_image(run, tmp_path, test_set, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pixels = (255 - test_set[0][0, 0] * 255).byte().numpy()  # test digit 0 (a 7), ink on white
    Image.fromarray(pixels).resize((140, 140)).save(tmp_path / "mine.png")
    result = run("explain", "--model", "cnn.pt", "--image", tmp_path / "mine.png")
    assert result.returncode == 0, result.stderr
    assert "mine.png: predicted 7" in result.stdout
    assert "completeness error" in result.stdout
    assert (tmp_path / "explain_mine.png").is_file()


def _explain_json(run, tmp_path, *options):
    """`explain --index 42 --json OPTIONS` -> the JSON's methods entry and the JSON."""
    result = run(
        *"explain --model cnn.pt --index 42 --json".split(), "--out", tmp_path / "e.png", *options
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    return out["methods"], out


def test_explain_target_explains_that_class(run, tmp_path, cnn, test_set):
    """--target 3 explains class 3: IG's map sums to logit_3(x) - logit_3(black)."""
    own, out = _explain_json(run, tmp_path, "--methods", "saliency,ig")
    three, out3 = _explain_json(run, tmp_path, "--methods", "saliency,ig", "--target", "3")
    assert out["target"] == out["prediction"] == 4 and out3["target"] == 3
    assert out3["prediction"] == 4
    for name in ("saliency", "integrated_gradients"):
        assert three[name]["sum"] != pytest.approx(own[name]["sum"], rel=1e-3)
    image = test_set[0][42:43]
    with torch.no_grad():
        gap = cnn(image)[0] - cnn(torch.zeros_like(image))[0]  # (10,)
    assert three["integrated_gradients"]["sum"] == pytest.approx(float(gap[3]), abs=0.05)
    assert own["integrated_gradients"]["sum"] == pytest.approx(float(gap[4]), abs=0.05)
    expected = attribution.saliency(cnn, image, 3)
    assert three["saliency"]["sum"] == pytest.approx(float(expected.sum()), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, library",
    [
        (["--steps", "4"], {"n_steps": 4}),
        (["--tol", "0.01"], {"tol": 0.01}),
        (["--baseline", "blur"], {"baseline": "blur"}),
    ],
)
def test_explain_ig_options_reach_integrated_gradients(
    run, tmp_path, cnn, test_set, options, library
):
    """--steps, --tol and --baseline change IG's result, to what the library computes."""
    default, _ = _explain_json(run, tmp_path, "--methods", "ig")
    given, _ = _explain_json(run, tmp_path, "--methods", "ig", *options)
    default, given = default["integrated_gradients"], given["integrated_gradients"]
    maps, delta = attribution.integrated_gradients(
        cnn, test_set[0][42:43], return_delta=True, **library
    )
    assert given["sum"] == pytest.approx(float(maps.sum()), rel=1e-4, abs=1e-5)
    assert given["delta"] == pytest.approx(float(delta[0]), rel=1e-3, abs=1e-6)
    assert (given["sum"], given["delta"]) != pytest.approx((default["sum"], default["delta"]))


@pytest.mark.slow
def test_explain_deeplift_takes_the_baseline(run, tmp_path):
    black, _ = _explain_json(run, tmp_path, "--methods", "dl")
    blur, _ = _explain_json(run, tmp_path, "--methods", "dl", "--baseline", "blur")
    assert blur["deeplift"]["sum"] != pytest.approx(black["deeplift"]["sum"], rel=1e-2)


def test_explain_all_writes_the_library_maps(run, tmp_path, shipped, test_set):
    out = tmp_path / "maps.npy"
    result = run("explain", "--model", "linear.pt", "--all", "--method", "saliency", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    maps = np.load(out)
    assert maps.shape == (10_000, 28, 28) and maps.dtype == np.float32
    some = [0, 42, 9999]
    expected = attribution.saliency(shipped["linear"][0], test_set[0][some])[:, 0].numpy()
    assert np.abs(maps[some]).sum(axis=(1, 2)).min() > 0
    np.testing.assert_allclose(maps[some], expected, rtol=1e-5, atol=1e-7)
    # Run again: the maps are kept unless --force says otherwise.
    before = out.stat().st_mtime_ns
    assert_clean_error(
        run("explain", "--model", "linear.pt", "--all", "--method", "saliency", "--out", out),
        "exists; pass --force",
    )
    assert out.stat().st_mtime_ns == before
    again = run(
        "explain", "--model", "linear.pt", "--all", "--method", "saliency", "--out", out, "--force"
    )
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(np.load(out), maps)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--index", "10000"], "test index 10000 is out of range"),
        (["--index", "1", "--methods", "lime"], "unknown attribution method 'lime'"),
        (["--image", "nowhere.png"], "image file not found"),
        (["--index", "1", "--target", "12"], "--target must be a digit"),
        (["--all", "--out", "maps.png"], "writes a .npy file"),
    ],
)
def test_explain_errors(run, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run("explain", "--model", "cnn.pt", *args), fragment)


# ---------------------------------------------------------------- network internals


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, extra, expected",
    [
        ("linear.pt", [], ["w.png"]),
        ("mlp.pt", [], ["w.png"]),
        ("cnn.pt", ["--index", "3"], ["w.png", "w_relu1.png", "w_relu2.png", "w_relu3.png"]),
    ],
)
def test_weights_command_writes_pngs(run, tmp_path, model, extra, expected):
    result = run("weights", "--model", model, "--out", tmp_path / "w.png", *extra)
    assert result.returncode == 0, result.stderr
    for name in expected:
        assert f"wrote {tmp_path / name}" in result.stdout and _is_png(tmp_path / name)


@pytest.mark.slow
def test_units_command_top_images_and_profile(run, tmp_path, small_mnist):
    out = tmp_path / "units.png"
    args = ["--data-dir", small_mnist, "--out", out]  # the first 1,000 test images: faster
    result = run(*"units --model cnn.pt --layer relu_fc1 --unit 3 --top 8".split(), *args)
    assert result.returncode == 0, result.stderr
    assert "unit 3: top test images" in result.stdout and _is_png(out)
    result = run(
        *"units --model mlp.pt --layer relu1".split(), *args, "--pca-out", tmp_path / "pca.png"
    )
    assert result.returncode == 0, result.stderr
    assert "most class-selective" in result.stdout
    assert _is_png(out) and _is_png(tmp_path / "pca.png")


def test_visualize_command(run, tmp_path):
    out = tmp_path / "dream3.png"
    result = run("visualize", "--model", "cnn.pt", "--class", "3", "--steps", "60", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "the model reads the result as 3" in result.stdout and _is_png(out)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["units", "--model", "cnn.pt", "--layer", "fc7"], "valid layers: norm, conv1"),
        (["visualize", "--model", "cnn.pt", "--layer", "fc7", "--unit", "1"], "valid layers"),
        (["visualize", "--model", "cnn.pt"], "either --class"),
        (["weights", "--model", "nothing.pt"], "no checkpoint 'nothing.pt'"),
    ],
)
def test_internals_errors(run, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run(*args), fragment)


# ---------------------------------------------------------------- measure


@pytest.mark.slow
def test_measure_command_json_and_plot(run, tmp_path):
    png = tmp_path / "curves.png"
    result = run(*"measure --model cnn.pt --methods saliency,ig --n 20 --json --plot".split(), png)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out["methods"]) == {"random", "saliency", "integrated_gradients"}
    ig, rnd = out["methods"]["integrated_gradients"], out["methods"]["random"]
    assert ig["deletion_auc"] < rnd["deletion_auc"] and ig["insertion_auc"] > rnd["insertion_auc"]
    assert ig["completeness_error_median"] < 0.02
    assert not any("randomization" in entry for entry in out["methods"].values())
    assert _is_png(png)


@pytest.mark.slow
def test_measure_randomization_adds_the_sanity_check(run):
    args = "measure --model cnn.pt --methods saliency --n 4 --randomization".split()
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)["methods"]["saliency"]["randomization"]
    assert check and all(-1 <= value <= 1 for value in check.values())
    text = run(*args).stdout
    assert "rank correlation" in text and "saliency: " in text


def test_measure_bad_n(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run("measure", "--model", "cnn.pt", "--n", "0"), "--n must be 1 to 10000")


# ---------------------------------------------------------------- trust beside every map


def test_explain_json_carries_each_maps_faithfulness(run, tmp_path, cnn, test_set):
    """Per-map numbers in --json equal the faithfulness functions called directly."""
    from mnistlens import faithfulness

    result = run(
        *"explain --model cnn.pt --index 42 --methods saliency,ig,gradcam --json --out".split(),
        tmp_path / "e.png",
    )
    assert result.returncode == 0, result.stderr
    methods = json.loads(result.stdout)["methods"]
    image = test_set[0][42:43]
    target = torch.tensor([4])
    for name in ("saliency", "integrated_gradients", "grad_cam"):
        numbers = methods[name]["faithfulness"]
        maps = attribution.attribute(name, cnn, image, target)
        direct = faithfulness.score_maps(cnn, image, maps, target, name).image(0)
        assert set(numbers) == set(direct), name
        for key, value in direct.items():
            assert numbers[key] == pytest.approx(value, abs=0.02), (name, key)
    assert methods["grad_cam"]["layer"] == "relu3"
    assert "completeness_error" in methods["integrated_gradients"]["faithfulness"]
    assert "completeness_error" not in methods["saliency"]["faithfulness"]
    grad_cam = methods["grad_cam"]["faithfulness"]
    assert grad_cam["deletion_auc"] < grad_cam["random_deletion_auc"]


@pytest.mark.slow
def test_measure_gives_sanity_verdicts_and_captum_metrics(run):
    """On 4 digits the verdicts are as clear as on 8: guided backprop's top-layer rank
    correlation 0.96 (fail), saliency's 0.12 (pass)."""
    args = "measure --model cnn.pt --methods saliency,gbp --n 4 --randomization --captum-metrics"
    result = run(*args.split(), "--json")
    assert result.returncode == 0, result.stderr
    methods = json.loads(result.stdout)["methods"]
    assert methods["saliency"]["sanity"] == "pass"
    assert methods["guided_backprop"]["sanity"] == "fail"
    assert methods["random"]["infidelity"] > 0 and methods["saliency"]["sensitivity_max"] > 0
    text = run(*args.split()).stdout
    assert "sanity fail" in text and "sanity rule" in text and "infidelity" in text


# ---------------------------------------------------------------- your own model


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """nets.TinyNet trained on 12,000 images, as state_dict + source and as a .pt2."""
    return save_user_model(tmp_path_factory.mktemp("user_cli"), 12000)


def test_inspect_a_users_state_dict_and_program(run, user_model):
    code = f"{user_model / 'net.py'}:TinyNet"
    result = run("inspect", "--model", user_model / "net.pt", "--model-code", code, "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["format"] == "state_dict" and facts["input"] == "unit"
    assert facts["outputs"] == "log_probabilities" and facts["output_removed"]
    assert facts["relu_modules"] and facts["test_accuracy"] > 0.8
    text = run("inspect", "--model", user_model / "net.pt2").stdout
    assert "torch-export" in text and "input: unit" in text and "removed" in text


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["state_dict", "pt2"])
def test_every_command_takes_a_users_model(run, tmp_path, user_model, kind):
    if kind == "pt2":
        model = ["--model", user_model / "net.pt2"]
    else:
        model = [
            "--model",
            user_model / "net.pt",
            "--model-code",
            f"{user_model / 'net.py'}:TinyNet",
        ]
    result = run(
        "explain",
        *model,
        "--index",
        "0",
        "--methods",
        "dl,gradcam",
        "--json",
        "--out",
        tmp_path / "e.png",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["methods"]["deeplift"]["faithfulness"]["completeness_error"] < 1e-3
    assert run("predict", *model, "--index", "0").returncode == 0
    assert (
        run(
            "units", *model, "--layer", _last_relu(run, model), "--out", tmp_path / "u.png"
        ).returncode
        == 0
    )
    assert run("measure", *model, "--methods", "saliency", "--n", "5").returncode == 0


def _last_relu(run, model) -> str:
    facts = json.loads(run("inspect", *model, "--json").stdout)
    return facts["hidden_layers"][-1]


def test_users_model_errors_are_one_line(run, tmp_path, user_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(
        run("predict", "--model", user_model / "net.pt", "--index", "0"), "--model-code"
    )
    assert_clean_error(
        run("predict", "--model", user_model / "net.pt", "--arch", "mlp", "--index", "0"),
        "do not fit",
    )
    truncated = tmp_path / "cut.pt2"
    truncated.write_bytes((user_model / "net.pt2").read_bytes()[:3000])
    assert_clean_error(run("predict", "--model", truncated, "--index", "0"), "cut.pt2")


# ---------------------------------------------------------------- series and compare


@pytest.mark.slow
def test_compare_three_shipped_models(run, tmp_path, shipped, test_set, small_mnist):
    """On the first 1,000 test images (--data-dir): accuracies equal evaluate's;
    McNemar's counts recomputed here; the listed disagreements really are images the
    models label differently; plots written."""
    from math import comb

    from mnistlens.metrics import evaluate, predict_logits

    models = ["--models", "linear.pt,mlp.pt,cnn.pt", "--data-dir", small_mnist]
    result = run("compare", *models, "--json", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    images, labels = test_set[0][:1000], test_set[1][:1000]
    assert report["n_images"] == 1000
    predictions = {}
    for row in report["models"]:
        model = shipped[row["name"]][0]
        assert row["accuracy"] == evaluate(model, images, labels)["accuracy"]
        predictions[row["name"]] = predict_logits(model, images).argmax(dim=1)
    for pair in report["pairs"]:
        a, b = predictions[pair["a"]] == labels, predictions[pair["b"]] == labels
        n_a, n_b = int((a & ~b).sum()), int((b & ~a).sum())
        assert (pair["a_only_right"], pair["b_only_right"]) == (n_a, n_b)
        n, k = n_a + n_b, min(n_a, n_b)
        p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)
        assert pair["mcnemar_p"] == pytest.approx(p, rel=1e-9, abs=1e-300)
    for record in report["disagreements"][:20]:
        answers = {name: int(predictions[name][record["index"]]) for name in predictions}
        assert len(set(answers.values())) > 1
    for path in report["plots"].values():
        assert _is_png(path)


def test_compare_errors_are_one_line(run, tmp_path, monkeypatch):
    """Each mistake is named before any model is compared (a bad --pair on the series
    would otherwise cost minutes first)."""
    from mnistlens.comparison import stats as compare

    def never(*args, **kwargs):
        raise AssertionError("compare_models ran before the error")

    monkeypatch.setattr(compare, "compare_models", never)
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run("compare", "--models", "cnn.pt"), "two or more models")
    (tmp_path / "afile").write_text("x")
    assert_clean_error(
        run("compare", "--models", "linear.pt,mlp.pt", "--out", tmp_path / "afile"), "not a folder"
    )
    assert_clean_error(run("series", "train", "--only", "mlp-9000"), "mlp-9000")
    pair = ["compare", "--models", "linear.pt,mlp.pt", "--out", tmp_path / "figs"]
    for bad in ("linear,cnn", "mlp,mlp", "mlp"):
        assert_clean_error(run(*pair, "--pair", bad), "--pair needs two different")
    assert_clean_error(run("compare", "--models", "linear.pt,mlp.pt", "--maps"), "--out DIR")


@pytest.mark.slow
def test_compare_pair_and_digit_maps(run, tmp_path, shipped, test_set):
    """--pair A,B --maps (first 300 test images): the pair's figure is drawn from
    exactly the images B gets right and A wrong, and the per-digit maps of both models
    are written."""
    from mnistlens.metrics import predict_logits

    data = mnist_subset(tmp_path / "data", 300)

    result = run(
        "compare", "--models", "linear.pt,mlp.pt", "--pair", "linear,mlp", "--maps", "--json",
        "--out", tmp_path / "out", "--data-dir", data,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    images, labels = test_set[0][:300], test_set[1][:300]
    right = {n: predict_logits(shipped[n][0], images).argmax(dim=1) == labels for n in shipped}
    expected = (right["mlp"] & ~right["linear"]).nonzero()[:, 0].tolist()
    assert report["pair_maps"]["a"] == "linear" and report["pair_maps"]["b"] == "mlp"
    assert report["pair_maps"]["indices"] == expected and report["pair_maps"]["n_images"] > 10
    assert _is_png(report["plots"]["pair_maps"]) and _is_png(report["plots"]["digit_maps"])


def test_series_train_end_to_end_and_resume(run, tmp_path):
    """Two members, one epoch on 512 images, into a temporary folder; the second call
    trains nothing (the files are untouched)."""
    args = ["series", "train", "--only", "linear,mlp-32", "--out-dir", tmp_path]
    quick = ["--epochs", "1", "--train-subset", "512", "--quiet"]
    result = run(*args, *quick)
    assert result.returncode == 0, result.stderr
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")}
    assert set(files) == {"linear.pt", "mlp-32.pt"}
    again = run(*args, *quick)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")} == files
    listed = run("series", "list", "--out-dir", tmp_path).stdout
    assert "mlp-32" in listed and "lenet" in listed


def test_explain_several_models_side_by_side(run, tmp_path):
    result = run(
        *"explain --model linear.pt,mlp.pt,cnn.pt --index 42 --methods saliency,ig --json".split(),
        "--out",
        tmp_path / "grid.png",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out["models"]) == ["linear", "mlp", "cnn"]
    assert all(m["prediction"] == 4 for m in out["models"].values())
    assert _is_png(out["png"])
