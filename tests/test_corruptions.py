"""MNIST-C's corruptions: each keeps the input convention, is reproducible from its seed
alone, grows with its severity and does what its name says; the shipped CNN still reads
the digits under the mild ones."""

import math

import pytest
import torch
import torch.nn.functional as F

from mnistlens import MnistlensError
from mnistlens.metrics import predict_logits
from mnistlens.perturb import corruptions as C
from mnistlens.perturb import imageops, seeded
from mnistlens.perturb import transforms as T

NAMES = list(C.CORRUPTIONS)
FIXED = {"scale", "brightness", "stripe", "canny_edges"}  # no randomness: seed unused
RANDOM = [name for name in NAMES if name not in FIXED]


@pytest.fixture(scope="module")
def digits(test_set):
    """The first 200 test images: (200, 1, 28, 28)."""
    return test_set[0][:200]


@pytest.fixture(scope="module")
def corrupted(digits):
    """name -> the 200 digits corrupted at MNIST-C's setting, seed 0."""
    return {name: fn(digits) for name, fn in C.CORRUPTIONS.items()}


def moments(images):
    """Ink mass, centre (x, y) and second moments (xx, yy, xy) per image: each (N,)."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ink = images[:, 0].double()
    mass = ink.sum(dim=(1, 2))

    def mean(f):
        return (ink * f).sum(dim=(1, 2)) / mass

    cx, cy = mean(xs), mean(ys)
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    return mass, cx, cy, mean(dx * dx), mean(dy * dy), mean(dx * dy)


def gap(a, b) -> float:
    """The largest difference between two batches."""
    return float((a - b).abs().max())


def total_variation(images):
    return (images.diff(dim=-1).abs().sum(dim=(1, 2, 3))) + images.diff(dim=-2).abs().sum(
        dim=(1, 2, 3)
    )


# ---------------------------------------------------------------- every corruption


def test_the_fifteen_come_in_mnist_c_order():
    assert NAMES == [
        "shot_noise",
        "impulse_noise",
        "glass_blur",
        "motion_blur",
        "shear",
        "scale",
        "rotate",
        "brightness",
        "translate",
        "stripe",
        "fog",
        "spatter",
        "dotted_line",
        "zigzag",
        "canny_edges",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_keeps_the_input_convention(digits, corrupted, name):
    out = corrupted[name]
    assert out.shape == digits.shape and out.dtype == torch.float32
    assert out.device == digits.device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, digits)
    # float64 input is accepted as everywhere in mnistlens, and gives float32 back
    assert torch.equal(C.CORRUPTIONS[name](digits[:5].double()), out[:5])


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_gives_the_images_back(digits, name):
    out = C.CORRUPTIONS[name](digits, 0)
    assert torch.equal(out, digits) and out is not digits


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bits_whatever_the_batch(digits, corrupted, name, monkeypatch):
    fn, out = C.CORRUPTIONS[name], corrupted[name]
    rng = torch.get_rng_state()
    assert torch.equal(fn(digits), out)
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is untouched
    assert torch.equal(fn(digits[:37]), out[:37])  # a prefix of the batch
    monkeypatch.setattr(seeded, "CHUNK", 16)  # and chunks that cut the batch elsewhere
    assert torch.equal(fn(digits), out)
    assert torch.equal(fn(digits, seed=1), out) == (name in FIXED)


@pytest.mark.parametrize("name", NAMES)
def test_severity_scales_the_strength(digits, corrupted, name):
    """Half the severity changes the digits less than MNIST-C's setting."""
    half = (C.CORRUPTIONS[name](digits, 0.5) - digits).abs().mean()
    full = (corrupted[name] - digits).abs().mean()
    assert 0 < half < full


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [-0.5, math.nan, "high"])
def test_a_severity_below_zero_or_not_a_number_is_refused(digits, name, bad):
    with pytest.raises(MnistlensError, match=rf"{name}: severity must be .*>= 0.*got {bad!r}"):
        C.CORRUPTIONS[name](digits[:2], bad)


def test_a_seed_that_is_not_a_whole_number_is_refused(digits):
    with pytest.raises(MnistlensError, match="seed must be an int, got 1.5"):
        C.fog(digits[:2], seed=1.5)


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_on_a_gpu_the_result_stays_there_and_matches_the_cpu(digits, corrupted, name):
    out = C.CORRUPTIONS[name](digits.cuda())
    assert out.device.type == "cuda"
    # float rounding differs on a GPU: a rare pixel may cross a threshold (spatter, canny)
    same = (out.cpu() - corrupted[name]).abs() < 1e-4
    assert float(same.double().mean()) > 0.999


# ---------------------------------------------------------------- each does what it says


def test_shot_noise_leaves_black_black_and_speckles_the_ink(digits, corrupted):
    out = corrupted["shot_noise"]
    assert torch.equal(out[digits == 0], digits[digits == 0])  # Poisson(0) = 0
    assert gap(out * 3, (out * 3).round()) < 1e-5  # counts of 3 photons per unit
    full = digits == 1
    # a full-ink pixel keeps its value when Poisson(3) >= 3
    kept = 1 - math.exp(-3) * (1 + 3 + 4.5)
    changed = float((out[full] != 1).float().mean())
    assert abs(changed - (1 - kept)) < 0.06, changed


def test_impulse_noise_salts_and_peppers_the_expected_share(digits, corrupted):
    black = digits == 0
    for severity, out in [(1.0, corrupted["impulse_noise"]), (0.5, None)]:
        out = out if out is not None else C.impulse_noise(digits, severity)
        changed = out != digits
        assert bool(((out[changed] == 0) | (out[changed] == 1)).all())
        salted = float((out[black] == 1).float().mean())  # half of 17% of the pixels
        assert abs(salted - 0.085 * severity) < 0.01, (severity, salted)


def test_glass_blur_shuffles_the_ink_locally_and_keeps_it(digits, corrupted):
    out = corrupted["glass_blur"]
    mass, mass0 = moments(out)[0], moments(digits)[0]
    assert bool(((mass / mass0 - 1).abs() < 0.03).all())
    pixels = (out - digits).abs().mean()
    coarse = (F.avg_pool2d(out, 7, 1, 3) - F.avg_pool2d(digits, 7, 1, 3)).abs().mean()
    assert pixels > 0.04 and coarse < 0.3 * pixels  # changed pixel by pixel, not in the large


def test_glass_sweep_swaps_as_mnist_c_pixel_by_pixel_loop():
    """The vectorized sweep gives what MNIST-C's loop over pixels gives for the same draws."""
    g = torch.Generator().manual_seed(0)
    flat, u = torch.rand(3, 784, generator=g), torch.rand(3, 2, 28, 28, generator=g)
    for p in (0.5, 1.0):
        expected = flat.clone().view(3, 28, 28)
        for n in range(3):
            for k in range(2):
                for h in range(27, 1, -1):
                    for w in range(27, 1, -1):
                        v = float(u[n, k, h, w])
                        if v < p:
                            pick = min(int(v / p * 4), 3)
                            dy, dx = -(pick // 2), -(pick % 2)
                            a, b = expected[n, h, w].clone(), expected[n, h + dy, w + dx].clone()
                            expected[n, h, w], expected[n, h + dy, w + dx] = b, a
        assert torch.equal(imageops.glass_sweep(flat, u, p), expected.view(3, 784))


def test_motion_blur_smears_each_digit_sideways(digits, corrupted):
    out = corrupted["motion_blur"]
    mass, cx, cy, vxx, vyy, _ = moments(out)
    mass0, cx0, cy0, vxx0, vyy0, _ = moments(digits)
    assert bool(((mass / mass0 - 1).abs() < 0.05).all())
    assert bool((total_variation(out) < total_variation(digits)).all())
    # a one-sided kernel pointing right (within 45 degrees): the ink moves ~2 px left
    shift = cx - cx0
    assert bool((shift < -1).all()) and -2.6 < float(shift.mean()) < -1.4
    assert abs(float((cy - cy0).mean())) < 0.5  # up as often as down
    assert float(((vxx - vxx0) > (vyy - vyy0)).double().mean()) > 0.9


def test_shear_slants_each_digit_one_way_or_the_other(digits, corrupted):
    _, cx, cy, _, vyy, vxy = moments(corrupted["shear"])
    _, cx0, cy0, _, vyy0, vxy0 = moments(digits)
    change = vxy / vyy - vxy0 / vyy0  # slant: x moves sin(0.4) = 0.39 px per px of height
    assert abs(float(change.abs().median()) - math.sin(0.4)) < 0.015
    assert float(((change.abs() - math.sin(0.4)).abs() < 0.06).double().mean()) > 0.9
    assert 0.25 < float((change > 0).double().mean()) < 0.75
    assert float((cx - cx0).abs().max()) < 1 and float((cy - cy0).abs().max()) < 1
    taller = (vyy / vyy0).median()  # skimage's shear angle also stretches by 1 / cos
    assert abs(float(taller) - 1 / math.cos(0.4) ** 2) < 0.05


def test_scale_shrinks_every_digit_to_seven_tenths(digits, corrupted):
    out = corrupted["scale"]
    _, _, _, vxx, vyy, _ = moments(out)
    _, _, _, vxx0, vyy0, _ = moments(digits)
    ratio = ((vxx + vyy) / (vxx0 + vyy0)).sqrt()
    assert bool(((ratio - 0.7).abs() < 0.04).all())
    assert gap(out, T.scale(digits, 0.7)) < 1e-4


def test_rotate_turns_each_digit_by_0_4_rad_one_way_or_the_other(digits, corrupted):
    out = corrupted["rotate"]
    degrees = math.degrees(0.4)
    gaps = torch.stack(
        [(out - T.rotate(digits, d)).abs().amax(dim=(1, 2, 3)) for d in (degrees, -degrees)]
    )  # (2, N)
    assert bool((gaps.amin(dim=0) < 1e-4).all())
    assert bool(((gaps < 1e-4).sum(dim=1) > 40).all())  # both ways, often


def test_translate_moves_each_digit_3_px_along_a_diagonal(digits, corrupted):
    out = corrupted["translate"]
    diagonals = ("down-right", "down-left", "up-left", "up-right")
    gaps = torch.stack(
        [(out - T.translate(digits, 3, d)).abs().amax(dim=(1, 2, 3)) for d in diagonals]
    )  # (4, N)
    assert bool((gaps.amin(dim=0) < 1e-4).all())
    assert bool(((gaps < 1e-4).sum(dim=1) > 20).all())  # all four diagonals


def test_brightness_lifts_everything_by_half(digits, corrupted):
    out = corrupted["brightness"]
    assert torch.equal(out, (digits + 0.5).clamp(0, 1))
    assert bool((out[digits == 0] == 0.5).all()) and out.mean() > digits.mean() + 0.4


def test_stripe_inverts_seven_columns_on_each_side(digits, corrupted):
    out = corrupted["stripe"]
    for side in (slice(0, 7), slice(21, 28)):
        assert gap(out[..., side], 1 - digits[..., side]) < 1e-6
    assert torch.equal(out[..., 7:21], digits[..., 7:21])
    assert gap(C.stripe(digits, 2), 1 - digits) < 1e-6


def test_fog_raises_the_background_and_dims_the_digit(digits, corrupted):
    out = corrupted["fog"]
    ink, black = digits > 0.5, digits == 0

    def mean(mask):
        return (out * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))

    haze = mean(black)
    assert bool((haze > 0.03).all()) and float(haze.median()) > 0.25
    # the digit keeps a quarter of its contrast: (x + 3 p) / 4
    assert bool((mean(ink) - haze < 0.3).all())


def test_spatter_lays_grey_mud_over_some_of_the_image(digits, corrupted):
    out = corrupted["spatter"]
    changed = out != digits
    mud = 63 / 255  # x (1 - m) + m mud, with m in [0.8, 1]
    assert bool(((out[changed & (digits == 0)] - 0.9 * mud).abs() <= 0.1 * mud + 1e-6).all())
    low, high = torch.minimum(digits, torch.tensor(mud)), torch.maximum(digits, torch.tensor(mud))
    assert bool(((out >= low - 1e-6) & (out <= high + 1e-6)).all())  # between x and mud
    assert 0.02 < float(changed.double().mean()) < 0.4
    assert float(changed.flatten(1).any(dim=1).double().mean()) > 0.9


def test_dotted_line_adds_thin_dashes_only(digits, corrupted):
    added = corrupted["dotted_line"] - digits
    assert float(added.min()) >= 0
    dashes = [c for c in range(28) if c % 4 in (2, 3) and c < 27]  # 2-3, 6-7, ..., 26
    gaps = [c for c in range(28) if c not in dashes]
    assert torch.equal(added[..., gaps], torch.zeros_like(added[..., gaps]))
    assert bool((added.flatten(1) > 0).any(dim=1).all())
    rows = (added[:, 0] > 0).nonzero()  # (k, 3): image, row, column
    for n, c in {(int(n), int(c)) for n, _, c in rows}:
        inked = (added[n, 0, :, c] > 0).nonzero()
        assert int(inked.max() - inked.min()) < 3  # at most 3 rows thick


def test_zigzag_adds_a_thin_line_that_turns_back_and_forth(digits, corrupted):
    added = corrupted["zigzag"] - digits
    assert float(added.min()) >= 0
    outside = [0, 1, 26, 27]  # MNIST-C draws it from column 2 to 25
    assert torch.equal(added[..., outside], torch.zeros_like(added[..., outside]))
    ink = C.zigzag(torch.zeros(200, 1, 28, 28))[:, 0]  # the same zigzags on black
    spans = [(col > 0).nonzero() for col in ink.permute(0, 2, 1).reshape(-1, 28)]
    assert max(int(s.max() - s.min()) + 1 for s in spans if len(s)) <= 6
    columns = ink.sum(dim=1)  # (N, 28)
    inside = (ink[:, 0].sum(dim=1) == 0) & (ink[:, 27].sum(dim=1) == 0)  # none cut off
    assert bool((columns[inside, 2:25] > 0).all())  # a line across, unbroken
    centre = (ink * torch.arange(28.0).view(1, 28, 1)).sum(dim=1) / columns.clamp_min(1e-9)
    step = centre[inside, 3:25].diff(dim=1)
    turns = ((step[:, 1:] * step[:, :-1]) < 0).sum(dim=1)
    assert inside.sum() > 50 and bool((turns >= 4).all())


def test_canny_edges_outline_the_strokes_and_empty_them(digits, corrupted):
    edges = corrupted["canny_edges"]
    assert bool(((edges == 0) | (edges == 1)).all())
    on = edges == 1
    ink = (digits > 0.5).float()
    boundary = (F.max_pool2d(ink, 3, 1, 1) > 0) & (F.max_pool2d(-ink, 3, 1, 1) > -1)
    assert float((on & boundary).sum() / on.sum()) > 0.97
    interior = F.max_pool2d(-digits, 3, 1, 1) < -0.5  # ink all around
    assert float((on & interior).sum() / interior.sum()) < 0.01


def test_canny_edges_of_a_square_are_its_outline():
    """skimage.feature.canny gives the square's own border pixels: so do we."""
    square = torch.zeros(1, 1, 28, 28)
    square[..., 9:19, 9:19] = 1
    outline = square.clone()
    outline[..., 10:18, 10:18] = 0
    assert torch.equal(C.canny_edges(square), outline)


# ---------------------------------------------------------------- meaning


# The shipped CNN's accuracy on the first 500 test digits under MNIST-C's setting, as
# measured when these were written: shear 99.2%, scale 98.4, rotate 97.6, translate
# 98.4, dotted_line 92.0, spatter 90.8, motion_blur 89.4 (clean: 99.6). The thresholds
# leave room for a retrained checkpoint, not for a corruption that stops meaning its name.
MILD = {
    "shear": 0.95,
    "scale": 0.95,
    "rotate": 0.93,
    "translate": 0.95,
    "dotted_line": 0.85,
    "spatter": 0.85,
    "motion_blur": 0.80,
}


@pytest.mark.slow
def test_the_shipped_cnn_still_reads_the_mild_ones(test_set, cnn):
    images, labels = test_set[0][:500], test_set[1][:500]
    for name, least in MILD.items():
        predicted = predict_logits(cnn, C.CORRUPTIONS[name](images)).argmax(dim=1)
        accuracy = float((predicted == labels).double().mean())
        assert accuracy >= least, (name, accuracy)
