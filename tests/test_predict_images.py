"""Every route a picture takes in carries a verdict: `predict --image` with several
files, `predict --index`, and `explain`'s JSON."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnistlens.typicality import probes

from conftest import assert_clean_error

VERDICT_KEYS = {"verdict", "score", "threshold", "percentile", "detector"}


def glyph_png(path, char: str, font: str = "DejaVuSans.ttf"):
    """A character printed dark on white paper, as a user's photo of one would be."""
    picture = Image.new("L", (112, 112), 255)
    face = ImageFont.truetype(str(probes.font_path(font)), 72)
    ImageDraw.Draw(picture).text((56, 56), char, font=face, fill=0, anchor="mm")
    picture.save(path)
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    return {
        "four": glyph_png(folder / "four.png", "4"),
        "M": glyph_png(folder / "M.png", "M", "DejaVuSans-Bold.ttf"),
        "X": glyph_png(folder / "X.png", "X", "DejaVuSerif.ttf"),
        "junk": _write(folder / "junk.png", b"not a picture at all"),
        "blank": _blank(folder / "blank.png"),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _blank(path):
    Image.fromarray(np.full((40, 40), 200, dtype=np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_several_pictures_one_object_each_with_a_verdict(run, pictures):
    """--json prints one object per picture, in order; letters are flagged, the printed
    4 passes and is read as a 4."""
    files = [pictures["four"], pictures["M"], pictures["X"]]
    result = run("predict", "--model", "cnn.pt", "--image", *files, "--json")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [o["image"] for o in out] == [str(f) for f in files]
    for o in out:
        assert o["digit_like"].keys() == VERDICT_KEYS
        assert o["digit_like"]["detector"] == "mahalanobis@relu3"
    assert out[0]["prediction"] == 4 and out[0]["digit_like"]["verdict"] is True
    assert out[1]["digit_like"]["verdict"] is False and out[2]["digit_like"]["verdict"] is False
    text = run("predict", "--model", "cnn.pt", "--image", *files)
    assert text.returncode == 0
    assert text.stdout.count("WARNING: Not digit-like") == 2
    assert "four.png: predicted 4" in text.stdout


@pytest.mark.parametrize("bad, fragment", [("junk", "junk.png"), ("blank", "blank.png")])
@pytest.mark.parametrize("as_json", [False, True])
def test_one_unreadable_picture_stops_the_call_before_any_output(
    run, pictures, bad, fragment, as_json
):
    """A missing, broken or blank file among good ones: a one-line error naming it, exit
    2, and nothing on stdout that could be taken for a valid answer."""
    files = [pictures["four"], pictures[bad], pictures["M"]]
    result = run("predict", "--model", "linear.pt", "--image", *files, *["--json"] * as_json)
    assert_clean_error(result, fragment)
    assert result.stdout == ""


def test_a_missing_picture_is_named(run, pictures, tmp_path):
    missing = tmp_path / "nowhere.png"
    result = run("predict", "--model", "linear.pt", "--image", pictures["four"], missing)
    assert_clean_error(result, "nowhere.png")
    assert result.stdout == ""


@pytest.mark.slow
def test_a_test_index_carries_its_verdict(run):
    result = run("predict", "--model", "cnn.pt", "--index", "42", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["index"] == 42 and out["prediction"] == 4
    assert out["digit_like"].keys() == VERDICT_KEYS and out["digit_like"]["verdict"] is True
    assert 0 <= out["digit_like"]["percentile"] <= 100


@pytest.mark.slow
def test_explain_json_carries_the_verdict(run, pictures, tmp_path):
    """`explain --image` of a letter: the JSON's digit_like flags it; a test digit's
    passes."""
    letter = run(
        "explain", "--model", "cnn.pt", "--image", pictures["M"], "--methods", "saliency",
        "--out", tmp_path / "m.png", "--json",
    )  # fmt: skip
    assert letter.returncode == 0, letter.stderr
    out = json.loads(letter.stdout)
    assert out["digit_like"].keys() == VERDICT_KEYS and out["digit_like"]["verdict"] is False
    assert (tmp_path / "m.png").is_file()
    digit = run(
        "explain", "--model", "cnn.pt", "--index", "0", "--methods", "saliency",
        "--out", tmp_path / "d.png", "--json",
    )  # fmt: skip
    assert json.loads(digit.stdout)["digit_like"]["verdict"] is True


@pytest.mark.slow
def test_without_mnist_files_a_picture_is_answered_with_no_verdict_and_why(
    run, pictures, tmp_path, monkeypatch
):
    """Offline with no MNIST files (and no fit kept), the verdict cannot be fitted: the
    picture is still classified, its digit_like says why there is no verdict, no
    warning is printed as if it were judged; other commands say the same."""
    from mnistlens.influence import cache

    monkeypatch.setenv("MNISTLENS_DATA", str(tmp_path / "no-mnist"))
    monkeypatch.setenv("MNISTLENS_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MNISTLENS_TEST_CACHE", str(tmp_path / "cache"))
    cache.clear_memory_cache()  # no fit kept in memory from earlier tests either
    result = run("predict", "--model", "cnn.pt", "--image", pictures["four"], "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["prediction"] == 4
    assert found["digit_like"]["verdict"] is None and found["digit_like"]["detector"] is None
    assert "MNIST files missing" in found["digit_like"]["why"]
    text = run("explain", "--model", "cnn.pt", "--image", pictures["X"], "--methods", "saliency")
    assert text.returncode == 0, text.stderr
    assert "digit-like: unknown (no verdict: MNIST files missing" in text.stdout
    assert "WARNING" not in text.stdout
