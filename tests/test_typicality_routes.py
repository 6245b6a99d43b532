"""The routes a picture takes in that end in something other than a prediction or an
explanation carry the verdict too: `counterfactual` (JSON, text, figure) and the
explorer's other pages about the chosen digit (Inside the network, Training examples),
for a letter drawn on the canvas as for a test image."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from test_predict_images import VERDICT_KEYS, glyph_png

from mnistlens.counterfactual import counterfactuals
from mnistlens.counterfactual.figures import plot_counterfactual
from mnistlens.typicality import digit_like, probes

pytest.importorskip("streamlit")
from test_app import apps_module, open_app  # noqa: E402

WARNING = "Not digit-like"


@pytest.fixture(scope="module")
def letter_png(tmp_path_factory):
    """A serif X printed dark on white, as a user's photo of one would be."""
    return glyph_png(tmp_path_factory.mktemp("letter") / "X.png", "X", "DejaVuSerif.ttf")


# ---------------------------------------------------------------- the command


@pytest.mark.slow
def test_counterfactual_of_a_letter_carries_the_verdict(run, letter_png, tmp_path):
    """`counterfactual --image` of a letter: its JSON's digit_like flags it, with the
    same verdict `predict` gives the same file; the text says WARNING; the figure is
    written."""
    out = tmp_path / "x.png"
    found = run(
        "counterfactual", "--model", "cnn.pt", "--image", letter_png, "--mode", "plain",
        "--out", out, "--json",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["digit_like"].keys() == VERDICT_KEYS
    assert result["digit_like"]["verdict"] is False
    assert result["digit_like"]["percentile"] > 95  # flagged: among the 5% least typical
    predicted = json.loads(
        run("predict", "--model", "cnn.pt", "--image", letter_png, "--json").stdout
    )
    assert result["digit_like"] == predicted["digit_like"]  # one verdict, whichever route
    assert out.is_file()
    text = run(
        "counterfactual", "--model", "cnn.pt", "--image", letter_png, "--mode", "plain",
        "--out", out,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    (line,) = [t for t in text.stdout.splitlines() if WARNING in t]
    assert line.startswith("WARNING: Not digit-like") and "mahalanobis@relu3" in line


@pytest.mark.slow
def test_counterfactual_of_a_test_digit_passes(run, tmp_path):
    """Test image 42 (a 4) is digit-like: verdict true in JSON, 'digit-like: yes' in text,
    no warning."""
    args = ("counterfactual", "--model", "cnn.pt", "--index", "42", "--mode", "plain")
    found = run(*args, "--out", tmp_path / "cf.png", "--json")
    assert found.returncode == 0, found.stderr
    verdict = json.loads(found.stdout)["digit_like"]
    assert verdict.keys() == VERDICT_KEYS and verdict["verdict"] is True
    assert verdict["score"] <= verdict["threshold"]
    text = run(*args, "--out", tmp_path / "cf.png")
    assert "digit-like: yes" in text.stdout and WARNING not in text.stdout


@pytest.mark.slow
def test_the_figure_warns_above_a_letter_and_marks_its_pictures(cnn):
    """`plot_counterfactual(warning=)`: the warning leads the red title and the three
    picture panels (digit, counterfactual, ink) are each marked; without one, neither."""
    letter = probes.render_glyph("X", "DejaVuSerif.ttf")[None]  # (1, 1, 28, 28)
    verdict = digit_like(cnn, letter)
    assert not verdict.verdict[0]
    found = counterfactuals(cnn, letter, mode="plain")

    def marks(fig) -> int:
        return sum(t.get_text() == "not a digit?" for ax in fig.axes for t in ax.texts)

    warned = plot_counterfactual(found, 0, "X", warning=verdict.warning(0))
    title = warned._suptitle
    assert title.get_text().startswith(WARNING) and title.get_text().endswith("\nX")
    assert title.get_color() == "firebrick"
    assert marks(warned) == 3
    plain = plot_counterfactual(found, 0, "X")
    assert plain._suptitle.get_text() == "X" and marks(plain) == 0


# ---------------------------------------------------------------- the explorer


def canvas_of(char: str, font: str = "DejaVuSans-Bold.ttf") -> np.ndarray:
    """What the sidebar's canvas returns for a character drawn white on its black
    background: (252, 252, 4) RGBA."""
    picture = Image.new("RGBA", (252, 252), (0, 0, 0, 255))
    face = ImageFont.truetype(str(probes.font_path(font)), 180)
    ImageDraw.Draw(picture).text((126, 126), char, font=face, fill="white", anchor="mm")
    return np.asarray(picture)


@pytest.fixture
def drawn_letter(canvas):
    """The (fake) canvas holds a drawn X."""
    canvas["drawn"] = canvas_of("X")


def warnings(at) -> list[str]:
    return [w.value for w in at.warning if WARNING in w.value]


def texts(at) -> str:
    """The main area's markdown and image captions, as one string."""
    captions = [c for image in at.main.get("image") for c in image.captions]
    return " ".join([m.value for m in at.markdown] + captions)


def drawing_on(page: str, **query):
    """`page` with the sidebar switched to the (fake) canvas."""
    at = open_app(page, **query)
    at.radio(key="source").set_value("draw your own").run()
    assert not at.exception
    return at


@pytest.mark.slow
@pytest.mark.usefixtures("explorer_cache")
@pytest.mark.parametrize("page, model", [("inside", "cnn.pt"), ("training", "mlp.pt")])
def test_a_drawn_letter_is_warned_about_on_the_digit_pages(drawn_letter, page, model):
    """A letter X on the canvas: Inside the network and Training examples each show
    one warning, the Explain page's text, and still show the page (its pictures)."""
    at = drawing_on(page, model=model)
    (warning,) = warnings(at)
    assert "outside what it was trained on" in warning
    assert "your drawing" in texts(at)  # the page itself, about the drawing, below it


@pytest.mark.slow
@pytest.mark.usefixtures("explorer_cache")
@pytest.mark.parametrize("page, model", [("inside", "cnn.pt"), ("training", "mlp.pt")])
def test_a_test_digit_gets_no_warning_on_the_digit_pages(page, model):
    """Test image 42 (a 4) is digit-like for both models: no warning on either page."""
    at = open_app(page, model=model, index="42")
    assert "test image 42" in texts(at)  # the page shown, about that digit
    assert not warnings(at)


@pytest.mark.slow
@pytest.mark.usefixtures("explorer_cache")
def test_the_explain_page_warns_once_about_a_drawn_letter(drawn_letter):
    """On Explain the warning stays the page's own, above the maps: one, not two."""
    at = drawing_on("explain")
    assert len(warnings(at)) == 1
    assert any("not a digit?" in m.value for m in at.markdown)


@pytest.mark.slow
def test_the_explain_pages_counterfactual_figure_carries_the_warning(apps_on_path, monkeypatch):
    """The counterfactual panel's figure (drawn once in `cache.counterfactual`, sent as
    the download too) gets the warning for a drawn letter, and none for test image 42."""
    cache = apps_module("cache")
    given = []
    real = cache.plot_counterfactual
    monkeypatch.setattr(
        cache,
        "plot_counterfactual",
        lambda *a, warning=None, **k: given.append(warning) or real(*a, warning=warning, **k),
    )
    letter = probes.render_glyph("X", "DejaVuSerif.ttf")  # (1, 28, 28)
    digit = apps_module("catalog").get_test_set()[0][42]
    cache.counterfactual("cnn.pt", "drawn X (routes test)", letter, None, "plain")
    cache.counterfactual("cnn.pt", "test 42 (routes test)", digit, None, "plain")
    assert len(given) == 2
    assert given[0].startswith(WARNING) and given[1] is None
