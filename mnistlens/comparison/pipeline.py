"""The whole comparison, as `mnistlens compare` runs it: one call from a notebook.

    >>> from mnistlens import comparison
    >>> models = comparison.load_models(["mlp.pt", "cnn.pt"])
    >>> report = comparison.run(models, out="cmp/", maps=True)
    >>> report["pairs"][0]["mcnemar_p"], report["plots"]["digit_maps"]

`run` measures the models on the 10,000 test images (`stats.compare_models`), then, as
asked, how faithful each model's maps are, the comparison figures, what each model
looks at (per-digit mean maps, and a pair's maps where one is right and the other
wrong), and the Markdown report (`report.py`). Everything it found comes back in one
JSON-ready dict; figures are PNG files whose paths it lists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from torch import nn

from mnistlens.device import Device
from mnistlens.errors import MnistlensError

DIGIT_MAP_IMAGES = 500  # ~50 per digit: enough for the mean maps to settle
FAITHFULNESS_EVERY = 50  # maps are measured on every 50th test image (200 images)

PLOTS = {
    "Accuracy against parameters": "accuracy_vs_parameters.png",
    "Accuracy against training time": "accuracy_vs_time.png",
    "Accuracy per digit": "digit_accuracy.png",
    "The images the models disagree on": "disagreements.png",
}

Models = dict[str, tuple[nn.Module, dict]]


def load_models(paths: Sequence[str | os.PathLike], data_dir=None, at_least: int = 2) -> Models:
    """name (the file's stem) -> (model, metadata), in the order given, each loaded with
    `mnistlens.load`; `at_least` models (a comparison's two; a stress test's one), no two
    with the same name."""
    from mnistlens.loading import load

    if len(paths) < at_least:
        wanted = "two or more models" if at_least == 2 else f"at least {at_least} model(s)"
        raise MnistlensError(f"a comparison needs {wanted}, got {len(paths)}")
    models: Models = {}
    for path in paths:
        name = Path(path).stem
        if name in models:
            raise MnistlensError(f"{path}: two models named {name!r}; rename one file")
        models[name] = load(path, data_dir=data_dir)
    return models


def check_pair(pair: Sequence[str], models: Models, option: str = "pair") -> tuple[str, str]:
    """(A, B): two different compared models, A the one expected to be worse. `option`
    names the argument in the error (the CLI's is --pair)."""
    if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(models):
        raise MnistlensError(
            f"{option} needs two different compared models as A,B, got {','.join(pair)!r}; "
            f"compared: {', '.join(models)}"
        )
    return pair[0], pair[1]


def map_faithfulness(models: Models, images, device: Device = "auto") -> dict[str, dict]:
    """Per model: mean deletion AUC of IG and saliency maps, of LRP's where it applies
    (`attribution.why_not`), and of a random ranking."""
    from mnistlens.attribution import why_not
    from mnistlens.faithfulness import score_methods

    result = {}
    for name, (model, _) in models.items():
        methods = ["integrated_gradients", "saliency"]
        methods += ["lrp"] if why_not("lrp", model) is None else []
        scored = score_methods(model, images, methods, n_steps=32, device=device)
        summary = {method: s.summary()["deletion_auc"] for method, (_, s) in scored.items()}
        summary["random"] = next(iter(scored.values()))[1].summary()["random_deletion_auc"]
        result[name] = summary
    return result


def write_plots(report: dict, images, folder: str | Path) -> dict[str, str]:
    """The comparison figures into `folder`; -> title -> path."""
    from mnistlens.comparison import figures as cp
    from mnistlens.plots import save_figure

    drawn = {
        "Accuracy against parameters": cp.plot_accuracy_vs_parameters(report),
        "Accuracy against training time": cp.plot_accuracy_vs_time(report),
        "Accuracy per digit": cp.plot_digit_accuracy(report),
        "The images the models disagree on": cp.plot_disagreements(report, images),
    }
    return {
        title: str(save_figure(fig, Path(folder) / PLOTS[title])) for title, fig in drawn.items()
    }


def pair_figure(
    pair: tuple[str, str], report: dict, models: Models, images, labels, device: Device = "auto"
) -> Figure:
    """Both models' IG maps on the images B gets right and A wrong
    (`maps.where_b_beats_a`); records those images in report["pair_maps"]."""
    from mnistlens.comparison.figures import plot_pair_maps
    from mnistlens.comparison.maps import where_b_beats_a
    from mnistlens.comparison.stats import only_right

    a, b = pair
    found = where_b_beats_a(
        models[a][0],
        models[b][0],
        images,
        labels,
        n_steps=32,
        indices=only_right(report, b, a),
        device=device,
    )
    report["pair_maps"] = {
        "a": a,
        "b": b,
        "n_images": len(found["indices"]),
        "indices": found["indices"].tolist(),
    }
    return plot_pair_maps(found, images, a, b)


def digit_maps_figure(
    models: Models, images, labels, n_images: int = DIGIT_MAP_IMAGES, device: Device = "auto"
) -> Figure:
    """Per model, the mean IG map of each digit over its correctly classified images
    among the first `n_images` test images (`explain.class_mean_maps`), one row per
    model."""
    from mnistlens.explain import class_mean_maps
    from mnistlens.plots import plot_class_maps

    x, y = images[:n_images], labels[:n_images]
    maps = {
        name: class_mean_maps(model, x, y, "integrated_gradients", n_steps=32, device=device)
        for name, (model, _) in models.items()
    }
    title = (
        f"What each model looks at: mean integrated gradients per digit "
        f"(first {n_images:,} test images, correct ones; one scale per row)"
    )
    return plot_class_maps(maps, title)


def stress_for_report(
    models: Models, folder, data_dir=None, device: Device = "auto", limit: int | None = None
) -> dict:
    """What each model tolerates, for the report: every transform on the test images
    (the first `limit`; default all 10k), each neighbouring pair's gaps and their causes
    (`perturb.run`), figures in `folder`."""
    from mnistlens import perturb

    return perturb.run(models, out=folder, data_dir=data_dir, device=device, limit=limit)


def run(
    models: Models,
    *,
    data_dir: str | os.PathLike | None = None,
    faithfulness: bool = False,
    out: str | os.PathLike | None = None,
    maps: bool = False,
    pair: Sequence[str] | None = None,
    report_dir: str | os.PathLike | None = None,
    questions: dict[str, str] | None = None,
    studies: dict | None = None,
    command: str = "mnistlens compare --report",
    digit_map_images: int = DIGIT_MAP_IMAGES,
    faithfulness_every: int = FAITHFULNESS_EVERY,
    stress_images: int | None = None,
    device: Device = "auto",
) -> dict:
    """Compare `models` (name -> (model, metadata), in display order) on MNIST's test set.

    Args:
        data_dir: MNIST (default: as `data.load_mnist` finds it).
        faithfulness: also measure each model's maps (deletion AUC of IG and saliency);
            implied by report_dir.
        out: write the comparison figures (PNG) into this folder.
        maps: with `out`, also draw each model's per-digit mean maps and the pair's maps.
        pair: (A, B), the two models whose maps to set side by side where B is right and
            A wrong (default `stats.default_pair`: the best MLP and the best CNN).
        report_dir: write report_dir/architectures.md and its figures, with what each
            model tolerates (`perturb.run`: stress.json and its figures there too).
        questions: name -> what the model shows, for the report's table (the series').
        studies: which models answer which question, for the report's observations
            (`series.STUDIES`; see `report.observations`).
        command: how the report says it was made.
        digit_map_images: the per-digit mean maps use the first this many test images.
        faithfulness_every: the maps' faithfulness is measured on every this-many-th
            test image.
        stress_images: the report's stress test uses the first this many test images
            (default all).
        device: where the models run (see `mnistlens.device`); results on the CPU.

    -> the report of `stats.compare_models`, plus `faithfulness`, `plots` (title ->
    path), `pair_maps` and `report` (the page's path) where asked.
    """
    from mnistlens.comparison import report as page
    from mnistlens.comparison.stats import compare_models, default_pair
    from mnistlens.data import load_mnist
    from mnistlens.plots import save_figure

    for folder in (out, report_dir):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise MnistlensError(f"{folder} is a file, not a folder; choose another place")
    if (maps or pair) and not (out or report_dir):
        raise MnistlensError("maps and a pair are figures: say where with out= (--out DIR)")
    asked = check_pair(pair, models) if pair else None  # before the minutes of comparing
    images, labels = load_mnist("test", data_dir)
    train_images, train_labels = load_mnist("train", data_dir)
    train = train_images[:10_000], train_labels[:10_000]
    report = compare_models(models, images, labels, *train, device=device)
    if faithfulness or report_dir:
        report["faithfulness"] = map_faithfulness(models, images[::faithfulness_every], device)
    chosen = None  # the pair whose maps are drawn
    if maps or report_dir:
        chosen = asked or default_pair(report)
    elif asked:
        chosen = asked
    drawn: dict[str, Figure] = {}  # the maps' figures, computed once for both folders

    def saved(name: str, folder, draw) -> str:
        if name not in drawn:
            drawn[name] = draw()
        return str(save_figure(drawn[name], Path(folder) / f"{name}.png"))

    def pair_maps():
        return pair_figure(chosen, report, models, images, labels, device)

    def digit_maps():
        return digit_maps_figure(models, images, labels, digit_map_images, device)

    if out:
        report["plots"] = write_plots(report, images, out)
        if chosen is not None and (maps or pair):
            report["plots"]["pair_maps"] = saved("pair_maps", out, pair_maps)
        if maps:
            report["plots"]["digit_maps"] = saved("digit_maps", out, digit_maps)
    if report_dir:
        figures = write_plots(report, images, report_dir)
        figures["What each model looks at, digit by digit"] = saved(
            "digit_maps", report_dir, digit_maps
        )
        if chosen is not None:
            a, b = chosen
            figures[f"What {b} looks at that {a} misses"] = saved(
                "pair_maps", report_dir, pair_maps
            )
        report["stress"] = stress_for_report(models, report_dir, data_dir, device, stress_images)
        text = page.markdown(
            report,
            {title: Path(path).name for title, path in figures.items()},
            command,
            questions,
            report.get("faithfulness"),
            studies,
        )
        report["report"] = str(page.write_report(Path(report_dir) / "architectures.md", text))
    return report
