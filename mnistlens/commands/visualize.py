"""`mnistlens visualize`: the input a class or a hidden unit likes best."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents, load_model, model_name
from mnistlens.errors import MnistlensError


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "visualize",
        parents=[parents["model"]],
        help="the input a class or unit likes best",
        description="Activation maximization: optimize an image from faint noise, with "
        "jitter, blur and total-variation regularization, to maximize a class logit "
        "(--class) or a unit of a layer (--layer and --unit).",
    )
    p.add_argument("--class", dest="digit", type=int, help="digit whose logit to maximize")
    p.add_argument("--layer", help="layer of the unit to maximize (with --unit)")
    p.add_argument("--unit", type=int, help="unit (or conv channel) to maximize")
    p.add_argument("--steps", type=int, default=300, help="optimization steps (300)")
    p.add_argument("--seed", type=int, default=0, help="(0)")
    p.add_argument("--out", default="visualize.png", help="PNG to write (visualize.png)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from mnistlens.internals.featureviz import maximize
    from mnistlens.models import get_layer
    from mnistlens.plots import plot_image_grid, save_figure

    model, meta = load_model(args)
    if (args.digit is None) == (args.unit is None):
        raise MnistlensError("give either --class DIGIT or --layer NAME --unit U")
    if args.unit is not None:
        if not args.layer:
            raise MnistlensError("--unit needs --layer (e.g. --layer fc1 --unit 5)")
        get_layer(model, args.layer)  # lists the valid layers if the name is wrong
        image, history = maximize(model, args.unit, args.layer, steps=args.steps, seed=args.seed)
        what = f"{args.layer} unit {args.unit}"
    else:
        image, history = maximize(model, args.digit, steps=args.steps, seed=args.seed)
        what = f"class {args.digit}"
    with torch.no_grad():
        probs = model(image.unsqueeze(0)).softmax(dim=1)[0]
    fig = plot_image_grid(
        image,
        [f"{what}: P({int(probs.argmax())}) = {float(probs.max()):.2f}"],
        f"{model_name(meta)}: input maximizing {what}",
        columns=1,
    )
    print(
        f"{what}: objective {history[0]:.2f} -> {history[-1]:.2f} in {len(history)} steps; "
        f"the model reads the result as {int(probs.argmax())} ({float(probs.max()):.1%})"
    )
    print(f"wrote {save_figure(fig, args.out)}")
