"""The `mnistlens` command, run as a user runs it (a subprocess), on real data."""

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from conftest import CHECKPOINTS, WritesAFile


def run(*args, env=None, cwd=None):
    """Run `python -m mnistlens ARGS`; -> CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", "mnistlens", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def assert_clean_error(result, *fragments):
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mnistlens")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_reads_like_a_manual():
    result = run("--help")
    assert result.returncode == 0
    for word in ("train", "evaluate", "predict", "MNISTLENS_DATA", "examples:"):
        assert word in result.stdout


def test_evaluate_json_and_confusion_png(tmp_path):
    png = tmp_path / "confusion.png"
    result = run("evaluate", "--model", "linear.pt", "--plot", str(png), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_images"] == 10_000 and report["accuracy"] >= 0.92
    assert sum(map(sum, report["confusion"])) == 10_000
    assert report["plot"] == str(png)
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 200


def test_evaluate_text_names_accuracy_and_confusions():
    result = run("evaluate", "--model", str(CHECKPOINTS / "mlp.pt"))
    assert result.returncode == 0, result.stderr
    assert "accuracy 98." in result.stdout or "accuracy 99." in result.stdout
    assert "most confused" in result.stdout


def test_predict_index_42():
    result = run("predict", "--model", "cnn.pt", "--index", "42", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["index"] == 42 and out["label"] == 4 and out["prediction"] == 4
    assert len(out["probabilities"]) == 10 and sum(out["probabilities"]) == pytest.approx(1, 1e-4)


def test_train_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny.pt"
    result = run(
        "train",
        "--arch",
        "mlp",
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--lr",
        "1e-2",
        "--quiet",
        "--train-subset",
        "2000",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    report = json.loads(run("evaluate", "--model", str(out), "--json").stdout)
    assert report["accuracy"] > 0.6  # chance is 0.1


def test_offline_with_empty_data_dir(tmp_path):
    result = run(
        "evaluate",
        "--model",
        "linear.pt",
        "--data-dir",
        str(tmp_path),
        env={"MNISTLENS_OFFLINE": "1"},
    )
    assert_clean_error(result, "MNIST files missing", str(tmp_path), "t10k-images-idx3-ubyte")


def test_unknown_model(tmp_path):
    result = run("evaluate", "--model", "resnet50.pt", cwd=tmp_path)
    assert_clean_error(result, "no checkpoint 'resnet50.pt'")


@pytest.mark.parametrize("index", ["10000", "-1"])
def test_out_of_range_index(index):
    result = run("predict", "--model", "linear.pt", "--index", index)
    assert_clean_error(result, f"test index {index} is out of range")


def test_untrusted_pickle_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    torch.save({"state_dict": WritesAFile(target)}, tmp_path / "evil.pt")
    result = run("evaluate", "--model", str(tmp_path / "evil.pt"))
    assert_clean_error(result, "refusing to load", "would import or run code")
    assert not target.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--arch", "vgg", "--out", "x.pt"], "unknown architecture 'vgg'"),
        (["train", "--arch", "linear", "--hidden", "3", "--out", "x.pt"], "bad arguments"),
        (["predict", "--model", "cnn.pt"], "--index"),
        (["explode"], "invalid choice"),
    ],
)
def test_bad_options(args, fragment, tmp_path):
    assert_clean_error(run(*args, cwd=tmp_path), fragment)
    assert not (tmp_path / "x.pt").exists()


def test_explain_index_42_png_and_json(tmp_path):
    png = tmp_path / "e42.png"
    result = run(
        "explain",
        "--model",
        "cnn.pt",
        "--index",
        "42",
        "--methods",
        "saliency,ig",
        "--out",
        str(png),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["index"] == 42 and out["label"] == 4 and out["prediction"] == 4
    assert len(out["probabilities"]) == 10
    assert set(out["methods"]) == {"saliency", "integrated_gradients"}
    assert abs(out["methods"]["integrated_gradients"]["delta"]) < 0.5
    assert out["methods"]["saliency"]["png"] == str(png)
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_explain_text_output_and_user_image(tmp_path, test_set):
    pixels = (255 - test_set[0][0, 0] * 255).byte().numpy()  # test digit 0 (a 7), ink on white
    Image.fromarray(pixels).resize((140, 140)).save(tmp_path / "mine.png")
    result = run(
        "explain", "--model", "cnn.pt", "--image", str(tmp_path / "mine.png"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "mine.png: predicted 7" in result.stdout
    assert "completeness delta" in result.stdout
    assert (tmp_path / "explain_mine.png").is_file()


def test_explain_all_writes_npy_for_the_test_set(tmp_path):
    import numpy as np

    out = tmp_path / "maps.npy"
    result = run(
        "explain", "--model", "linear.pt", "--all", "--method", "saliency", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    maps = np.load(out)
    assert maps.shape == (10_000, 28, 28) and maps.dtype == np.float32


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
def test_explain_errors(args, fragment, tmp_path):
    assert_clean_error(run("explain", "--model", "cnn.pt", *args, cwd=tmp_path), fragment)


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and min(image.size) > 50


@pytest.mark.parametrize(
    "model, extra, expected",
    [
        ("linear.pt", [], ["w.png"]),
        ("mlp.pt", [], ["w.png"]),
        ("cnn.pt", ["--index", "3"], ["w.png", "w_conv1.png", "w_conv2.png", "w_conv3.png"]),
    ],
)
def test_weights_command_writes_pngs(tmp_path, model, extra, expected):
    result = run("weights", "--model", model, "--out", str(tmp_path / "w.png"), *extra)
    assert result.returncode == 0, result.stderr
    for name in expected:
        assert f"wrote {tmp_path / name}" in result.stdout and _is_png(tmp_path / name)


def test_units_command_top_images_and_profile(tmp_path):
    out = tmp_path / "units.png"
    result = run(
        "units",
        "--model",
        "cnn.pt",
        "--layer",
        "relu_fc1",
        "--unit",
        "3",
        "--top",
        "8",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "unit 3: top test images" in result.stdout and _is_png(out)
    result = run(
        "units",
        "--model",
        "mlp.pt",
        "--layer",
        "relu1",
        "--out",
        str(out),
        "--pca-out",
        str(tmp_path / "pca.png"),
    )
    assert result.returncode == 0, result.stderr
    assert "most class-selective" in result.stdout
    assert _is_png(out) and _is_png(tmp_path / "pca.png")


def test_visualize_command(tmp_path):
    out = tmp_path / "dream3.png"
    result = run(
        "visualize", "--model", "cnn.pt", "--class", "3", "--steps", "120", "--out", str(out)
    )
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
def test_internals_errors(args, fragment, tmp_path):
    assert_clean_error(run(*args, cwd=tmp_path), fragment)


def test_measure_command_json_and_plot(tmp_path):
    png = tmp_path / "curves.png"
    result = run(
        "measure",
        "--model",
        "cnn.pt",
        "--methods",
        "saliency,ig",
        "--n",
        "50",
        "--plot",
        str(png),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out["methods"]) == {"random", "saliency", "integrated_gradients"}
    ig, rnd = out["methods"]["integrated_gradients"], out["methods"]["random"]
    assert ig["deletion_auc"] < rnd["deletion_auc"] and ig["insertion_auc"] > rnd["insertion_auc"]
    assert ig["completeness_error_median"] < 0.02
    assert _is_png(png)


def test_measure_bad_n(tmp_path):
    assert_clean_error(
        run("measure", "--model", "cnn.pt", "--n", "0", cwd=tmp_path), "--n must be 1 to 10000"
    )
