"""`mnistlens compare`: which model is better, significantly or not, and how they differ."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlens.commands._common import Parents, add_json_option, print_json, split_list
from mnistlens.errors import MnistlensError

DESCRIPTION = """\
Compare models on the full 10,000-image test set: accuracy with a 95% Wilson interval,
parameters, training time, inference speed, calibration (ECE), per-digit accuracy and
the train-test gap (on the first 10,000 training images); for each pair, how often they
disagree and McNemar's exact test of whether one is significantly better; and the test
images they disagree on most confidently. With --faithfulness (implied by --report),
also how faithful each model's maps are (deletion AUC of IG and saliency vs random).
With --maps (implied by --report), what each model looks at: per-digit mean IG maps,
one row per model, and for a pair (--pair A,B, else the best MLP and the best CNN) both
models' maps on the images B gets right and A gets wrong.
"""

DIGIT_MAP_IMAGES = 500  # ~50 per digit: the mean maps settle, 13 models take ~1 min

PLOTS = {
    "Accuracy against parameters": "accuracy_vs_parameters.png",
    "Accuracy against training time": "accuracy_vs_time.png",
    "Accuracy per digit": "digit_accuracy.png",
    "The images the models disagree on": "disagreements.png",
}


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "compare",
        parents=[parents["data"]],
        help="compare models: accuracy, significance, disagreements",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mnistlens compare --models linear.pt,mlp.pt,cnn.pt\n"
        "  mnistlens compare --series --out compare/\n"
        "  mnistlens compare --series --report docs/",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--models", metavar="A,B,...", help="two or more model files or names")
    which.add_argument("--series", action="store_true", help="every model of the series")
    p.add_argument(
        "--series-dir", metavar="DIR", help="the series' checkpoints (checkpoints/series)"
    )
    p.add_argument("--out", metavar="DIR", help="write the comparison plots (PNG) here")
    p.add_argument(
        "--report", metavar="DIR", help="write DIR/architectures.md and its figures (the report)"
    )
    p.add_argument(
        "--faithfulness", action="store_true", help="also measure each model's maps (200 images)"
    )
    p.add_argument(
        "--maps",
        action="store_true",
        help="draw each model's per-digit mean maps and the pair's maps into --out",
    )
    p.add_argument(
        "--pair",
        metavar="A,B",
        help="the two models whose maps to set side by side where B is right and A wrong",
    )
    add_json_option(p)
    p.set_defaults(run=run)


def load_models(args: argparse.Namespace) -> dict:
    """name -> (model, meta), in the order given (or the series' order)."""
    from mnistlens.loading import load

    if args.series:
        from mnistlens import series

        return series.load_series(args.series_dir)
    paths = split_list(args.models)
    if len(paths) < 2:
        raise MnistlensError(f"compare needs two or more models, got {len(paths)}: {args.models}")
    models = {}
    for path in paths:
        name = Path(path).stem
        if name in models:
            raise MnistlensError(f"{path}: two models named {name!r}; rename one file")
        models[name] = load(path, data_dir=args.data_dir)
    return models


def map_faithfulness(models: dict, images) -> dict[str, dict[str, float]]:
    """Per model: mean deletion AUC of IG and saliency maps and of a random ranking."""
    from mnistlens.faithfulness import score_methods

    result = {}
    for name, (model, _) in models.items():
        scored = score_methods(model, images, ["integrated_gradients", "saliency"], n_steps=32)
        summary = {method: s.summary()["deletion_auc"] for method, (_, s) in scored.items()}
        summary["random"] = next(iter(scored.values()))[1].summary()["random_deletion_auc"]
        result[name] = summary
    return result


def write_plots(report: dict, images, folder: str | Path) -> dict[str, str]:
    """The comparison figures into `folder`; -> title -> path."""
    from mnistlens.comparison import figures as cp
    from mnistlens.plots import save_figure

    figures = {
        "Accuracy against parameters": cp.plot_accuracy_vs_parameters(report),
        "Accuracy against training time": cp.plot_accuracy_vs_time(report),
        "Accuracy per digit": cp.plot_digit_accuracy(report),
        "The images the models disagree on": cp.plot_disagreements(report, images),
    }
    return {
        title: str(save_figure(fig, Path(folder) / PLOTS[title])) for title, fig in figures.items()
    }


def asked_pair(args: argparse.Namespace, models: dict) -> tuple[str, str] | None:
    """--pair A,B checked against the compared models (None without --pair)."""
    if not args.pair:
        return None
    pair = split_list(args.pair)
    if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(models):
        raise MnistlensError(
            f"--pair needs two different compared models as A,B, got {args.pair!r}; "
            f"compared: {', '.join(models)}"
        )
    return pair[0], pair[1]


def pair_figure(
    pair: tuple[str, str], report: dict, models: dict, images, labels, folder: str | Path
) -> str:
    """Both models' IG maps on the images B gets right and A wrong
    (`maps.where_b_beats_a`), saved in `folder`; -> its path."""
    from mnistlens.comparison.figures import plot_pair_maps
    from mnistlens.comparison.maps import where_b_beats_a
    from mnistlens.comparison.stats import only_right
    from mnistlens.plots import save_figure

    a, b = pair
    found = where_b_beats_a(
        models[a][0], models[b][0], images, labels, n_steps=32, indices=only_right(report, b, a)
    )
    report["pair_maps"] = {
        "a": a,
        "b": b,
        "n_images": len(found["indices"]),
        "indices": found["indices"].tolist(),
    }
    fig = plot_pair_maps(found, images, a, b)
    return str(save_figure(fig, Path(folder) / "pair_maps.png"))


def digit_maps_figure(models: dict, images, labels, folder: str | Path) -> str:
    """Per model, the mean IG map of each digit over its correctly classified images
    among the first DIGIT_MAP_IMAGES test images (`explain.class_mean_maps`), one row
    per model; saved in `folder` as digit_maps.png -> its path."""
    from mnistlens.explain import class_mean_maps
    from mnistlens.plots import plot_class_maps, save_figure

    x, y = images[:DIGIT_MAP_IMAGES], labels[:DIGIT_MAP_IMAGES]
    maps = {
        name: class_mean_maps(model, x, y, "integrated_gradients", n_steps=32)
        for name, (model, _) in models.items()
    }
    title = (
        f"What each model looks at: mean integrated gradients per digit "
        f"(first {DIGIT_MAP_IMAGES:,} test images, correct ones; one scale per row)"
    )
    return str(save_figure(plot_class_maps(maps, title), Path(folder) / "digit_maps.png"))


def run(args: argparse.Namespace) -> None:
    from mnistlens.comparison.stats import compare_models, default_pair
    from mnistlens.data import load_mnist

    for folder in (args.out, args.report):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise MnistlensError(f"{folder} is a file, not a folder; choose another place")
    if (args.maps or args.pair) and not (args.out or args.report):
        raise MnistlensError("--maps and --pair draw figures: say where with --out DIR")
    models = load_models(args)
    asked = asked_pair(args, models)  # before the comparison: a typo costs no minutes
    images, labels = load_mnist("test", args.data_dir)
    train_images, train_labels = load_mnist("train", args.data_dir)
    report = compare_models(models, images, labels, train_images[:10_000], train_labels[:10_000])
    if args.faithfulness or args.report:
        report["faithfulness"] = map_faithfulness(models, images[::50])
    pair = None
    if args.maps or args.pair or args.report:
        pair = asked or default_pair(report)
    if args.out:
        report["plots"] = write_plots(report, images, args.out)
        if args.maps or args.pair:
            if pair is not None:
                report["plots"]["pair_maps"] = pair_figure(
                    pair, report, models, images, labels, args.out
                )
            if args.maps:
                report["plots"]["digit_maps"] = digit_maps_figure(models, images, labels, args.out)
    if args.report:
        from mnistlens.comparison import report as page

        questions = {}
        if args.series:
            from mnistlens import series

            questions = {name: series.get_member(name).question for name in models}
        figures = write_plots(report, images, args.report)
        figures["What each model looks at, digit by digit"] = digit_maps_figure(
            models, images, labels, args.report
        )
        if pair is not None:
            a, b = pair
            figures[f"What {b} looks at that {a} misses"] = pair_figure(
                pair, report, models, images, labels, args.report
            )
        command = "mnistlens " + " ".join(getattr(args, "argv", []) or ["compare", "--report"])
        text = page.markdown(
            report,
            {title: Path(path).name for title, path in figures.items()},
            command,
            questions,
            report.get("faithfulness"),
        )
        report["report"] = str(page.write_report(Path(args.report) / "architectures.md", text))
    if args.json:
        print_json(report)
        return
    print(f"{'model':16s} {'accuracy':>9s} {'95% CI':>17s} {'params':>10s} {'ECE':>7s}")
    for m in report["models"]:
        lo, hi = m["accuracy_ci95"]
        print(
            f"{m['name']:16s} {m['accuracy']:9.2%} {lo:8.2%}-{hi:7.2%} "
            f"{m['parameters']:10,d} {m['ece']:7.4f}"
        )
    names = [m["name"] for m in report["models"]]
    print("neighbours (McNemar's exact test; p < 0.05 = significantly different):")
    for a, b in zip(names, names[1:], strict=False):
        pair = next(p for p in report["pairs"] if {p["a"], p["b"]} == {a, b})
        print(
            f"  {a} vs {b}: {pair['disagreements']} disagreements, {pair['a_only_right']} "
            f"only {pair['a']} right, {pair['b_only_right']} only {pair['b']} right, "
            f"p = {pair['mcnemar_p']:.2g}"
        )
    print(f"{report['n_disagreements']} test images get more than one answer")
    for path in list(report.get("plots", {}).values()) + [report.get("report")]:
        if path:
            print(f"wrote {path}")
