"""`mnistlens evaluate`: accuracy, per-digit accuracy and confusions of a checkpoint."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents, add_json_option, load_model, model_name, print_json


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[parents["model"]],
        help="accuracy, per-digit accuracy, confusions",
        description="Evaluate a checkpoint on a whole split: accuracy, per-digit accuracy, the "
        "most confused digit pairs, and optionally the confusion matrix as a PNG.",
    )
    p.add_argument("--split", choices=["test", "train"], default="test", help="(test)")
    p.add_argument("--plot", metavar="PNG", help="write the confusion matrix here")
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from mnistlens.data import load_mnist
    from mnistlens.metrics import evaluate

    model, meta = load_model(args)
    images, labels = load_mnist(args.split, args.data_dir)
    report = evaluate(model, images, labels)
    report = {
        "model": meta["path"],
        "arch": meta.get("arch", meta.get("format")),
        "split": args.split,
        **report,
    }
    if args.plot:
        from mnistlens.plots import plot_confusion, save_figure

        title = f"{model_name(meta)} on {args.split}: {report['accuracy']:.2%}"
        report["plot"] = str(
            save_figure(plot_confusion(torch.tensor(report["confusion"]), title), args.plot)
        )
    if args.json:
        print_json(report)
        return
    print(
        f"{report['model']} ({report['arch']}) on the {args.split} split "
        f"({report['n_images']:,} images)"
    )
    print(f"accuracy {report['accuracy']:.2%} ({report['n_errors']} errors)")
    print(
        "per digit: "
        + "  ".join(f"{d}:{a:.1%}" for d, a in enumerate(report["per_digit_accuracy"]))
    )
    print(
        "most confused (true -> predicted: count): "
        + ", ".join(f"{t}->{p}: {c}" for t, p, c in report["top_confusions"])
    )
    if args.plot:
        print(f"wrote {report['plot']}")
