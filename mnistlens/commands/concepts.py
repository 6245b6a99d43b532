"""`mnistlens concepts`: does a concept (a closed loop, a bar, ...) push the model
towards a class? TCAV scores, tested against random."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import (
    Parents,
    add_device_option,
    add_json_option,
    device_of,
    load_model,
    model_name,
    print_json,
    split_list,
)

DESCRIPTION = """\
Testing with Concept Activation Vectors (TCAV, Kim et al. 2018). A concept is a set of
pictures: built-in ones are drawn by code (closed_loop, horizontal_bar, vertical_stroke,
diagonal_stroke, open_curve, thick_stroke, thin_stroke; random position, size and
thickness), or your own from a folder (--folder). At each layer, a concept activation
vector (CAV) separates the concept's activations from random strokes'; the TCAV score of
a class is the share of its test images whose logit grows along the CAV. Each concept
gets --runs CAVs against different random sets, compared by a two-sided t-test with
random-vs-random CAVs, Holm-corrected over the classes: a concept pushes towards a class,
against it, or is not significant.
"""


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "concepts",
        parents=[parents["model"]],
        help="does a concept (closed loop, bar, ...) push towards a class? (TCAV)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  mnistlens concepts --model cnn.pt\n"
        "  mnistlens concepts --model cnn.pt --concepts closed_loop,vertical_stroke --fast\n"
        "  mnistlens concepts --model cnn.pt --folder my_loops/ --layer relu3 --out tcav/",
    )
    p.add_argument(
        "--concepts",
        metavar="NAME,...",
        help="built-in concepts (default: all seven, or none when --folder is given)",
    )
    p.add_argument(
        "--folder",
        metavar="DIR",
        action="append",
        help="a folder of pictures of your own concept, named after the folder (repeatable)",
    )
    p.add_argument(
        "--layer",
        metavar="NAME,...",
        help="layers to read (default: the last conv block and the last hidden layer)",
    )
    p.add_argument("--runs", type=int, default=10, help="random runs per concept (10)")
    p.add_argument(
        "--fast", action="store_true", help="mean-difference CAVs instead of a linear SVM's"
    )
    p.add_argument(
        "--random",
        choices=["strokes", "digits"],
        default="strokes",
        help="random counterexamples: random strokes or random training digits (strokes)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate (0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of every drawn set (0)")
    p.add_argument("--out", metavar="DIR", help="write concepts.json and the figures (PNG) here")
    add_json_option(p)
    add_device_option(p, "compute the activations and gradients")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mnistlens import concepts
    from mnistlens.errors import MnistlensError

    device = device_of(args)
    if args.runs < 2:
        raise MnistlensError(f"--runs {args.runs}: TCAV needs at least 2 (10 advised)")
    if not 0 < args.alpha < 1:
        raise MnistlensError(f"--alpha {args.alpha}: give a value between 0 and 1, e.g. 0.05")
    model, meta = load_model(args)
    result, sets = concepts.run(
        model,
        split_list(args.concepts) if args.concepts else None,
        folders=args.folder,
        layers=split_list(args.layer) if args.layer else None,
        runs=args.runs,
        fast=args.fast,
        random=args.random,
        alpha=args.alpha,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=not args.json,
        device=device,
    )
    report = {
        "model": model_name(meta),
        "method": result.method,
        "alpha": result.alpha,
        "correction": "holm over the classes of each concept and layer",
        "test": "two-sided Welch t-test against random-vs-random CAVs",
        **result.settings,
        "layers": result.layers,
        "concepts": result.concepts,
        "rows": result.table(),
    }
    if args.out:
        written = _write(result, sets, report, Path(args.out), model_name(meta))
    if args.json:
        print_json(report)
        return
    print(f"{model_name(meta)}: TCAV, {result.settings['runs']} runs, {result.method} CAVs")
    for concept in result.concepts:
        for layer in result.layers:
            towards = result.significant_classes(concept, layer, "towards")
            against = result.significant_classes(concept, layer, "against")
            c, li = result.concepts.index(concept), result.layers.index(layer)
            scores = " ".join(f"{s:.2f}" for s in result.scores[c, li].mean(-1))
            print(
                f"  {concept:16s} {layer:10s} towards {_digits(towards):14s} "
                f"against {_digits(against):14s} scores {scores}"
            )
    if args.out:
        for path in written:
            print(f"wrote {path}")


def _digits(classes: list[int]) -> str:
    return ",".join(map(str, classes)) or "-"


def _write(result, sets, report: dict, out, name: str) -> list:
    import json

    from mnistlens.concepts.figures import plot_examples, plot_scores
    from mnistlens.io import atomic_write
    from mnistlens.plots import save_figure

    text = json.dumps(report, indent=1)
    written = [atomic_write(out / "concepts.json", lambda f: f.write(text.encode()))]
    written.append(save_figure(plot_scores(result, f"{name}: TCAV scores"), out / "tcav.png"))
    written.append(save_figure(plot_examples(sets), out / "concept_images.png"))
    return written
