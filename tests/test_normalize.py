"""Normalizing a digit for one factor: each normalization keeps the input convention,
leaves MNIST's own digits (nearly) as they are, takes its factor away, undoes the
matching change of `transforms`, and leaves the digit readable."""

import math

import pytest
import torch
import torch.nn.functional as F

from mnistlens import MnistlensError
from mnistlens.metrics import predict_logits
from mnistlens.perturb import normalize as Nz
from mnistlens.perturb import transforms as T

# the change each normalization should undo, with a severity that needs undoing
DAMAGE = {
    "position": lambda x: T.translate(x, 3, "down-right"),
    "slant": lambda x: T.shear(x, 0.4),
    "size": lambda x: T.scale(x, 0.7),
    "stroke width": lambda x: T.thickness(x, 1),
}


@pytest.fixture(scope="module")
def digits(test_set):
    return test_set[0][:500], test_set[1][:500]


def _size(images):
    return torch.maximum(Nz.ink_height(images), Nz.ink_width(images))


def _ring(width: float, radius: float = 8.0, supersample: int = 8) -> torch.Tensor:
    """A ring `width` pixels wide about (14, 14), antialiased: (1, 1, 28, 28)."""
    axis = (torch.arange(28 * supersample) + 0.5) / supersample - 0.5  # pixel centres at j
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    distance = ((x - 14) ** 2 + (y - 14) ** 2).sqrt()
    ink = ((distance - radius).abs() < width / 2).float()
    return F.avg_pool2d(ink[None, None], supersample)


def test_the_factors_in_order():
    assert list(Nz.FACTORS) == ["position", "slant", "size", "stroke width"]
    assert list(Nz.FACTORS.values()) == [Nz.recentre, Nz.deslant, Nz.rescale, Nz.stroke_width]


@pytest.mark.parametrize("factor", list(Nz.FACTORS))
def test_every_normalization_keeps_the_convention(digits, factor):
    """Shape, dtype, range; deterministic; each image on its own; a blank one kept."""
    normalize = Nz.FACTORS[factor]
    images = DAMAGE[factor](digits[0][:100])
    out = normalize(images)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.device == images.device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, images)
    assert torch.equal(normalize(images), out)
    assert float((normalize(images[:7]) - out[:7]).abs().max()) <= 1e-6  # batch-independent
    blank = torch.zeros(2, 1, 28, 28)
    assert torch.equal(normalize(blank), blank)
    assert torch.equal(normalize(images.double()), out)  # float64 in, float32 out


@pytest.mark.parametrize("factor", list(Nz.FACTORS))
def test_normalizing_twice_is_about_normalizing_once(digits, factor):
    """The second pass changes little next to the first (rescale the most: its ink box
    is counted in whole rows, so a digit brought to 20 may measure 19 or 21 again)."""
    normalize = Nz.FACTORS[factor]
    damaged = DAMAGE[factor](digits[0])
    once = normalize(damaged)
    twice = normalize(once)
    first = float((once - damaged).abs().mean())
    assert first > 0.03
    assert float((twice - once).abs().mean()) <= 0.2 * first


def test_mnist_digits_stay_as_they_are(digits):
    """MNIST's own convention: re-centring and rescaling leave its digits exactly."""
    images = digits[0]
    assert torch.equal(Nz.recentre(images), images)
    kept = (Nz.rescale(images) == images).flatten(1).all(dim=1)
    assert float(kept.float().mean()) > 0.99


def test_recentre_undoes_a_shift(digits):
    images = digits[0]
    # digits with no ink in the last 3 rows or columns: shifted by 3, none of it is lost
    edge = images[..., 25:, :].sum(dim=(1, 2, 3)) + images[..., 25:].sum(dim=(1, 2, 3))
    images = images[edge == 0]
    assert len(images) > 200
    shifted = T.translate(images, 3, "down-right")
    back = Nz.recentre(shifted)
    assert float((Nz.centre_of_mass(back) - Nz.CENTRE).abs().max()) <= 0.5 + 1e-4
    assert torch.equal(back, images)  # whole pixels: exactly where MNIST had them


def test_deslant_removes_the_slant_and_undoes_a_shear(digits):
    images = digits[0]
    straight = Nz.deslant(images)
    assert float(Nz.slant(straight).abs().max()) < 0.03
    assert float(Nz.slant(images).abs().median()) > 0.1  # there was a slant to remove
    # the sign convention is transforms.shear's: shearing by 0.3 adds 0.3 to the slant
    sheared = T.shear(images, 0.3)
    added = Nz.slant(sheared) - Nz.slant(images)
    assert float((added - 0.3).abs().median()) < 0.01
    # deslanted, a sheared digit is (up to resampling) the deslanted original
    again = Nz.deslant(sheared)
    assert float(Nz.slant(again).abs().max()) < 0.03
    assert float((again - straight).abs().mean()) < 0.3 * float((sheared - images).abs().mean())
    ratio = straight.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert float((ratio - 1).abs().max()) < 0.02  # the ink is kept


def test_rescale_gives_a_shrunk_digit_its_size_back(digits):
    images = digits[0]
    small = T.scale(images, 0.7)
    assert float(_size(small).max()) <= 15
    back = Nz.rescale(small)
    assert float((_size(back) - Nz.MNIST_SIZE).abs().max()) <= 2
    assert float((_size(back) - Nz.MNIST_SIZE).abs().float().mean()) < 0.7
    assert float((back - images).abs().mean()) < 0.5 * float((small - images).abs().mean())
    centres = Nz.centre_of_mass(back) - Nz.centre_of_mass(small)  # scaled about it
    assert float(centres.abs().max()) < 0.3
    big = Nz.rescale(T.scale(images, 1.3))
    assert float((_size(big) - Nz.MNIST_SIZE).abs().max()) <= 2


def test_stroke_width_moves_widths_to_the_target(digits):
    images = digits[0]
    target = Nz.MNIST_STROKE_WIDTH
    done = Nz.stroke_width_of(Nz.stroke_width(images))
    assert float(((done - target).abs() < 0.02).float().mean()) > 0.98
    for steps in (2, -1):  # made thicker (thinner), the digits get thinner (thicker)
        changed = T.thickness(images, steps)
        before = Nz.stroke_width_of(changed)
        after = Nz.stroke_width_of(Nz.stroke_width(changed))
        assert float((steps * (before - target) > 0).float().mean()) > 0.9
        far = (before - target).abs() > 0.01
        assert bool(((after - before)[far].sign() == (target - before)[far].sign()).all())
        assert bool(((after - target).abs() <= (before - target).abs()).all())
        assert float((after - target).abs().median()) < 0.02
    thin = Nz.stroke_width(images, target=1.8)
    assert float(Nz.stroke_width_of(thin).median()) < 1.85


def test_thinning_spares_strokes_thinner_than_the_filter():
    """A 3x3 erosion wipes a 1-2 px stroke out; stroke_width's thinning keeps it whole
    and thins the thick strokes only."""
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 6:22, 8:14] = 1.0  # a bar 6 px wide
    image[0, 0, 6:22, 18] = 1.0  # and a line 1 px wide
    thin = Nz.stroke_width(image, target=2.0)
    assert abs(float(Nz.stroke_width_of(thin)) - 2.0) < 0.02
    assert float(thin[0, 0, 6:22, 18].min()) == 1.0  # the line is all there
    assert float(thin[0, 0, 6:22, 8:14].mean()) < 0.8  # the bar lost its edges


def test_measures_agree_with_shapes_drawn_by_hand():
    for width in (2.0, 3.0):  # antialiased rings: the measure is within 10%
        measured = float(Nz.stroke_width_of(_ring(width)))
        assert abs(measured - width) < 0.1 * width
    bar = torch.zeros(1, 1, 28, 28)
    for row in range(6, 22):  # a bar 2 px wide leaning right: 1 px per 4 rows up
        left = 13 + (21 - row) // 4
        bar[0, 0, row, left : left + 2] = 1.0
    assert float(Nz.ink_height(bar)) == 16 and float(Nz.ink_width(bar)) == 5
    assert abs(float(Nz.slant(bar)) - 0.25) < 0.03
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 5, 9] = 1.0
    assert Nz.centre_of_mass(dot).tolist() == [[9.0, 5.0]]  # (x, y) = (column, row)
    assert math.isnan(float(Nz.centre_of_mass(torch.zeros(1, 1, 28, 28))[0, 0]))


def test_the_constants_are_mnists_own(test_set):
    """MNIST_SIZE, MNIST_STROKE_WIDTH and CENTRE were measured on the training digits;
    the test digits agree."""
    images = test_set[0]
    centre = Nz.centre_of_mass(images).mean(dim=0)
    assert float((centre - Nz.CENTRE).abs().max()) < 0.02
    assert abs(float(_size(images).mean()) - Nz.MNIST_SIZE) < 0.01
    assert abs(float(Nz.stroke_width_of(images).median()) - Nz.MNIST_STROKE_WIDTH) < 0.1


def test_bad_targets_are_named():
    images = torch.zeros(1, 1, 28, 28)
    with pytest.raises(MnistlensError, match="size above 0 and at most 28 pixels, got 0"):
        Nz.rescale(images, size=0)
    with pytest.raises(MnistlensError, match="target above 0 and at most 10, got -1"):
        Nz.stroke_width(images, target=-1)
    with pytest.raises(MnistlensError, match=r"shape \(N, 1, 28, 28\)"):
        Nz.recentre(torch.zeros(28, 28))


@pytest.mark.slow
def test_normalized_digits_stay_readable_and_recentring_helps_the_mlp(shipped, digits):
    """Normalizing does not destroy digits: the shipped CNN and MLP still read >= 95% of
    500 test digits after each normalization, and thick digits thinned at least as well
    as thick. And it removes its factor: shifted 3 px, the MLP loses many digits, and
    re-centred it reads them again."""
    images, labels = digits

    def accuracy(name, x):
        return float((predict_logits(shipped[name][0], x).argmax(1) == labels).float().mean())

    for name in ("cnn", "mlp"):
        for normalize in Nz.FACTORS.values():
            assert accuracy(name, normalize(images)) >= 0.95, (name, normalize.__name__)
        thick = T.thickness(images, 2)
        assert accuracy(name, Nz.stroke_width(thick)) >= accuracy(name, thick) - 0.004
    shifted = T.translate(images, 3, "down-right")
    before, after = accuracy("mlp", shifted), accuracy("mlp", Nz.recentre(shifted))
    assert after > before + 0.08 and after > 0.95


def test_strength_minus_one_makes_the_opposite_change_of_the_same_size(digits):
    # The control the gap's causes are counted against: as far off, the other way.
    images = digits[0][:100]
    shifted = T.translate(images, 2, "right")
    away = Nz.recentre(shifted, strength=-1.0)
    offset = Nz.centre_of_mass(shifted) - Nz.CENTRE
    near = ((Nz.centre_of_mass(away) - Nz.CENTRE) - 2 * offset).abs() <= 1.0  # whole pixels
    assert near.all(dim=1).float().mean() > 0.9  # the rest lost ink past the border
    before, after = Nz.slant(images), Nz.slant(Nz.deslant(images, strength=-1.0))
    leaning = before.abs() > 0.1
    assert torch.allclose(after[leaning], 2 * before[leaning], rtol=0.25, atol=0.05)
    widths = Nz.stroke_width_of(images)
    opposite = Nz.stroke_width_of(Nz.stroke_width(images, strength=-1.0))
    far = (widths - Nz.MNIST_STROKE_WIDTH).abs() > 0.3
    assert (
        (opposite - Nz.MNIST_STROKE_WIDTH).abs()[far] > (widths - Nz.MNIST_STROKE_WIDTH).abs()[far]
    ).float().mean() > 0.8
    torch.testing.assert_close(Nz.deslant(images, strength=0.0), images, atol=1e-5, rtol=0)
