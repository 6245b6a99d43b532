"""Controlled changes of a digit: each does what its name says, keeps the input
convention, and changes nothing at severity 0."""

import pytest
import torch
import torch.nn.functional as F

from mnistlens import MnistlensError
from mnistlens.data import gaussian_blur
from mnistlens.metrics import predict_logits
from mnistlens.perturb import normalize as Nz
from mnistlens.perturb import transforms as T

CHANGES = [
    (T.translate, 3),
    (T.rotate, 30.0),
    (T.scale, 0.7),
    (T.shear, 0.3),
    (T.thickness, 1),
    (T.thickness, -1),
    (T.elastic, 2.0),
    (T.occlude_band, 6),
]


@pytest.fixture(scope="module")
def digits(test_set):
    return test_set[0][:200], test_set[1][:200]


@pytest.mark.parametrize("change, severity", CHANGES)
def test_every_change_keeps_the_shape_and_the_range_and_changes_the_digits(
    digits, change, severity
):
    images = digits[0]
    out = change(images, severity)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, images)
    torch.testing.assert_close(change(images[:1], severity), out[:1])  # batch-independent


@pytest.mark.parametrize("change, none", [(T.translate, 0), (T.rotate, 0), (T.scale, 1)])
def test_no_change_at_severity_zero(digits, change, none):
    assert torch.equal(change(digits[0], none), digits[0])
    for small in (T.shear, T.thickness, T.elastic, T.occlude_band):
        assert torch.equal(small(digits[0], 0), digits[0])


def test_translation_moves_the_ink_by_whole_pixels(digits):
    """The ink's centre of mass moves by the pixels asked, in the direction named."""
    images = digits[0]
    # digits with no ink in the last 2 rows or columns: shifted by 2, none of it is lost
    edge = images[..., 26:, :].sum(dim=(1, 2, 3)) + images[..., 26:].sum(dim=(1, 2, 3))
    images = images[edge == 0]
    assert len(images) > 100

    def centre(x):
        ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        mass = x.sum(dim=(1, 2, 3))
        return (x[:, 0] * xs).sum(dim=(1, 2)) / mass, (x[:, 0] * ys).sum(dim=(1, 2)) / mass

    x0, y0 = centre(images)
    x1, y1 = centre(T.translate(images, 2, "down-right"))
    torch.testing.assert_close(x1 - x0, torch.full_like(x0, 2.0), rtol=0, atol=0.3)
    torch.testing.assert_close(y1 - y0, torch.full_like(y0, 2.0), rtol=0, atol=0.3)
    back = T.translate(T.translate(images, 2, "down-right"), 2, "up-left")
    inner = (slice(None), slice(None), slice(2, 26), slice(2, 26))  # lost at the border
    assert torch.equal(back[inner], images[inner])


def test_rotating_four_quarter_turns_is_the_identity_up_to_resampling(digits):
    images = digits[0][:20]
    quarter = T.rotate(images, 90)
    torch.testing.assert_close(quarter, torch.rot90(images, -1, dims=(2, 3)), rtol=0, atol=1e-4)


def test_thickness_adds_or_removes_ink(digits):
    images = digits[0]
    ink = images.sum(dim=(1, 2, 3))
    assert bool((T.thickness(images, 1).sum(dim=(1, 2, 3)) > ink).all())
    assert bool((T.thickness(images, -1).sum(dim=(1, 2, 3)) < ink).all())
    # two steps are one 3x3 max (min) filter: the digit grows (shrinks) evenly, no drift
    assert torch.equal(T.thickness(images, 2), F.max_pool2d(images, 3, stride=1, padding=1))
    eroded = -F.max_pool2d(F.pad(-images, (1, 1, 1, 1), value=0.0), 3, stride=1)
    assert torch.equal(T.thickness(images, -2), eroded)
    # one thinning step keeps the digit: most of its ink is still there for most digits
    kept = T.thickness(images, -1).sum(dim=(1, 2, 3)) / ink
    assert float(kept.median()) > 0.4


def test_elastic_is_reproducible_per_seed_and_position(digits):
    """The same seed gives the same distortion, another seed another; image i's field
    depends on (seed, i) only, not on the rest of the batch or the global RNG."""
    images = digits[0][:50]
    state = torch.get_rng_state()
    out = T.elastic(images, 2.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not drawn from
    torch.manual_seed(123)  # nor read
    assert torch.equal(T.elastic(images, 2.0, seed=7), out)
    torch.set_rng_state(state)
    assert torch.equal(T.elastic(images[:13], 2.0, seed=7), out[:13])
    other = T.elastic(images, 2.0, seed=8)
    assert bool(((other - out).abs().flatten(1).amax(dim=1) > 0.1).all())
    # the same digit at two positions of a batch is distorted two ways
    twice = T.elastic(images[:1].expand(2, 1, 28, 28), 2.0, seed=7)
    assert float((twice[0] - twice[1]).abs().max()) > 0.1


def test_elastic_smooths_with_the_gaussian_blur_of_data():
    """The field is smoothed exactly as `data.gaussian_blur` would (two matrix products)."""
    noise = torch.rand(4, 2, 28, 28)
    for sigma, size in ((1.0, 7), (4.0, 25), (12.0, 55)):
        blur = T._blur_matrix(sigma)
        expected = gaussian_blur(noise, size, sigma)
        assert float((blur @ noise @ blur.T - expected).abs().max()) < 1e-5


def test_elastic_alpha_is_the_displacement_in_pixels(digits):
    """alpha is the root mean square displacement over the middle 20 x 20: distorting
    ramps in x and in y reads the displacement off (bilinear sampling of a ramp is
    exact); the digits change more as alpha grows, and keep their ink."""
    axis = torch.arange(28.0)
    ramp_x = (axis.expand(28, 28) / 27).expand(32, 1, 28, 28)
    ramp_y = (axis[:, None].expand(28, 28) / 27).expand(32, 1, 28, 28)
    for alpha in (1.0, 2.0):
        # the same seed and positions: the same 32 fields move both ramps
        dx = T.elastic(ramp_x, alpha, seed=3)[:, 0, 4:24, 4:24] * 27 - axis[4:24]
        dy = T.elastic(ramp_y, alpha, seed=3)[:, 0, 4:24, 4:24] * 27 - axis[4:24, None]
        rms = float((dx**2 + dy**2).mean().sqrt())
        assert abs(rms - alpha) < 0.1 * alpha
    images = digits[0]
    change = [float((T.elastic(images, a) - images).abs().mean()) for a in (0.5, 1, 2, 3, 4)]
    assert change == sorted(change) and change[0] > 0.01
    ink = T.elastic(images, 2.0).sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert abs(float(ink.median()) - 1) < 0.03


def test_bad_severities_are_named():
    images = torch.zeros(1, 1, 28, 28)
    with pytest.raises(MnistlensError, match="unknown direction 'north'"):
        T.translate(images, 1, "north")
    with pytest.raises(MnistlensError, match="whole pixels from 0 to 27"):
        T.translate(images, 1.5)
    with pytest.raises(MnistlensError, match="factor above 0"):
        T.scale(images, 0)
    with pytest.raises(MnistlensError, match="unknown band 'diagonal'"):
        T.occlude_band(images, 4, "diagonal")
    with pytest.raises(MnistlensError, match="finite alpha >= 0 and sigma > 0, got -1, 4.0"):
        T.elastic(images, -1)
    with pytest.raises(MnistlensError, match="got 2.0, 0"):
        T.elastic(images, 2.0, sigma=0)
    with pytest.raises(MnistlensError, match="whole-number seed, got 1.5"):
        T.elastic(images, 2.0, seed=1.5)


def test_convolution_tolerates_a_shift_the_mlp_does_not(shipped, digits):
    """The fact the comparison should find: shifted 3 px, the CNN keeps most of its
    accuracy and the MLP loses far more (on 200 test digits)."""
    images, labels = digits
    shifted = T.translate(images, 3, "down-right")
    accuracy = {
        name: float((predict_logits(shipped[name][0], shifted).argmax(1) == labels).float().mean())
        for name in ("mlp", "cnn")
    }
    assert accuracy["cnn"] > 0.9 and accuracy["cnn"] - accuracy["mlp"] > 0.05


def test_rotation_and_shear_keep_the_ink_and_shear_adds_its_slant(digits):
    images = digits[0]
    mass = images.sum(dim=(1, 2, 3))
    for changed in (T.rotate(images, 30), T.shear(images, 0.3)):
        kept = changed.sum(dim=(1, 2, 3)) / mass
        assert float(kept.median()) == pytest.approx(1.0, abs=0.03)
    added = Nz.slant(T.shear(images, 0.3)) - Nz.slant(images)
    assert float(added.median()) == pytest.approx(0.3, abs=0.03)


def test_scale_resizes_the_ink_box_and_the_band_blacks_out_only_its_rows(digits):
    images = digits[0]
    size = torch.maximum(Nz.ink_height(images), Nz.ink_width(images))
    shrunk = T.scale(images, 0.7)
    ratio = torch.maximum(Nz.ink_height(shrunk), Nz.ink_width(shrunk)) / size
    assert float(ratio.median()) == pytest.approx(0.7, abs=0.06)
    banded = T.occlude_band(images, 6)
    assert float(banded[..., 11:17, :].abs().max()) == 0.0
    torch.testing.assert_close(banded[..., :11, :], images[..., :11, :])
    torch.testing.assert_close(banded[..., 17:, :], images[..., 17:, :])
