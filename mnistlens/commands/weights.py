"""`mnistlens weights`: pictures of what the weights learned."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlens.commands._common import Parents, load_model, model_name


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "weights",
        parents=[parents["model"]],
        help="pictures of what the weights learned",
        description="linear: the 10 class templates (signed). mlp: first-layer units as "
        "28x28 images, for each digit the units that drive it most (through the outgoing "
        "weights). cnn: first-layer filters, and with --index each conv layer's feature maps "
        "for that test image.",
    )
    p.add_argument("--index", type=int, help="cnn: also show feature maps for this test image")
    p.add_argument("--out", default="weights.png", help="PNG to write (weights.png)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from mnistlens.data import get_test_image
    from mnistlens.internals import weights as W
    from mnistlens.models import conv_layer_names
    from mnistlens.plots import plot_image_grid, save_figure

    model, meta = load_model(args)
    name = model_name(meta)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    has_conv = bool(conv_layer_names(model))
    if has_conv:
        filters = W.conv_filters(model)
        fig = plot_image_grid(
            filters,
            [str(i) for i in range(len(filters))],
            f"{name}: first-layer filters",
            signed=True,
            columns=8,
        )
        written = [save_figure(fig, args.out)]
        if args.index is not None:
            image, label = get_test_image(args.index, args.data_dir)
            for layer, maps in W.feature_maps(model, image).items():
                out = Path(args.out).with_name(f"{Path(args.out).stem}_{layer}.png")
                fig = plot_image_grid(
                    maps[:32],
                    [str(i) for i in range(32)],
                    f"{layer} feature maps for test image {args.index} "
                    f"(label {label}), first 32 channels, after the stage's ReLU",
                    columns=8,
                    shared_scale=False,
                )
                written.append(save_figure(fig, out))
    elif len(linears) == 1:
        templates = W.linear_templates(model)
        quality = W.template_quality(model)
        caption = (
            f"{quality['border_energy']:.0%} of the weight energy on the 4-pixel border, "
            f"correlation {quality['correlation']:.2f} with the class-mean contrast"
        )
        fig = plot_image_grid(
            templates,
            [f"digit {d}" for d in range(10)],
            f"{name}: class templates (red = ink raises the logit)\n{caption}",
            signed=True,
            columns=5,
        )
        written = [save_figure(fig, args.out)]
        print(f"templates: {caption}")
    else:
        units = W.first_layer_units(model)
        ranked = W.units_by_class(model, per_class=4)
        order = [u for _, us in ranked for u in us]
        border = W.unit_border_energy(model)  # (units,)
        titles = [f"{d}: unit {u} ({border[u]:.0%} border)" for d, us in ranked for u in us]
        fig = plot_image_grid(
            units[order],
            titles,
            f"{name}: first-layer units that drive each digit most (4 per digit); "
            f"all units: {float(border.mean()):.0%} of weight energy on the 4-pixel border "
            "(49% if spread evenly)",
            signed=True,
            columns=8,
            shared_scale=False,
        )
        written = [save_figure(fig, args.out)]
        for digit, us in ranked:
            print(f"digit {digit}: units {', '.join(map(str, us))}")
        print(
            f"first-layer units: mean {float(border.mean()):.0%} of their weight energy on the "
            "4-pixel border (49% if spread evenly)"
        )
    for path in written:
        print(f"wrote {path}")
