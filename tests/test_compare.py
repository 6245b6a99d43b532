"""mnistlens.compare and compare_plots: the shipped models side by side, statistics by hand."""

import itertools
import math

import pytest
import torch
from matplotlib.figure import Figure

from mnistlens import metrics, plots
from mnistlens.comparison import figures as compare_plots
from mnistlens.comparison import stats as compare
from mnistlens.data import load_mnist

N_TRAIN = 2000  # training images for the train-test gap: enough to test, cheap to run
# Test images the shipped models are compared on: half the test set. Every property
# holds on any images, and the whole set would cost two more passes of the CNN.
N_TEST = 5000


@pytest.fixture(scope="module")
def train_subset():
    images, labels = load_mnist("train")
    return images[:N_TRAIN], labels[:N_TRAIN]


@pytest.fixture(scope="module")
def subset(test_set):
    """The first N_TEST test images and labels."""
    return test_set[0][:N_TEST], test_set[1][:N_TEST]


@pytest.fixture(scope="module")
def report(shipped, subset, train_subset):
    """The three shipped models compared on N_TEST test images, every disagreement kept."""
    models = {name: shipped[name] for name in ("linear", "mlp", "cnn")}
    return compare.compare_models(models, *subset, *train_subset, top=None)


@pytest.fixture(scope="module")
def predictions(shipped, subset):
    """name -> (N_TEST,) predicted digits, computed here without compare."""
    return {
        name: metrics.predict_logits(shipped[name][0], subset[0]).argmax(dim=1)
        for name in ("linear", "mlp", "cnn")
    }


# ---------------------------------------------------------------- per model


def test_accuracies_come_from_the_confusion_matrix_of_the_predictions(report, predictions, subset):
    """Accuracy, per-digit accuracy and error count are exactly what metrics.evaluate
    computes from the same predictions (its confusion matrix; `predictions` is a pass
    of its own, so the test images are not run through the CNN a third time)."""
    labels = subset[1]
    assert [m["name"] for m in report["models"]] == ["linear", "mlp", "cnn"]
    for row in report["models"]:
        confusion = metrics.confusion_matrix(predictions[row["name"]], labels)
        correct = int(confusion.diagonal().sum())
        assert row["accuracy"] == correct / len(labels)
        assert row["per_digit"] == metrics.per_class_accuracy(confusion).tolist()
        assert row["n_errors"] == len(labels) - correct
        low, high = row["accuracy_ci95"]
        assert low < row["accuracy"] < high and high - low < 0.02


def test_model_rows_record_size_time_speed_and_gap(report, shipped, train_subset):
    for row in report["models"]:
        model, meta = shipped[row["name"]]
        assert row["parameters"] == sum(p.numel() for p in model.parameters())
        assert row["train_seconds"] == meta["train_seconds"]
        assert row["images_per_second"] > 0
        train_acc = metrics.evaluate(model, *train_subset)["accuracy"]
        assert row["train_accuracy"] == pytest.approx(train_acc)
        assert row["train_test_gap"] == pytest.approx(train_acc - row["accuracy"])
        assert 0 <= row["ece"] < 0.05  # the shipped models are roughly calibrated
    assert [m["parameters"] for m in report["models"]] == [7850, 535818, 241770]


def test_a_recorded_training_accuracy_is_read_not_recomputed(shipped, test_set, train_subset):
    """A checkpoint that recorded its accuracy on the same number of training images is
    taken at its word; one that measured other images is measured again."""
    model, meta = shipped["linear"]
    images, labels = test_set
    recorded = {**meta, "train_accuracy": 0.5, "train_accuracy_images": N_TRAIN}
    other = {**meta, "train_accuracy": 0.5, "train_accuracy_images": N_TRAIN + 1}
    models = {"recorded": (model, recorded), "other": (model, other)}
    rows = compare.compare_models(models, images[:500], labels[:500], *train_subset)["models"]
    assert rows[0]["train_accuracy"] == 0.5
    assert rows[1]["train_accuracy"] == pytest.approx(
        metrics.evaluate(model, *train_subset)["accuracy"]
    )


def test_without_training_images_the_gap_is_none(shipped, test_set):
    images, labels = test_set
    row = compare.compare_models({"linear": shipped["linear"]}, images[:500], labels[:500])
    assert row["models"][0]["train_accuracy"] is None
    assert row["models"][0]["train_test_gap"] is None
    assert row["pairs"] == [] and row["disagreements"] == []


@pytest.mark.parametrize(
    "correct, total, low, high",
    # Newcombe (1998), Stat. Med. 17:857, table II, method 3 (score interval)
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(correct, total, low, high):
    got = compare.wilson_interval(correct, total)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("total", [1, 7, 300, 10_000])
def test_wilson_interval_holds_a_perfect_and_a_null_score(total):
    """All right: the interval ends at exactly 1; all wrong: it starts at exactly 0.
    (Floats gave 0.9999999999999998 for 300/300: the accuracy plot's error bar had a
    negative length, and matplotlib refused to draw it.)"""
    low, high = compare.wilson_interval(total, total)
    assert high == 1.0 and 0 < low < 1
    low, high = compare.wilson_interval(0, total)
    assert low == 0.0 and 0 < high < 1


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="need 0 <= correct <= total"):
        compare.wilson_interval(11, 10)


def _probs_with(confidence: list[float], predicted: list[int]) -> torch.Tensor:
    """(N, 10) rows whose top probability is `confidence` at digit `predicted`."""
    n = len(confidence)
    conf = torch.tensor(confidence, dtype=torch.float64)
    probs = ((1 - conf) / 9)[:, None].repeat(1, 10)  # (N, 10)
    probs[torch.arange(n), torch.tensor(predicted)] = conf
    return probs


def test_ece_is_zero_when_confidence_matches_accuracy():
    """400 answers at 0.75 with 300 right, 600 at 0.95 with 570 right: perfectly calibrated."""
    probs = _probs_with([0.75] * 400 + [0.95] * 600, [3] * 1000)
    labels = torch.tensor([3] * 300 + [4] * 100 + [3] * 570 + [4] * 30)
    assert compare.expected_calibration_error(probs, labels) == pytest.approx(0, abs=1e-12)


def test_ece_of_an_overconfident_model_is_the_gap():
    """Says 0.99, is right 70% of the time: ECE = 0.29."""
    probs = _probs_with([0.99] * 100, [1] * 100)
    labels = torch.tensor([1] * 70 + [2] * 30)
    assert compare.expected_calibration_error(probs, labels) == pytest.approx(0.29)


# ---------------------------------------------------------------- pairs


def _binomial_two_sided(a: int, b: int) -> float:
    """McNemar's exact p from first principles: by enumeration for small n, else in logs."""
    n, k = a + b, min(a, b)
    if n <= 14:  # every sequence of n fair coin flips
        heads = [sum(flips) for flips in itertools.product((0, 1), repeat=n)]
        tails = sum(1 for h in heads if min(h, n - h) <= k)
        return min(1.0, tails / 2**n)
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    peak = max(log_terms)
    return min(1.0, 2 * math.exp(peak) * sum(math.exp(t - peak) for t in log_terms))


def test_mcnemar_known_value():
    """n = 10 discordant images, 1 against 9: 2 * (C(10,0) + C(10,1)) / 2**10."""
    assert compare.mcnemar_p(1, 9) == 0.021484375
    assert compare.mcnemar_p(9, 1) == 0.021484375
    assert compare.mcnemar_p(5, 5) == 1.0 and compare.mcnemar_p(0, 0) == 1.0


@pytest.mark.parametrize("a, b", [(a, b) for a in range(8) for b in range(8) if a + b <= 14])
def test_mcnemar_matches_enumeration(a, b):
    assert compare.mcnemar_p(a, b) == pytest.approx(_binomial_two_sided(a, b), abs=1e-15)


def test_mcnemar_large_n_stays_exact_and_tiny():
    """n in the thousands: no overflow, agrees with the log-space sum."""
    assert 0 <= compare.mcnemar_p(19, 2000) < 1e-300
    assert compare.mcnemar_p(480, 520) == pytest.approx(_binomial_two_sided(480, 520), rel=1e-9)


def test_pairs_recomputed_from_predictions(report, predictions, subset):
    labels = subset[1]
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [
        ("linear", "mlp"),
        ("linear", "cnn"),
        ("mlp", "cnn"),
    ]
    for pair in report["pairs"]:
        pa, pb = predictions[pair["a"]].tolist(), predictions[pair["b"]].tolist()
        rows = list(zip(pa, pb, labels.tolist(), strict=True))
        a_only = [i for i, (x, y, t) in enumerate(rows) if x == t and y != t]
        b_only = [i for i, (x, y, t) in enumerate(rows) if y == t and x != t]
        assert pair["a_only_right_indices"] == a_only and pair["b_only_right_indices"] == b_only
        assert compare.only_right(report, pair["a"], pair["b"]) == a_only
        assert compare.only_right(report, pair["b"], pair["a"]) == b_only
        a_only, b_only = len(a_only), len(b_only)
        assert pair["a_only_right"] == a_only and pair["b_only_right"] == b_only
        assert pair["disagreements"] == sum(1 for x, y, _ in rows if x != y)
        assert pair["mcnemar_p"] == pytest.approx(_binomial_two_sided(a_only, b_only), rel=1e-9)
    mlp_cnn = report["pairs"][2]
    assert mlp_cnn["b_only_right"] > mlp_cnn["a_only_right"] and mlp_cnn["mcnemar_p"] < 0.001
    with pytest.raises(compare.MnistlensError, match="no pair 'cnn' and 'lenet'"):
        compare.only_right(report, "cnn", "lenet")


# ---------------------------------------------------------------- disagreements


def test_disagreements_really_are_disagreements(report, predictions, subset):
    records = report["disagreements"]
    differ = torch.stack(list(predictions.values()))  # (3, N)
    expected = int((differ != differ[:1]).any(dim=0).sum())
    assert report["n_disagreements"] == len(records) == expected > 100
    for record in records[:50]:
        i = record["index"]
        assert len(set(record["predictions"].values())) >= 2
        assert record["predictions"] == {n: int(p[i]) for n, p in predictions.items()}
        assert record["label"] == int(subset[1][i])
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)


def test_disagreement_score_is_the_second_strongest_camp():
    """Three models on three images, worked out by hand."""
    probs = torch.stack(
        [
            _probs_with([0.9, 0.8, 0.6], [1, 2, 5]),
            _probs_with([0.7, 0.8, 0.5], [1, 3, 5]),
            _probs_with([0.95, 0.3, 0.99], [1, 3, 6]),
        ]
    )  # (M=3, N=3, 10)
    index, scores = compare.disagreement_scores(probs)
    # image 0: all say 1 -> no disagreement; image 1: camp 2 backed by 0.8, camp 3 by 0.8;
    # image 2: camp 5 backed by 0.6, camp 6 by 0.99 -> 0.6
    assert index.tolist() == [1, 2]
    assert scores.tolist() == pytest.approx([0.8, 0.6])


def test_compare_models_rejects_bad_input(test_set):
    with pytest.raises(ValueError, match="at least one model"):
        compare.compare_models({}, *test_set)


# ---------------------------------------------------------------- plots


def test_plots_draw_every_model_and_save(report, subset, tmp_path):
    names = {"linear", "mlp", "cnn"}
    fig = compare_plots.plot_accuracy_vs_parameters(report)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and {t.get_text() for t in ax.texts} == names
    fig = compare_plots.plot_accuracy_vs_time(report)
    assert {t.get_text() for t in fig.axes[0].texts} == names
    fig = compare_plots.plot_digit_accuracy(report)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["linear", "mlp", "cnn"]
    assert len(fig.axes[0].texts) == 30  # one value per model and digit
    fig = compare_plots.plot_disagreements(report, subset[0], n=6)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    first = report["disagreements"][0]
    assert len(titled) == 6 and titled[0] == f"#{first['index']}: true {first['label']}"
    path = plots.save_figure(fig, tmp_path / "disagree.png")
    assert isinstance(fig, Figure) and path.read_bytes()[:4] == b"\x89PNG"


def test_time_plot_names_models_without_a_recorded_time(report):
    rows = [dict(r) for r in report["models"]]
    rows[0]["train_seconds"] = None
    fig = compare_plots.plot_accuracy_vs_time({**report, "models": rows})
    assert "no recorded time: linear" in fig.axes[0].get_xlabel()
    assert {t.get_text() for t in fig.axes[0].texts} == {"mlp", "cnn"}
