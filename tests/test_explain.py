"""explain(), contrast and class maps, user images, and the explanation plots."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from mnistlens import MnistlensError
from mnistlens import attribution as A
from mnistlens.comparison.figures import plot_pair_maps
from mnistlens.explain import class_mean_maps, contrast_maps, explain
from mnistlens.metrics import predict_logits
from mnistlens.pictures import load_digit_image, prepare_digit
from mnistlens.plots import plot_class_maps, plot_explanation, save_figure


def test_explain_bundles_maps_predictions_and_deltas(cnn, test_set):
    images = test_set[0][:4]
    result = explain(cnn, images, ["saliency", "ig", "gradcam"], ig={"n_steps": 16})
    assert set(result.maps) == {"saliency", "integrated_gradients", "grad_cam"}
    assert all(m.shape == (4, 1, 28, 28) for m in result.maps.values())
    assert torch.equal(result.predictions, test_set[1][:4])  # the CNN gets these right
    torch.testing.assert_close(result.probabilities.sum(dim=1), torch.ones(4))
    assert result.deltas["integrated_gradients"].shape == (4,)
    assert torch.equal(result.maps["saliency"], A.saliency(cnn, images))


def test_a_reference_computed_once_scores_every_method_as_a_fresh_one(
    shipped, test_set, monkeypatch
):
    """Methods explained one call at a time (as the explorer does) can share the random
    ranking they are scored against: the scores equal those of one call with both."""
    from mnistlens import explain as module
    from mnistlens.faithfulness import random_reference

    mlp, images = shipped["mlp"][0], test_set[0][:3]
    together = explain(mlp, images, ["saliency", "ig"], measure=True)
    reference = random_reference(mlp, images, together.target)
    monkeypatch.setattr(module, "random_reference", None)  # calling it would fail
    for method in ("saliency", "integrated_gradients"):
        alone = explain(mlp, images, [method], measure=True, reference=reference)
        for field in ("deletion_auc", "insertion_auc", "random_deletion_auc"):
            torch.testing.assert_close(
                getattr(alone.scores[method], field), getattr(together.scores[method], field)
            )


def test_explain_rejects_options_for_methods_not_asked(cnn, test_set):
    with pytest.raises(MnistlensError, match="options given for methods not requested"):
        explain(cnn, test_set[0][:2], ["saliency"], occlusion={"window": 3})


def test_contrast_is_the_difference_of_the_two_class_maps(cnn, test_set):
    """Attribution is linear in the output: map(a - b) = map(a) - map(b) for IxG."""
    images = test_set[0][:3]
    contrast = contrast_maps(cnn, images, 3, 8, method="input_x_gradient")
    difference = A.input_x_gradient(cnn, images, 3) - A.input_x_gradient(cnn, images, 8)
    torch.testing.assert_close(contrast, difference, atol=1e-5, rtol=1e-4)
    cam = contrast_maps(cnn, images, 3, 8, method="grad_cam")
    assert cam.shape == (3, 1, 28, 28) and (cam >= 0).all()


def test_class_mean_maps_average_correct_images_per_digit(shipped, test_set):
    model, _ = shipped["linear"]
    images, labels = test_set[0][:300], test_set[1][:300]
    maps = class_mean_maps(model, images, labels, method="input_x_gradient", batch_size=64)
    assert maps.shape == (10, 28, 28)
    correct = predict_logits(model, images).argmax(dim=1) == labels
    sevens = images[correct & (labels == 7)]
    expected = A.input_x_gradient(model, sevens, 7).mean(dim=0)[0]
    torch.testing.assert_close(maps[7], expected, atol=1e-5, rtol=1e-4)


def _upscaled_png(image: torch.Tensor, path, invert: bool, size: int = 200):
    """A test digit as a big picture, as a user might have scanned it."""
    pixels = (image[0] * 255).byte().numpy()
    picture = Image.fromarray(255 - pixels if invert else pixels).resize((size, size))
    picture.save(path)


@pytest.mark.parametrize("invert", [True, False])
def test_user_image_of_a_real_digit_comes_back_like_mnist(cnn, test_set, tmp_path, invert):
    """Scaled up (and as black ink on white), a test digit is restored close to MNIST form."""
    images, labels = test_set
    for index in (0, 1, 42):
        _upscaled_png(images[index], tmp_path / "d.png", invert)
        restored = load_digit_image(tmp_path / "d.png")
        assert restored.shape == (1, 28, 28) and 0 <= restored.min() and restored.max() <= 1
        assert (restored - images[index]).abs().mean() < 0.08
        assert predict_logits(cnn, restored[None]).argmax().item() == labels[index].item()


def test_user_image_rendered_with_a_font(cnn, tmp_path):
    picture = Image.new("L", (120, 160), 255)
    font = ImageFont.load_default(size=130)
    ImageDraw.Draw(picture).text((25, 0), "7", fill=0, font=font)
    picture.save(tmp_path / "seven.png")
    digit = load_digit_image(tmp_path / "seven.png")
    rows = (digit[0] > 0.1).any(dim=1).nonzero()[:, 0]
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)  # fitted into 20 px
    mass = digit[0].sum()
    cy = float((torch.arange(28)[:, None] * digit[0]).sum() / mass)
    assert abs(cy - 14.0) <= 1.0  # centred by centre of mass, as in MNIST
    assert predict_logits(cnn, digit[None]).argmax().item() == 7


def test_blank_and_unreadable_images_are_refused(tmp_path):
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(MnistlensError, match="no digit found"):
        load_digit_image(tmp_path / "blank.png")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(MnistlensError, match="cannot read .*notes.png as an image"):
        load_digit_image(tmp_path / "notes.png")
    with pytest.raises(MnistlensError, match="image file not found"):
        load_digit_image(tmp_path / "missing.png")


def test_prepare_digit_keeps_aspect_ratio():
    """A tall thin bar stays tall and thin: 20 px high, a few px wide."""
    bar = torch.zeros(100, 100)
    bar[10:90, 45:55] = 1.0
    out = prepare_digit(bar)[0]
    rows = (out > 0.5).any(dim=1).nonzero()[:, 0]
    cols = (out > 0.5).any(dim=0).nonzero()[:, 0]
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 <= 4


@pytest.mark.slow
def test_plots_write_valid_pngs(cnn, test_set, tmp_path):
    images = test_set[0][:1]
    result = explain(cnn, images, ["saliency", "ixg"])
    fig = plot_explanation(
        images[0], {k: v[0] for k, v in result.maps.items()}, "title", shared_scale=True
    )
    assert len(fig.axes) == 3 + 2  # input, two maps, two colorbars
    path = save_figure(fig, tmp_path / "e.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > 2 * png.size[1]
    maps = {"saliency": torch.rand(10, 28, 28), "ig": torch.randn(10, 28, 28)}
    path = save_figure(plot_class_maps(maps), tmp_path / "grid.png")
    with Image.open(path) as png:
        assert png.format == "PNG"


@pytest.mark.slow
@pytest.mark.process
def test_quickstart_notebook_runs(tmp_path):
    """examples/quickstart.ipynb executes top to bottom (stored without outputs)."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "test accuracy 99." in printed and "predictions [7, 2, 1, 0]" in printed
    assert (tmp_path / "quickstart_explanation.png").is_file()


@pytest.mark.parametrize("stroke", ["white", "black"])
def test_strokes_on_a_transparent_canvas_become_an_mnist_digit(cnn, test_set, tmp_path, stroke):
    """Test digit 0 (a 7) drawn as opaque strokes on a fully transparent canvas, light or
    dark: the ground is chosen to contrast, so the result is white ink on black and the
    model still reads a 7 (an inverted choice would give a white square)."""
    digit = test_set[0][0, 0]
    alpha = (digit * 255).byte().numpy()
    color = 255 if stroke == "white" else 0
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = alpha
    Image.fromarray(rgba, "RGBA").resize((112, 112)).save(tmp_path / "t.png")
    restored = load_digit_image(tmp_path / "t.png")
    assert float(restored[0, 0, 0]) == 0.0  # background black
    assert predict_logits(cnn, restored[None]).argmax().item() == 7


@pytest.mark.slow
def test_16_bit_and_huge_pictures(cnn, test_set, tmp_path):
    """A 16-bit grayscale PNG is scaled by its own range; a 10000 x 10000 picture is
    shrunk before decoding to floats (no 400 MB array) and still reads as its digit."""
    digit = test_set[0][0, 0]
    sixteen = (digit.numpy() * 65535).astype(np.uint16)
    Image.fromarray(sixteen).resize((140, 140)).save(tmp_path / "d16.png")
    restored = load_digit_image(tmp_path / "d16.png")
    assert predict_logits(cnn, restored[None]).argmax().item() == 7
    big = Image.fromarray((digit.numpy() * 255).astype(np.uint8)).resize((10000, 10000))
    big.save(tmp_path / "big.png", compress_level=1)  # quick to write; decoded the same
    restored = load_digit_image(tmp_path / "big.png")
    assert restored.shape == (1, 28, 28)
    assert predict_logits(cnn, restored[None]).argmax().item() == 7


@pytest.mark.slow
def test_where_b_beats_a_uses_exactly_those_images(shipped, test_set):
    """The images the CNN gets right and the linear model wrong, and both models' maps
    of the true class there; the figure draws a mean per digit and the examples."""
    from mnistlens.comparison.maps import where_b_beats_a

    images, labels = test_set[0][:500], test_set[1][:500]
    linear, cnn = shipped["linear"][0], shipped["cnn"][0]
    found = where_b_beats_a(linear, cnn, images, labels, "saliency", examples=4)
    right_cnn = predict_logits(cnn, images).argmax(dim=1) == labels
    right_linear = predict_logits(linear, images).argmax(dim=1) == labels
    assert found["indices"].tolist() == (right_cnn & ~right_linear).nonzero()[:, 0].tolist()
    first = found["indices"][:4]
    torch.testing.assert_close(
        found["examples_b"], A.saliency(cnn, images[first], labels[first])[:, 0]
    )
    assert found["mean_a"].shape == found["mean_b"].shape == (28, 28)
    given = where_b_beats_a(linear, cnn, images, labels, "saliency", 4, found["indices"].tolist())
    for key in ("indices", "mean_a", "examples_b", "digits", "digit_counts", "digit_means_b"):
        torch.testing.assert_close(given[key], found[key])
    fig = plot_pair_maps(found, images, "linear", "cnn", "saliency")
    d = len(found["digits"])
    assert len([ax for ax in fig.axes if ax.images]) == 2 * (d + 4)  # rows A, B
    with pytest.raises(MnistlensError, match="gets no image right"):
        where_b_beats_a(cnn, cnn, images, labels, "saliency")


def test_where_b_beats_a_means_each_digit_over_exactly_its_images(shipped, test_set):
    """Per true digit, the mean map over exactly that digit's images among the ones the
    CNN gets right and the linear model wrong, recomputed here one digit at a time."""
    from mnistlens.comparison.maps import where_b_beats_a

    images, labels = test_set[0][:500], test_set[1][:500]
    linear, cnn = shipped["linear"][0], shipped["cnn"][0]
    found = where_b_beats_a(linear, cnn, images, labels, "saliency", examples=4)
    indices, digits, counts = found["indices"], found["digits"], found["digit_counts"]
    true = labels[indices]
    assert len(digits) >= 3  # mixed digits, or the per-digit means prove nothing
    assert digits.tolist() == sorted(set(true.tolist()))  # sorted, each present, no other
    assert int(counts.sum()) == len(indices)
    assert found["digit_means_a"].shape == found["digit_means_b"].shape == (len(digits), 28, 28)
    for d, n, mean_a, mean_b in zip(
        digits, counts, found["digit_means_a"], found["digit_means_b"], strict=True
    ):
        chosen = indices[true == d]
        assert len(chosen) == n > 0
        x, y = images[chosen], labels[chosen]
        torch.testing.assert_close(mean_a, A.saliency(linear, x, y)[:, 0].mean(dim=0))
        torch.testing.assert_close(mean_b, A.saliency(cnn, x, y)[:, 0].mean(dim=0))
    # The overall mean is still there, and is the count-weighted mean of the digits' means.
    weighted = (found["digit_means_b"] * counts[:, None, None]).sum(dim=0) / counts.sum()
    torch.testing.assert_close(found["mean_b"], weighted)


@pytest.mark.slow
def test_pair_figure_wraps_ten_digits_and_six_examples(shipped, test_set):
    """Ten digit means plus six examples: the means on rows A and B, the examples on a
    second pair of rows (not a 16-panel strip), titled by digit and count or by index;
    with no examples, only the means' rows."""
    from mnistlens.comparison.maps import where_b_beats_a

    images, labels = test_set
    # Given indices: the first three images of every digit, so all ten digits appear.
    indices = [int((labels == d).nonzero()[i, 0]) for d in range(10) for i in range(3)]
    linear, mlp = shipped["linear"][0], shipped["mlp"][0]
    found = where_b_beats_a(linear, mlp, images, labels, "saliency", 6, sorted(indices))
    assert found["digits"].tolist() == list(range(10))
    assert found["digit_counts"].tolist() == [3] * 10
    fig = plot_pair_maps(found, images, "linear", "mlp", "saliency")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 * (10 + 6)
    # Four rows of panels, ten columns; the first ten panels (A's means) on the top row.
    tops = [round(ax.get_position().y1, 4) for ax in panels]
    assert len(set(tops)) == 4 and len({round(ax.get_position().x0, 4) for ax in panels}) == 10
    assert set(tops[:10]) == {max(tops)}
    titles = [ax.get_title() for ax in panels if ax.get_title()]
    assert titles[:10] == [f"digit {d} (n=3)" for d in range(10)]
    assert titles[10:] == [f"#{i}" for i in sorted(indices)[:6]]
    assert all(ax.collections for ax in panels[20:])  # the digit's outline on examples
    assert "mean map per true digit" in fig.get_suptitle()
    bare = where_b_beats_a(linear, mlp, images, labels, "saliency", 0, sorted(indices))
    fig = plot_pair_maps(bare, images, "linear", "mlp", "saliency")
    assert len([ax for ax in fig.axes if ax.images]) == 2 * 10
