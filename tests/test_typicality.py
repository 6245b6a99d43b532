"""Is it a digit at all? The verdict's calibration, what it flags, its cache, own models,
and that its scores are pytorch-ood's."""

import threading

import pytest
import torch

import mnistlens
from mnistlens import MnistlensError
from mnistlens.graph import analyze
from mnistlens.influence import cache
from mnistlens.typicality import detectors, digit_like, fit_detector, probes, verdict
from mnistlens.typicality.detectors import Spec

from conftest import save_user_model

RATE = 0.05


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """A cache folder of this module's own, so the first fit of each model is built here."""
    return tmp_path_factory.mktemp("typicality")


@pytest.fixture(scope="module")
def cnn_fit(shipped, fits):
    return fit_detector(shipped["cnn"][0], cache_dir=fits)


@pytest.fixture(scope="module")
def cnn_features(shipped):
    """Real features of the shipped CNN: 600 training digits (fit) and 100 test digits."""
    model = shipped["cnn"][0]
    train, labels = mnistlens.load_mnist("train")
    test = mnistlens.load_mnist("test")[0][:100]
    layers = ["relu2", "relu3", "relu_fc1"]
    return (
        detectors.features(model, train[:600], layers),
        labels[:600],
        detectors.features(model, test, layers),
        model,
    )


@pytest.mark.slow  # importing pytorch-ood takes seconds
def test_scores_are_pytorch_oods(cnn_features):
    """The scores written out for speed equal pytorch-ood's own detectors, to float
    precision, on real features."""
    from pytorch_ood.detector import KNN, EnergyBased, Mahalanobis, MaxSoftmax

    (train, train_logits), labels, (test, test_logits), _ = cnn_features
    z, q = train["relu3"], test["relu3"]
    ours = detectors.mahalanobis_score(detectors.mahalanobis_fit(z, labels), q)
    theirs = Mahalanobis(None).fit_features(z, labels).predict_features(q)
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3 * float(theirs.abs().mean()))
    knn = detectors.knn_score({"bank": detectors.unit_rows(z)}, q)
    their_knn = KNN(None, k=detectors.KNN_K).fit_features(z, labels).predict_features(q)
    torch.testing.assert_close(knn.double(), their_knn.double(), rtol=1e-4, atol=1e-5)
    spec_scores = {k: detectors.score(Spec(k), {}, test, test_logits) for k in ("msp", "energy")}
    torch.testing.assert_close(spec_scores["msp"], MaxSoftmax.score(test_logits))
    torch.testing.assert_close(spec_scores["energy"], EnergyBased.score(test_logits))


@pytest.mark.slow
def test_vim_runs_through_pytorch_ood(cnn_features):
    """ViM (pytorch-ood's) fits on the layer that feeds the head and scores real digits
    lower than their inverted copies; on another layer it says why it cannot."""
    (train, logits), labels, (test, test_logits), model = cnn_features
    spec = Spec("vim", "relu_fc1")
    state = detectors.fit(spec, train, logits, labels, model)
    digits = detectors.score(spec, state, test, test_logits)
    inverted = detectors.features(model, 1 - mnistlens.load_mnist("test")[0][:100], ["relu_fc1"])
    assert detectors.score(spec, state, *inverted).median() > digits.quantile(0.95)
    with pytest.raises(MnistlensError, match="final linear layer"):
        detectors.fit(Spec("vim", "relu2"), train, logits, labels, model)


@pytest.mark.slow
def test_calibration_flags_the_asked_share_of_unseen_digits(shipped, cnn_fit):
    """On 2,000 training digits neither the fit nor the calibration saw, the share
    flagged is the asked rate, within three binomial standard errors plus two of the
    calibration sample's own."""
    model = shipped["cnn"][0]
    start = verdict.FIT_IMAGES + verdict.CALIBRATION_IMAGES
    unseen = mnistlens.load_mnist("train")[0][start : start + 2000]
    for rate in (0.05, 0.2):
        flagged = (~cnn_fit.judge(model, unseen, rate).verdict).float().mean()
        held = verdict.CALIBRATION_IMAGES
        spread = 3 * (rate * (1 - rate) / 2000) ** 0.5 + 2 * (rate * (1 - rate) / held) ** 0.5
        assert abs(float(flagged) - rate) < spread, (rate, float(flagged))


@pytest.mark.slow
def test_blank_noise_and_inverted_images_are_flagged(shipped, test_set, fits):
    model = shipped["cnn"][0]
    images = torch.cat([probes.blank(), probes.noise(), probes.inverted(test_set[0], 50)])
    result = digit_like(model, images, cache_dir=fits)
    assert result.detector == "mahalanobis@relu3"
    assert not result.verdict.any()
    assert (result.percentile >= 95).all()
    digits = digit_like(model, test_set[0][:200], cache_dir=fits)
    assert digits.verdict.float().mean() > 0.9  # real digits pass


@pytest.mark.slow
def test_deterministic_and_batch_independent(shipped, test_set, fits):
    """The same images give the same verdict; a batch of N gives what N singles give."""
    model = shipped["cnn"][0]
    images = torch.cat([test_set[0][:6], probes.letters()[:6]])
    first = digit_like(model, images, cache_dir=fits)
    again = digit_like(model, images, cache_dir=fits)
    assert torch.equal(first.score, again.score) and torch.equal(first.verdict, again.verdict)
    singles = torch.cat([digit_like(model, im, cache_dir=fits).score for im in images])
    torch.testing.assert_close(singles, first.score, rtol=1e-4, atol=1e-6)
    assert first.to_json(0).keys() == {"verdict", "score", "threshold", "percentile", "detector"}


@pytest.mark.slow
def test_the_fit_is_cached_by_the_weights(shipped, tmp_path):
    """Memory, then disk; changed weights (a retrained model) get a fit of their own."""
    model = shipped["mlp"][0]
    cache.clear_memory_cache()  # the memory is keyed by weights, not by folder
    built = fit_detector(model, cache_dir=tmp_path)
    assert built.source == "built" and len(list(tmp_path.glob("typicality-*.pt"))) == 1
    assert fit_detector(model, cache_dir=tmp_path).source == "memory"
    cache.clear_memory_cache()
    from_disk = fit_detector(model, cache_dir=tmp_path)
    assert from_disk.source == "disk"
    assert torch.equal(from_disk.calibration, built.calibration)

    retrained = _changed_copy(model)
    refit = fit_detector(retrained, cache_dir=tmp_path)
    assert refit.source == "built" and refit.weights != built.weights
    assert not torch.equal(refit.calibration, built.calibration)
    assert len(list(tmp_path.glob("typicality-*.pt"))) == 2


def _changed_copy(model):
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).mul_(1.5)
    return other


@pytest.mark.slow
def test_a_damaged_cache_file_is_rebuilt(shipped, tmp_path):
    model = shipped["linear"][0]
    fit_detector(model, cache_dir=tmp_path)
    (path,) = tmp_path.glob("typicality-*.pt")
    path.write_bytes(b"not a checkpoint")
    cache.clear_memory_cache()
    with pytest.warns(UserWarning, match="ignoring cache file"):
        assert fit_detector(model, cache_dir=tmp_path).source == "built"


@pytest.mark.slow
def test_threads_share_one_fit(shipped, tmp_path):
    """Streamlit serves sessions from threads: two first verdicts at once build one fit."""
    model = shipped["linear"][0]
    cache.clear_memory_cache()  # the memory is keyed by weights, not by folder
    sources = []

    def ask():
        sources.append(fit_detector(model, cache_dir=tmp_path).source)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sources) == ["built", "memory", "memory"]


@pytest.mark.slow
def test_an_exported_program_gets_the_verdict_of_its_checkpoint(shipped, mlp_program, tmp_path):
    """A .pt2 reaches its hidden layers through mnistlens' rewrite: same features, same
    scores as the checkpoint it was exported from."""
    program, _ = mnistlens.load(mlp_program)
    images = torch.cat([mnistlens.load_mnist("test")[0][:5], probes.letters()[:5]])
    ours = digit_like(program, images, cache_dir=tmp_path)
    theirs = digit_like(shipped["mlp"][0], images, cache_dir=tmp_path)
    assert ours.detector.startswith("knn@") and theirs.detector == "knn@relu2"
    torch.testing.assert_close(ours.score, theirs.score, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """nets.TinyNet trained briefly (6,000 images), as state_dict + source and as a .pt2."""
    return save_user_model(tmp_path_factory.mktemp("user_typicality"), 6000)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["state_dict", "pt2"])
def test_a_model_of_ones_own(user_files, kind, tmp_path):
    """A user's conv net loaded from a state_dict and its code, or from a .pt2: the
    verdict reads its conv block, passes most real digits and flags most blank and
    noise images."""
    if kind == "pt2":
        model, _ = mnistlens.load(user_files / "net.pt2")
    else:
        code = f"{user_files / 'net.py'}:TinyNet"
        model, _ = mnistlens.load(user_files / "net.pt", model_code=code)
    junk = digit_like(model, torch.cat([probes.blank(), probes.noise(8)]), cache_dir=tmp_path)
    assert junk.detector == f"mahalanobis@{analyze(model).cam_layer}"  # its conv block
    # 16 of 17: this 4-channel net, trained for seconds, finds a black image about as
    # typical as its 90th-percentile digit; the shipped CNN flags every blank (above)
    assert (~junk.verdict).float().mean() >= 0.9
    digits = digit_like(model, mnistlens.load_mnist("test")[0][:200], cache_dir=tmp_path)
    assert digits.verdict.float().mean() > 0.85


@pytest.mark.slow
def test_no_hidden_layer_reads_the_pixels_and_says_so(shipped, tmp_path):
    """linear.pt has no hidden layer: the detector is named knn@pixels, and it flags
    what is plainly not a digit."""
    model = shipped["linear"][0]
    assert detectors.default_spec(model) == Spec("knn", detectors.PIXELS)
    result = digit_like(model, torch.cat([probes.blank(), probes.noise(8)]), cache_dir=tmp_path)
    assert result.detector == "knn@pixels" and not result.verdict.any()
    with pytest.raises(MnistlensError, match="relu3"):
        digit_like(model, probes.blank(), detector="mahalanobis@relu3", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "name, fragment",
    [("odin", "unknown detector 'odin'"), ("mahalanobis", "mahalanobis@LAYER"), ("msp@x", "msp")],
)
def test_unknown_detectors_list_the_known(name, fragment):
    with pytest.raises(MnistlensError, match=fragment):
        Spec.parse(name)


def test_bad_rate_and_shapes_are_refused(shipped):
    model = shipped["linear"][0]
    with pytest.raises(MnistlensError, match="rate must be between 0 and 1"):
        digit_like(model, probes.blank(), rate=5)
    with pytest.raises(MnistlensError, match=r"\(N, 1, 28, 28\)"):
        digit_like(model, torch.zeros(2, 28, 28, 3))


@pytest.mark.slow
def test_the_figure_warns_above_the_maps_and_marks_them(test_set):
    from mnistlens.plots import plot_explanation

    image = test_set[0][0]
    maps = {"saliency": image.clone(), "integrated_gradients": image.clone()}
    fig = plot_explanation(image, maps, "a title", warning="Not digit-like: careful")
    assert fig._suptitle.get_text().startswith("Not digit-like")
    assert "a title" in fig._suptitle.get_text()
    tagged = [ax for ax in fig.axes if any(t.get_text() == "not a digit?" for t in ax.texts)]
    assert len(tagged) == 2  # the two maps, not the input
    plain = plot_explanation(image, maps, "a title")
    assert plain._suptitle.get_text() == "a title"


@pytest.mark.slow
def test_probe_sets_are_deterministic_and_in_the_input_convention(test_set):
    first, second = probes.probe_sets(test_set[0]), probes.probe_sets(test_set[0])
    assert list(first) == list(probes.SHOULD_FLAG)
    for name, images in first.items():
        assert images.shape[1:] == (1, 28, 28) and images.dtype == torch.float32, name
        assert 0 <= float(images.min()) and float(images.max()) <= 1, name
        assert torch.equal(images, second[name]), name
    assert len(first["letters"]) == 80 and len(first["printed digits"]) == 80


@pytest.mark.slow
def test_measure_ood_scores_every_candidate_on_every_set(run):
    """`measure --ood`: one row per candidate detector, with a share flagged of every
    probe set; MNIST test digits are flagged near the calibrated rate, and the default
    detector flags what is plainly not a digit."""
    import json

    result = run("measure", "--model", "linear.pt", "--ood", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["default"] == "knn@pixels"
    rows = {row["detector"]: row for row in out["rows"]}
    assert {"msp", "energy", "knn@pixels"} <= set(rows)
    for row in rows.values():
        assert set(row["flagged"]) == {"MNIST test", *probes.SHOULD_FLAG}
        assert abs(row["flagged"]["MNIST test"] - RATE) < 0.03
    default = rows["knn@pixels"]["flagged"]
    assert default["blank"] == default["noise"] == default["inverted"] == 1.0
