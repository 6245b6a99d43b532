"""`mnistlens counterfactual`: the smallest plausible change that changes the answer."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlens.commands._common import (
    Parents,
    add_device_option,
    add_json_option,
    device_of,
    load_model,
    print_json,
    the_digit,
)

DESCRIPTION = """\
What would make the model change its mind? Searches the smallest change of the digit
(test image --index, or your picture with --image) that makes the model say another
class (--to, default its runner-up). Modes: proto (default: the change drawn by the
shipped autoencoder and pulled towards real digits of the target class, so other
models agree), plain (elastic net on the pixels: the least change, often speckle only
this model reads), pertinent-negative (the least ink to add for another class) and
pertinent-positive (the least of the digit's ink that keeps its class). Writes a figure
(original, counterfactual, ink added and removed, probabilities before and after).
Says first whether the picture is digit-like at all (as predict and explain do): a
letter or a scribble gets a warning above the figure and "digit_like" false in --json.
"""

# counterfactual.MODES, spelled out: the command line imports no torch before run()
MODES = ("proto", "plain", "pertinent-negative", "pertinent-positive")


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "counterfactual",
        parents=[parents["model"]],
        help="the smallest plausible change that changes the answer",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mnistlens counterfactual --model cnn.pt --index 42\n"
        "  mnistlens counterfactual --model cnn.pt --index 42 --to 9 --mode plain --json\n"
        "  mnistlens counterfactual --model cnn.pt --image my_digit.png --out cf.png",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="test-set index, 0 to 9999")
    which.add_argument("--image", metavar="FILE", help="your own digit picture (PNG, JPEG)")
    p.add_argument("--to", type=int, metavar="DIGIT", help="the class to reach (its runner-up)")
    p.add_argument("--mode", choices=MODES, default="proto", help="(proto)")
    p.add_argument("--out", metavar="PNG", help="the figure (default counterfactual_<index>.png)")
    add_device_option(p, "search")
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from mnistlens.counterfactual import counterfactuals
    from mnistlens.counterfactual.figures import plot_counterfactual
    from mnistlens.errors import MnistlensError
    from mnistlens.plots import save_figure
    from mnistlens.typicality import digit_like_or_why, verdict_line

    device = device_of(args)
    if args.to is not None and not 0 <= args.to <= 9:
        raise MnistlensError(f"--to takes a digit from 0 to 9, got {args.to}")
    model, _ = load_model(args)
    image, label, what = the_digit(args)
    stem = str(args.index) if args.image is None else Path(args.image).stem
    found = counterfactuals(model, image[None], args.to, mode=args.mode, device=device)
    before = found.probabilities_before[0]  # (10,)
    record = found.record(0)
    verdict = digit_like_or_why(model, image[None], data_dir=args.data_dir, device=device)
    fig = plot_counterfactual(
        found,
        0,
        f"{what}: what would make it a {record['target']}? ({args.mode})",
        warning=verdict.warning(0),
    )
    png = save_figure(fig, args.out or f"counterfactual_{stem}.png")
    result = {
        "index": args.index,
        "image": args.image,
        "label": label,
        **record,
        "probability_before": float(before[record["target"]]),
        "prediction_probability_before": float(before.max()),
        "digit_like": verdict.to_json(0),
        "png": str(png),
    }
    if args.json:
        print_json(result)
        return
    reached = (
        "reached"
        if record["valid"]
        else "NOT reached: the model still says " + str(record["prediction"])
    )
    print(
        f"{what}: the model says {record['before']} ({float(before.max()):.1%}); "
        f"to make it a {record['target']} ({args.mode}): {reached}, "
        f"probability {record['probability']:.1%}"
    )
    print(verdict_line(result["digit_like"]))
    print(
        f"change: L1 {record['l1']:.1f}, {record['l0']} pixels; plausibility (autoencoder error) "
        + ("-" if record["plausibility"] is None else f"{record['plausibility']:.4f}")
    )
    print(f"wrote {png}")
