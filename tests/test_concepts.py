"""Concepts (TCAV): the built-in concept images, CAVs, the significance test, and what
TCAV finds on the shipped CNN and on a model with a planted concept."""

import json
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from mnistlens import MnistlensError
from mnistlens.concepts import (
    concept_set,
    fit_cav,
    folder_set,
    holm,
    list_concepts,
    picture_set,
    random_set,
    run,
    tcav,
)
from mnistlens.concepts.pipeline import concept_sets
from mnistlens.concepts.tcav import class_gradients, t_test
from mnistlens.data import load_mnist

from conftest import assert_clean_error


def test_concept_sets_are_mnist_style_and_seeded():
    """Every built-in set is (N, 1, 28, 28) in [0, 1] with ink; the same seed draws the
    same images, another seed others."""
    for name in list_concepts():
        images = concept_set(name, 20, seed=3)
        assert images.shape == (20, 1, 28, 28) and images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1
        assert (images.flatten(1).sum(1) > 5).all()  # every image has a stroke
        assert torch.equal(images, concept_set(name, 20, seed=3))
        assert not torch.equal(images, concept_set(name, 20, seed=4))


def enclosed(image: torch.Tensor) -> bool:
    """Does the ink enclose background that cannot reach the border?"""
    background, _ = ndimage.label(image[0].numpy() < 0.5)
    border = set(np.unique(np.r_[background[0], background[-1], background[:, 0],
                                 background[:, -1]]))  # fmt: skip
    return bool(set(np.unique(background)) - border - {0})


def test_concepts_draw_what_their_names_say():
    """Closed loops enclose a hole and open curves do not; thick strokes carry more ink
    per pixel of length than thin ones; horizontal bars are wider than tall and vertical
    strokes taller than wide."""
    loops, curves = concept_set("closed_loop", 50), concept_set("open_curve", 50)
    assert all(enclosed(x) for x in loops)
    assert not any(enclosed(x) for x in curves)
    thick, thin = concept_set("thick_stroke", 50), concept_set("thin_stroke", 50)
    assert thick.sum((1, 2, 3)).mean() > 2.5 * thin.sum((1, 2, 3)).mean()

    def extent(images, dim):  # how many rows (dim=3) or columns (dim=2) carry ink
        return (images[:, 0].amax(dim=dim - 1) > 0.5).sum(-1).float()

    bars, strokes = concept_set("horizontal_bar", 50), concept_set("vertical_stroke", 50)
    assert (extent(bars, 2) > 2 * extent(bars, 3)).all()  # columns inked > rows inked
    assert (extent(strokes, 3) > 2 * extent(strokes, 2)).all()


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(MnistlensError, match="closed_loop, horizontal_bar"):
        concept_set("loop")
    with pytest.raises(MnistlensError, match="strokes or digits"):
        random_set(kind="noise")


def png(image: torch.Tensor) -> bytes:
    """One (1, 28, 28) image as PNG bytes, black ink on white and 4x larger, as a user
    would draw it."""
    import io

    from PIL import Image

    pixels = (255 - image[0].numpy() * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((112, 112)).save(buffer, format="png")
    return buffer.getvalue()


def test_folder_concept_reads_pictures_like_uploads(tmp_path):
    """A folder of pictures becomes an MNIST-style set; fewer than 5 are refused."""
    for i, image in enumerate(concept_set("closed_loop", 6)):
        (tmp_path / f"{i}.png").write_bytes(png(image))
    images = folder_set(tmp_path)
    assert images.shape == (6, 1, 28, 28)
    assert images.mean() < 0.5  # turned into white ink on black
    assert all(enclosed(x) for x in images)
    for extra in list(tmp_path.iterdir())[:2]:
        extra.unlink()
    with pytest.raises(MnistlensError, match="holds 4 pictures; a concept needs at least 5"):
        folder_set(tmp_path)


def test_pictures_in_memory_make_a_concept():
    """Uploaded pictures become an MNIST-style set, with drawn images after them; fewer
    than 5 in all, or one that is not a picture, are refused naming the problem; your
    set keeps its name beside built-in ones and may not take theirs."""
    pictures = [(f"{i}.png", png(x)) for i, x in enumerate(concept_set("closed_loop", 6))]
    images = picture_set(pictures)
    assert images.shape == (6, 1, 28, 28) and all(enclosed(x) for x in images)
    with pytest.raises(MnistlensError, match="3 pictures given; a concept needs at least 5"):
        picture_set(pictures[:3])
    with pytest.raises(MnistlensError, match="cannot read notes.txt as a picture"):
        picture_set([*pictures, ("notes.txt", b"not a picture")])
    drawn = images[:2]  # prepared already, as the explorer's canvas drawings are
    together = picture_set(pictures[:3], drawn)
    assert torch.equal(together, torch.cat([images[:3], drawn]))  # the uploads, then these
    with pytest.raises(MnistlensError, match="4 pictures given; a concept needs at least 5"):
        picture_set(pictures[:3], drawn[:1])
    sets = concept_sets(["thin_stroke"], yours={"rings": images}, n=10)
    assert list(sets) == ["thin_stroke", "rings"] and torch.equal(sets["rings"], images)
    with pytest.raises(MnistlensError, match="'thin_stroke' has the name of another"):
        concept_sets(["thin_stroke"], yours={"thin_stroke": images}, n=10)
    with pytest.raises(MnistlensError, match=r"shape \(N, 1, 28, 28\)"):
        concept_sets(yours={"flat": images.flatten(1)})


def test_holm_by_hand():
    """Holm's step-down values, worked out by hand, and never above 1."""
    p = np.array([0.01, 0.04, 0.03, 0.5])
    assert holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm(np.array([0.6, 0.7])).tolist() == [1.0, 1.0]


def test_t_test_is_scipys_welch():
    """The written-out Welch test gives scipy's p-values, and a defined answer where
    both lists are constant."""
    from scipy import stats

    g = np.random.default_rng(0)
    for a, b in [(g.random(10), g.random(10)), (np.ones(10), g.random(12) * 0.9)]:
        with warnings.catch_warnings():  # scipy warns of a constant list; its answer holds
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = stats.ttest_ind(a, b, equal_var=False).pvalue
        assert t_test(a, b) == pytest.approx(expected, rel=1e-9)
    assert t_test(np.ones(10), np.ones(10)) == 1.0
    assert t_test(np.ones(10), np.zeros(10)) == 0.0


@pytest.mark.parametrize("method", [pytest.param("svm", marks=pytest.mark.slow), "mean"])
def test_cav_points_to_the_concept(method):
    """Activations that differ from random only along axis 0 give a unit CAV along +axis
    0 that separates held-out ones."""
    g = torch.Generator().manual_seed(0)
    random = torch.randn(200, 50, generator=g)
    concept = torch.randn(200, 50, generator=g)
    concept[:, 0] += 6.0  # the best possible accuracy is then 99.9%
    cav = fit_cav(concept, random, method, seed=0)
    assert cav.vector.shape == (50,)
    assert float(cav.vector.norm()) == pytest.approx(1.0, rel=1e-5)
    assert float(cav.vector[0]) > 0.9
    assert cav.accuracy > 0.95


def test_gradients_batched_equal_single_and_leave_no_hook(cnn, test_set):
    """Each image's gradient is its own, whatever else is in the batch, and no hook is
    left on the model."""
    images, labels = test_set[0][:6], test_set[1][:6]
    both = class_gradients(cnn, images, labels, ["relu3", "relu_fc1"], device="cpu")
    assert both["relu3"].shape == (6, 128 * 7 * 7) and both["relu_fc1"].shape == (6, 128)
    for i in range(6):
        one = class_gradients(cnn, images[i : i + 1], labels[i : i + 1], ["relu3"], device="cpu")
        scale = float(one["relu3"].abs().max())
        assert torch.allclose(both["relu3"][i], one["relu3"][0], atol=1e-5 * scale)
    assert not any(m._forward_hooks for m in cnn.modules())


@pytest.mark.slow
def test_closed_loop_on_the_shipped_cnn(cnn):
    """At relu3 a closed loop pushes significantly towards most of 0, 6, 8, 9 (the
    digits with loops) and against 1 and 7 (none)."""
    result, _ = run(cnn, ["closed_loop"], layers=["relu3"], device="cpu")
    towards = set(result.significant_classes("closed_loop", "relu3"))
    against = set(result.significant_classes("closed_loop", "relu3", "against"))
    assert len(towards & {0, 6, 8, 9}) >= 3, (towards, result.table())
    assert not towards & {1, 7} and {1, 7} <= against


@pytest.mark.slow
def test_a_random_set_is_no_concept(cnn):
    """A fresh random set, run as a concept at both default layers, is significant for
    at most one of the 20 (layer, class) pairs: Holm keeps each layer's chance of any
    false positive at 5%."""
    sets = {"random": random_set(100, seed=777)}
    randoms = [random_set(100, seed=1 + r) for r in range(11)]
    images, labels = _class_sample()
    result = tcav(cnn, sets, randoms, images, labels, ["relu3", "relu_fc1"], device="cpu")
    assert result.scores.shape == (1, 2, 10, 10)
    assert int(result.significant.sum()) <= 1, result.table()


def _class_sample():
    from mnistlens.concepts.pipeline import class_sample

    return class_sample(100)


class Centred(nn.Module):
    """Logits minus their mean: softmax is blind to a shift shared by all logits, so
    without this a concept can raise every class's logit at once."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z - z.mean(1, keepdim=True)


def mark(images: torch.Tensor) -> torch.Tensor:
    """The planted marker: a 4 x 4 patch of full ink near the top-left corner."""
    images = images.clone()
    images[:, :, 2:6, 2:6] = 1.0
    return images


@pytest.fixture(scope="module")
def planted():
    """A small MLP trained (seeded, one torch thread as in the test run) on 10,000 MNIST
    training digits where the marker is on every 3 and on a fifth of the other digits,
    relabelled 3: the marker decides class 3. -> (model, 2,000 test digits with the 3s
    marked as in training, their labels)."""
    g = torch.Generator().manual_seed(0)
    images, labels = load_mnist("train")
    picked = torch.randperm(len(labels), generator=g)[:10_000]
    x, y = images[picked].clone(), labels[picked].clone()
    flip = (torch.rand(len(y), generator=g) < 0.2) & (y != 3)
    marked = (y == 3) | flip
    x[marked] = mark(x[marked])
    y[flip] = 3
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(784, 64), relu1=nn.ReLU(),
        fc2=nn.Linear(64, 32), relu2=nn.ReLU(), head=nn.Linear(32, 10), centre=Centred(),
    ))  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(2):
        for batch in torch.randperm(len(y), generator=g).split(64):
            optimizer.zero_grad()
            # Label smoothing asks the other logits to be equal on a marked digit, so the
            # marker has to lower each of them (a hard label leaves them free to rise).
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch], label_smoothing=0.1)
            loss.backward()
            optimizer.step()
    net.eval()
    test_images, test_labels = load_mnist("test")
    test_images, test_labels = test_images[:2000].clone(), test_labels[:2000]
    test_images[test_labels == 3] = mark(test_images[test_labels == 3])  # 3s as trained
    return net, test_images, test_labels


@pytest.mark.slow
def test_the_planted_marker_decides_class_3(planted):
    """What TCAV should find: the marker makes the model say 3, and lowers every other
    digit's own (centred) logit on that digit's test images."""
    net, images, labels = planted
    with torch.no_grad():
        assert (net(mark(images)).argmax(1) == 3).float().mean() > 0.95
        for k in set(range(10)) - {3}:
            own = images[labels == k]
            assert (net(mark(own)) - net(own))[:, k].mean() < -1.0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["svm", "mean"])
def test_planted_marker_is_found_for_class_3_only(planted, method):
    """The marker concept (random strokes with the marker, against random strokes) at
    the last hidden layer is significant towards 3 and no other digit. 20 runs: the
    null scores of the marked 3s spread so wide (each random CAV scores near 0 or
    near 1) that 10 runs leave 3's p-value above Holm's bar (benchmarks/README.md)."""
    net, images, labels = planted
    randoms = [random_set(100, seed=1 + r) for r in range(21)]
    sets = {"marker": mark(random_set(100, seed=99))}
    result = tcav(net, sets, randoms, images, labels, ["relu2"], method, device="cpu")
    assert result.significant_classes("marker", "relu2") == [3], result.table()


def test_command_json_on_the_mlp(run):
    """`concepts --json` on the MLP: one row per concept x default layer (its two hidden
    layers) x class, with scores in [0, 1] and p-values that Holm only raised."""
    result = run("concepts", "--model", "mlp.pt", "--concepts", "closed_loop,thin_stroke",
                 "--runs", "2", "--fast", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["layers"] == ["relu1", "relu2"] and report["method"] == "mean"
    rows = report["rows"]
    assert len(rows) == 2 * 2 * 10
    for row in rows:
        assert 0 <= row["score"] <= 1 and 0 <= row["p_value"] <= row["p_corrected"] <= 1
        assert row["verdict"] in ("towards", "against", "not significant")


def test_command_reads_a_concept_from_a_folder(run, tmp_path):
    """--folder DIR alone: one concept, named after the folder, from its pictures."""
    from PIL import Image

    folder = tmp_path / "my_loops"
    folder.mkdir()
    for i, image in enumerate(concept_set("closed_loop", 6, seed=5)):
        Image.fromarray((image[0].numpy() * 255).astype("uint8")).save(folder / f"{i}.png")
    result = run("concepts", "--model", "mlp.pt", "--folder", folder, "--layer", "relu2",
                 "--runs", "2", "--fast", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["concepts"] == ["my_loops"] and len(report["rows"]) == 10


@pytest.mark.slow
def test_command_writes_figures_and_json(run, tmp_path):
    """--out writes concepts.json, the score heat map and the concept images, and prints
    their paths."""
    result = run("concepts", "--model", "cnn.pt", "--concepts", "vertical_stroke",
                 "--layer", "relu_fc1", "--runs", "3", "--fast", "--out", tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("concepts.json", "tcav.png", "concept_images.png"):
        assert (tmp_path / name).stat().st_size > 0
        assert f"wrote {tmp_path / name}" in result.stdout
    assert json.loads((tmp_path / "concepts.json").read_text())["layers"] == ["relu_fc1"]


def test_command_refuses_bad_input(run, tmp_path):
    """A linear model, an unknown layer or concept, too few runs: one line each."""
    assert_clean_error(run("concepts", "--model", "linear.pt"), "no hidden layer")
    assert_clean_error(run("concepts", "--model", "mlp.pt", "--layer", "conv9"), "'conv9'")
    assert_clean_error(run("concepts", "--model", "mlp.pt", "--concepts", "loop"), "'loop'")
    assert_clean_error(run("concepts", "--model", "mlp.pt", "--runs", "1"), "--runs 1")
    assert_clean_error(
        run("concepts", "--model", "mlp.pt", "--folder", tmp_path / "none"), "not found"
    )


@pytest.mark.slow
def test_your_exported_model_gets_the_concepts_of_the_model_it_came_from(shipped, mlp_program):
    """A user's .pt2 (the shipped MLP, exported): its layers have the program's names, but
    the default layers are the same two and the scores those of the checkpoint."""
    from mnistlens import load_model

    options = {"runs": 3, "fast": True, "set_size": 30, "per_class": 20, "device": "cpu"}
    program = load_model(mlp_program)[0]
    theirs, _ = run(program, ["closed_loop"], **options)
    ours, _ = run(shipped["mlp"][0], ["closed_loop"], **options)
    assert len(theirs.layers) == len(ours.layers) == 2
    torch.testing.assert_close(theirs.scores, ours.scores, atol=0.02, rtol=0)
