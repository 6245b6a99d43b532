"""Example-based explanations on real MNIST and the shipped checkpoints: nearest training
images in the last hidden layer, TracIn against Captum's TracInCPFast (final weights,
given checkpoints, training snapshots), the caches."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from captum.influence import TracInCPFast
from torch import nn
from torch.utils.data import TensorDataset

from mnistlens import MnistlensError, influence, load_model, save_checkpoint
from mnistlens.data import load_mnist
from mnistlens.graph import analyze
from mnistlens.influence import passes
from mnistlens.internals.activations import layer_activations
from mnistlens.metrics import predict_logits
from mnistlens.train import TrainConfig, train

from conftest import WritesAFile


@pytest.fixture(scope="module", autouse=True)
def fresh_memory():
    """Each run starts and ends without indexes in memory (other test modules stay lean)."""
    influence.clear_memory_cache()
    yield
    influence.clear_memory_cache()


@pytest.fixture(scope="module")
def cache(mlp_training_index):
    """The run's index folder: the shipped MLP's full index and TracIn factors are there
    already (conftest's mlp_training_index); what these tests build goes beside them."""
    return mlp_training_index


@pytest.fixture(scope="module")
def train_set():
    return load_mnist("train")


@pytest.fixture(scope="module")
def mlp(shipped):
    return shipped["mlp"][0]


@pytest.fixture(scope="module")
def mlp_index(mlp, cache):
    """The full 60,000-image index of the shipped MLP, from the run's cache."""
    return influence.training_index(mlp, cache_dir=cache)


@pytest.fixture(scope="module")
def correct_sample(test_set):
    """Predicted classes and 50 seeded test images (of the first 1,000) each model
    classifies correctly."""

    def pick(model):
        images, labels = test_set[0][:1000], test_set[1][:1000]
        predicted = predict_logits(model, images).argmax(dim=1)
        correct = (predicted == labels).nonzero()[:, 0]
        chosen = correct[torch.randperm(len(correct), generator=torch.Generator().manual_seed(0))]
        return images[chosen[:50]], predicted[chosen[:50]]

    return pick


def counting_passes(monkeypatch):
    """Count passes over the training set from now on."""
    calls = []
    original = passes.training_pass

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(passes, "training_pass", counted)
    return calls


# ---------------------------------------------------------------- nearest neighbours


def test_full_index_holds_unit_rows_of_the_last_hidden_layer(mlp, mlp_index, train_set):
    """60,000 float32 unit rows at relu2 (the MLP's last hidden layer), with the labels."""
    assert mlp_index.layer == analyze(mlp).hidden_layers[-1] == "relu2"
    assert mlp_index.features.shape == (60000, 256)
    assert mlp_index.features.dtype == torch.float32
    norms = mlp_index.features.norm(dim=1)
    assert ((norms - 1).abs() < 1e-5).float().mean() > 0.99
    assert torch.equal(mlp_index.labels, train_set[1])
    assert mlp_index.model_key == influence.model_key(mlp)
    assert mlp_index.path.is_file()


def test_model_without_hidden_layer_is_indexed_by_pixels(shipped, cache, train_set):
    """The linear model has no hidden layer: its index is the normalized pixels."""
    index = influence.training_index(shipped["linear"][0], cache_dir=cache, train_subset=300)
    assert index.layer == "pixels"
    expected = F.normalize(train_set[0][:300].flatten(1), dim=1)  # (300, 784)
    torch.testing.assert_close(index.features, expected)


def test_nearest_agrees_with_brute_force(mlp, cache, train_set, test_set):
    """Top-k of the index = top-k of cosine similarities recomputed pair by pair."""
    index = influence.training_index(mlp, cache_dir=cache, train_subset=2000)
    queries = test_set[0][:20]
    near = influence.nearest_training_images(index, mlp, queries, k=10)
    train = layer_activations(mlp, train_set[0][:2000], "relu2")  # (2000, 256)
    query = layer_activations(mlp, queries, "relu2")  # (20, 256)
    brute = F.cosine_similarity(query[:, None, :], train[None, :, :], dim=2)  # (20, 2000)
    best = brute.topk(10, dim=1)
    assert near.indices.shape == near.similarities.shape == (20, 10)
    torch.testing.assert_close(near.similarities, best.values, atol=1e-5, rtol=0)
    torch.testing.assert_close(brute.gather(1, near.indices), best.values, atol=1e-5, rtol=0)
    assert (near.indices == best.indices).float().mean() > 0.95  # only near-ties may swap
    chunked = influence.nearest_training_images(index, mlp, queries, k=10, batch_size=7)
    assert torch.equal(chunked.indices, near.indices)


@pytest.mark.parametrize("name, subset", [("mlp", None), ("cnn", 3000)])
def test_nearest_training_images_have_the_predicted_class(
    name, subset, shipped, cache, mlp_index, correct_sample, train_set
):
    """For >= 90% of 50 correctly classified test digits most of the 8 neighbours share
    the predicted class (measured: 50/50 for the MLP, 49/50 for the CNN on 3,000)."""
    model = shipped[name][0]
    if name == "mlp":
        index = mlp_index
    else:
        index = influence.training_index(model, cache_dir=cache, train_subset=subset)
    images, predicted = correct_sample(model)
    near = influence.nearest_training_images(index, model, images, k=8)
    same = (train_set[1][near.indices] == predicted[:, None]).sum(dim=1)  # (50,)
    assert len(same) == 50
    assert (same >= 5).sum() >= 45, same.tolist()
    assert (near.similarities[:, :-1] >= near.similarities[:, 1:]).all()


# ---------------------------------------------------------------- TracIn


def test_tracin_proponents_share_the_prediction_and_opponents_do_not(
    mlp, mlp_index, cache, correct_sample, train_set, monkeypatch
):
    """Full 60k TracIn from the factors stored by the index pass (no second pass):
    proponents mostly of the predicted digit, opponents mostly not (measured: 50/50 each)."""
    passes = counting_passes(monkeypatch)
    images, predicted = correct_sample(mlp)
    result = influence.tracin(mlp, images, k=8, cache_dir=cache)
    assert passes == []
    labels = train_set[1]
    assert result.proponents.shape == result.opponents.shape == (50, 8)
    assert ((labels[result.proponents] == predicted[:, None]).sum(dim=1) >= 5).sum() >= 40
    assert ((labels[result.opponents] != predicted[:, None]).sum(dim=1) >= 5).sum() >= 45
    assert (result.proponent_scores > 0).all() and (result.opponent_scores < 0).all()
    assert (result.proponent_scores[:, :-1] >= result.proponent_scores[:, 1:]).all()
    assert (result.opponent_scores[:, :-1] <= result.opponent_scores[:, 1:]).all()
    chunked = influence.tracin(mlp, images[:9], k=8, cache_dir=cache, batch_size=4)
    assert torch.equal(chunked.proponents, result.proponents[:9])
    assert torch.equal(chunked.opponents, result.opponents[:9])


def captum_tracin(model, images, targets, train, states, rates, double=False, k=None):
    """Captum's TracInCPFast over `train` (images, labels), one term per state_dict."""
    net = copy.deepcopy(model).eval()
    if double:  # float64 keeps softmax - onehot exact where float32 cancels to 0
        net, images, train = net.double(), images.double(), (train[0].double(), train[1])
        states = [_double(state) for state in states]
    rate = {id(state): r for state, r in zip(states, rates, strict=True)}

    def load(module, state):
        module.load_state_dict(state)
        return rate[id(state)]

    tracer = TracInCPFast(
        net,
        analyze(model).parameter_layers[-1],
        TensorDataset(*train),
        states,
        checkpoints_load_func=load,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=500,
    )
    return tracer.influence((images, targets), k=k)


def _double(state):
    return {n: v.double() if v.is_floating_point() else v for n, v in state.items()}


def assert_close_rows(mine, reference, rel=1e-4):
    """Equal up to `rel` of each row's largest score (scores span many decades)."""
    scale = reference.abs().amax(dim=1, keepdim=True)  # (N, 1)
    assert (scale > 0).all()
    assert ((mine.double() - reference.double()).abs() <= rel * scale).all()


@pytest.mark.slow
@pytest.mark.parametrize("name, subset", [("mlp", 2000), ("cnn", 500)])
def test_fast_tracin_equals_captum(name, subset, shipped, cache, test_set, train_set):
    """Our scores from cached factors = Captum's TracInCPFast.influence on a subset, for
    the predicted class (Captum in float64) and for other classes (Captum as is)."""
    model = shipped[name][0]
    images = test_set[0][:6]
    train = (train_set[0][:subset], train_set[1][:subset])
    state = model.state_dict()
    predicted = predict_logits(model, images).argmax(dim=1)
    mine = influence.tracin_scores(model, images, cache_dir=cache, train_subset=subset)
    assert mine.shape == (6, subset)
    reference = captum_tracin(model, images, predicted, train, [state], [1.0], double=True)
    assert_close_rows(mine, reference)
    other = (predicted + 1) % 10
    mine = influence.tracin_scores(model, images, other, cache_dir=cache, train_subset=subset)
    reference = captum_tracin(model, images, other, train, [state], [1.0])
    assert_close_rows(mine, reference)
    top = influence.tracin(model, images, other, k=5, cache_dir=cache, train_subset=subset)
    captum_top = captum_tracin(model, images, other, train, [state], [1.0], k=5)
    assert_close_rows(top.proponent_scores, captum_top[1])
    assert_close_rows(reference.gather(1, top.proponents), captum_top[1])


def test_tracin_sums_over_every_checkpoint(mlp, cache, test_set, train_set, tmp_path):
    """Several checkpoints (a shipped name and a state_dict file) with their learning
    rates = Captum's TracInCPFast over the same checkpoints; the model stays untouched."""
    generator = torch.Generator().manual_seed(0)
    shifted = {
        n: v + 0.02 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for n, v in mlp.state_dict().items()
    }
    torch.save(shifted, tmp_path / "shifted.pt")
    images = test_set[0][:4]
    target = (predict_logits(mlp, images).argmax(dim=1) + 3) % 10
    before = influence.model_key(mlp)
    checkpoints = ["mlp.pt", tmp_path / "shifted.pt"]  # a shipped name, a state_dict file
    options = dict(learning_rates=[0.5, 2.0], cache_dir=cache, train_subset=1500)
    mine = influence.tracin_scores(mlp, images, target, checkpoints=checkpoints, **options)
    train = (train_set[0][:1500], train_set[1][:1500])
    reference = captum_tracin(mlp, images, target, train, [mlp.state_dict(), shifted], [0.5, 2.0])
    assert_close_rows(mine, reference)
    single = influence.tracin_scores(mlp, images, target, cache_dir=cache, train_subset=1500)
    assert not torch.allclose(mine, 0.5 * single)  # the second checkpoint counted
    assert influence.model_key(mlp) == before
    assert all(p.requires_grad for p in mlp.parameters())


# ---------------------------------------------------------------- training snapshots

# A small MLP trained with snapshots after epochs 1 and 3 (3 * i // 2): uneven spans, so
# a snapshot's weight (its mean learning rate x the epochs it stands for) is tested.
SNAPSHOT_RUN = dict(
    arch="mlp",
    arch_kwargs={"hidden": [32]},
    epochs=3,
    batch_size=100,
    train_subset=1000,
    augment=False,
    seed=1,
    snapshots=2,
)


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    """(model, metadata, path) of the run above, saved and loaded back as a user would."""
    path = tmp_path_factory.mktemp("snapshots") / "snap.pt"
    model, meta = train(TrainConfig(**SNAPSHOT_RUN), progress=False)
    save_checkpoint(path, model, "mlp", SNAPSHOT_RUN["arch_kwargs"], meta)
    return (*load_model(path), path)


def test_tracin_over_snapshots_equals_captum(snapshot_run, cache, test_set, train_set):
    """With snapshots, the scores = Captum's TracInCPFast over the same snapshots with
    the same weights (predicted class with Captum in float64, another class as is), and
    the result names the snapshots used."""
    model, meta, path = snapshot_run
    assert meta["snapshots"]["epochs"] == [1, 3]
    states, rates = meta["snapshots"]["state_dicts"], meta["snapshots"]["learning_rates"]
    etas = [rates[0] * 1, rates[1] * 2]  # the mean rate x the epochs each stands for
    images = test_set[0][:5]
    train_part = (train_set[0][:800], train_set[1][:800])
    options = dict(snapshots=meta, cache_dir=cache, train_subset=800)
    predicted = predict_logits(model, images).argmax(dim=1)
    mine = influence.tracin_scores(model, images, **options)
    assert mine.shape == (5, 800)
    assert_close_rows(mine, captum_tracin(model, images, predicted, train_part, states, etas, True))
    other = (predicted + 4) % 10
    mine = influence.tracin_scores(model, images, other, **options)
    assert_close_rows(mine, captum_tracin(model, images, other, train_part, states, etas))
    final = influence.tracin_scores(model, images, other, cache_dir=cache, train_subset=800)
    assert not torch.allclose(mine, etas[-1] * final, rtol=0.05)  # the epoch-1 term counted

    result = influence.tracin(model, images, other, k=5, **dict(options, snapshots=path))
    assert result.used == "2 training snapshots (epochs 1, 3)"
    assert_close_rows(result.proponent_scores, mine.topk(5, dim=1).values)
    assert_close_rows(mine.gather(1, result.opponents), mine.topk(5, 1, largest=False).values)


def test_checkpoint_without_snapshots_uses_the_final_weights(
    snapshot_run, cache, test_set, tmp_path
):
    """A checkpoint written before snapshots existed (no "snapshots", no config key) loads,
    and TracIn on it says it used the final weights only, with the default's scores."""
    model, meta, path = snapshot_run
    payload = torch.load(path, weights_only=True)
    del payload["metadata"]["snapshots"], payload["metadata"]["config"]["snapshots"]
    torch.save(payload, tmp_path / "old.pt")
    old, old_meta = load_model(tmp_path / "old.pt")
    assert "snapshots" not in old_meta
    assert influence.model_key(old) == influence.model_key(model)
    images = test_set[0][:3]
    options = dict(k=6, cache_dir=cache, train_subset=800)
    default = influence.tracin(old, images, **options)
    assert default.used == influence.FINAL_WEIGHTS
    for source in (old_meta, tmp_path / "old.pt", payload):
        result = influence.tracin(old, images, snapshots=source, **options)
        assert result.used == influence.FINAL_WEIGHTS
        assert torch.equal(result.proponents, default.proponents)
        assert torch.equal(result.opponent_scores, default.opponent_scores)


@pytest.mark.slow
def test_snapshot_factors_are_cached_per_weights(snapshot_run, tmp_path, test_set, monkeypatch):
    """One pass and one cache file per snapshot, read back without a pass; a retrained
    model's snapshots (other weights) get their own files, never the old ones."""
    model, meta, _ = snapshot_run
    influence.clear_memory_cache()
    count = counting_passes(monkeypatch)
    images = test_set[0][:2]
    options = dict(cache_dir=tmp_path, train_subset=300)
    first = influence.tracin_scores(model, images, snapshots=meta, **options)
    assert len(count) == 2 and len(list(tmp_path.glob("tracin-*"))) == 2
    influence.clear_memory_cache()
    again = influence.tracin_scores(model, images, snapshots=meta, **options)
    assert len(count) == 2
    assert torch.equal(again, first)
    retrained, retrained_meta = train(TrainConfig(**{**SNAPSHOT_RUN, "seed": 2}), progress=False)
    influence.tracin_scores(retrained, images, snapshots=retrained_meta, **options)
    assert len(count) == 4 and len(list(tmp_path.glob("tracin-*"))) == 4


def test_snapshots_of_other_weights_or_malformed_are_refused(snapshot_run, mlp, test_set):
    model, meta, path = snapshot_run
    images = test_set[0][:2]
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    for other in (changed, mlp):
        with pytest.raises(MnistlensError, match=r"snap.pt \(epoch 3\) holds other weights"):
            influence.tracin(other, images, snapshots=meta)
    broken = dict(meta, snapshots=dict(meta["snapshots"], epochs=[3, 1]))
    with pytest.raises(MnistlensError, match=r"malformed \(epochs \[3, 1\] are not increasing"):
        influence.tracin(model, images, snapshots=broken)
    broken = dict(meta, snapshots=dict(meta["snapshots"], learning_rates=[0.1]))
    with pytest.raises(MnistlensError, match="malformed.*retrain with `mnistlens train --snap"):
        influence.tracin(model, images, snapshots=broken)
    with pytest.raises(MnistlensError, match="snapshots .* or checkpoints .*, not both"):
        influence.tracin(model, images, snapshots=path, checkpoints=[path])
    with pytest.raises(MnistlensError, match="snapshots is a int; pass the metadata"):
        influence.tracin(model, images, snapshots=3)


# ---------------------------------------------------------------- caches


@pytest.mark.slow
def test_disk_cache_is_reused_and_bad_files_rebuilt(mlp, cache, tmp_path, monkeypatch):
    """A second build reads the file (no pass, file untouched); an unreadable file, one
    made for other weights, and a pickle that would run code are all rebuilt."""
    built = influence.training_index(mlp, cache_dir=tmp_path, train_subset=800)
    path, mtime = built.path, built.path.stat().st_mtime_ns
    influence.clear_memory_cache()
    passes = counting_passes(monkeypatch)
    again = influence.training_index(mlp, cache_dir=tmp_path, train_subset=800)
    assert (again.source, passes, path.stat().st_mtime_ns) == ("disk", [], mtime)
    assert torch.equal(again.features, built.features)
    assert influence.training_index(mlp, cache_dir=tmp_path, train_subset=800).source == "memory"
    assert passes == []

    other = influence.training_index(mlp, cache_dir=tmp_path, train_subset=801)
    trap = tmp_path / "pwned"
    bad_files = [
        ("unreadable", b"not a torch file"),
        ("other weights", other.path.read_bytes()),  # a valid index, another key
        ("unreadable", None),  # a pickle that would call exec (weights_only refuses it)
    ]
    for reason, content in bad_files:
        if content is None:
            torch.save(WritesAFile(trap), path)
        else:
            path.write_bytes(content)
        influence.clear_memory_cache()
        with pytest.warns(UserWarning, match=f"ignoring cache file .*{reason}"):
            rebuilt = influence.training_index(mlp, cache_dir=tmp_path, train_subset=800)
        assert rebuilt.source == "built"
        assert torch.equal(rebuilt.features, built.features)
        assert torch.load(path, weights_only=True)["key"] == built.key
    assert len(passes) == 4  # the 801 index and three rebuilds
    assert not trap.exists()

    factors = sorted(tmp_path.glob("tracin-head-*"))  # of the 800 and the 801 images
    assert len(factors) == 2
    for file in factors:
        file.write_bytes(b"junk")
    influence.clear_memory_cache()
    with pytest.warns(UserWarning, match="tracin-head.*unreadable"):
        influence.tracin(mlp, torch.zeros(1, 1, 28, 28), cache_dir=tmp_path, train_subset=800)
    assert len(passes) == 5
    loaded = [torch.load(file, weights_only=True) for file in factors if file.stat().st_size > 4]
    assert [payload["format"] for payload in loaded] == [influence.TRACIN_FORMAT]


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert influence.default_cache_dir() == tmp_path / "mnistlens" / "index"


# ---------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_the_fix(shipped, mlp, mlp_index, cache, test_set, tmp_path):
    images = test_set[0][:2]
    near = influence.nearest_training_images
    with pytest.raises(MnistlensError, match=r"shape \(N, 1, 28, 28\), got \(28, 28\)"):
        near(mlp_index, mlp, images[0, 0])
    with pytest.raises(MnistlensError, match=r"got \(2, 3, 28, 28\)"):
        influence.tracin(mlp, images.expand(2, 3, 28, 28), cache_dir=cache)
    for k in (0, 60001, 2.5, True):
        with pytest.raises(MnistlensError, match=rf"k={k!r} must be an integer from 1 to 60,000"):
            near(mlp_index, mlp, images, k=k)
    with pytest.raises(MnistlensError, match="k=60001 must be an integer from 1 to 60,000"):
        influence.tracin(mlp, images, k=60001, cache_dir=cache)
    with pytest.raises(MnistlensError, match="other weights.*training_index\\(model\\)"):
        near(mlp_index, shipped["cnn"][0], images)
    with pytest.raises(MnistlensError, match="must be a TrainingIndex"):
        near(mlp_index.features, mlp, images)
    with pytest.raises(MnistlensError, match="no layer 'nope'.*relu2.*or 'pixels'"):
        influence.training_index(mlp, layer="nope", cache_dir=cache)
    with pytest.raises(MnistlensError, match="relu1.*would take 5.6 GB; choose a later"):
        influence.training_index(shipped["cnn"][0], layer="relu1", cache_dir=tmp_path)
    for subset in (0, 60001):
        with pytest.raises(MnistlensError, match=f"train_subset={subset}"):
            influence.training_index(mlp, cache_dir=cache, train_subset=subset)
    with pytest.raises(MnistlensError, match="batch_size=0 must be a positive integer"):
        near(mlp_index, mlp, images, batch_size=0)
    with pytest.raises(MnistlensError, match="target class 10 is out of range"):
        influence.tracin(mlp, images, target=10, cache_dir=cache)
    with pytest.raises(MnistlensError, match="1 learning rates for 2 checkpoints"):
        influence.tracin(mlp, images, checkpoints=["mlp.pt"] * 2, learning_rates=[1.0])
    with pytest.raises(MnistlensError, match="checkpoint 0 does not fit this model"):
        influence.tracin(mlp, images, checkpoints=["cnn.pt"], cache_dir=cache)
    conv_head = nn.Sequential(nn.Conv2d(1, 10, 28), nn.Flatten())
    with pytest.raises(MnistlensError, match="last layer with weights is an nn.Linear.*'0'"):
        influence.tracin(conv_head, images, cache_dir=tmp_path)
    assert not os.listdir(tmp_path)  # nothing was built for refused input
