"""`mnistlens compare`: which model is better, significantly or not, and how they differ."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import (
    Parents,
    add_device_option,
    add_json_option,
    add_models_options,
    device_of,
    print_json,
    split_list,
)
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
    add_models_options(p, "two or more")
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
    add_device_option(p, "run the models and compute the maps")
    add_json_option(p)
    p.set_defaults(run=run)


def load_models(args: argparse.Namespace, at_least: int = 2) -> dict:
    """name -> (model, meta), in the order given (or the series' order); --models names
    `at_least` of them."""
    if args.series:
        from mnistlens import series

        return series.load_series(args.series_dir)
    from mnistlens.comparison import load_models

    return load_models(split_list(args.models), data_dir=args.data_dir, at_least=at_least)


def run(args: argparse.Namespace) -> None:
    from mnistlens.comparison import check_pair
    from mnistlens.comparison import run as compare

    if (args.maps or args.pair) and not (args.out or args.report):
        raise MnistlensError("--maps and --pair draw figures: say where with --out DIR")
    device = device_of(args)  # CUDA asked for and absent: fail before loading anything
    models = load_models(args)
    if args.pair:  # named now: the comparison itself takes minutes on the series
        check_pair(split_list(args.pair), models, option="--pair")
    questions = studies = None
    if args.series:
        from mnistlens import series

        questions = {name: series.get_member(name).question for name in models}
        studies = series.STUDIES
    report = compare(
        models,
        data_dir=args.data_dir,
        faithfulness=args.faithfulness,
        out=args.out,
        maps=args.maps,
        pair=split_list(args.pair) if args.pair else None,
        report_dir=args.report,
        questions=questions,
        studies=studies,
        command="mnistlens " + " ".join(getattr(args, "argv", []) or ["compare", "--report"]),
        device=device,
    )
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
