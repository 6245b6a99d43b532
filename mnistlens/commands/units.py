"""`mnistlens units`: what hidden units respond to, over the test set."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents, load_model, model_name


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "units",
        parents=[parents["model"]],
        help="what hidden units respond to",
        description="Activations of a layer over the test set. With --unit: the test images "
        "that excite that unit most. Without: the per-digit mean activation of the most "
        "class-selective units, and a PCA of the layer coloured by digit (--pca-out).",
    )
    p.add_argument("--layer", required=True, help="layer name, e.g. fc1, relu2, conv1")
    p.add_argument("--unit", type=int, help="unit (or conv channel) to show top images for")
    p.add_argument("--top", type=int, default=16, help="how many images or units (16)")
    p.add_argument("--out", default="units.png", help="PNG to write (units.png)")
    p.add_argument("--pca-out", help="also write a PCA scatter of this layer here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from mnistlens.data import load_mnist
    from mnistlens.internals import activations as act
    from mnistlens.plots import plot_class_profile, plot_image_grid, plot_projections, save_figure

    model, meta = load_model(args)
    images, labels = load_mnist("test", args.data_dir)
    raw = act.layer_activations(model, images, args.layer, progress=True)
    units = act.unit_activations(raw)  # (N, units)
    name = model_name(meta)
    if args.unit is not None:
        indices, values = act.top_images(units, args.unit, args.top)
        titles = [
            f"#{int(i)} ({int(labels[i])}) {float(v):.2f}"
            for i, v in zip(indices, values, strict=True)
        ]
        fig = plot_image_grid(
            images[indices, 0],
            titles,
            f"{name} {args.layer} unit {args.unit}: top {len(indices)} test images",
            columns=8,
        )
        if float(values.max()) <= 0:
            print(
                f"note: {args.layer} unit {args.unit} is never positive on the test set "
                "(a dead unit); its top images are arbitrary"
            )
        print(f"{args.layer} unit {args.unit}: top test images (index, label, activation):")
        for i, v in zip(indices, values, strict=True):
            print(f"  {int(i):5d}  {int(labels[i])}  {float(v):.3f}")
    else:
        profile = act.class_profile(units, labels)
        chosen = act.most_selective(profile, args.top)
        fig = plot_class_profile(
            profile, [u for u, _, _ in chosen], f"{name} {args.layer}: per-digit mean activation"
        )
        print(
            f"{args.layer}: {units.shape[1]} units; most class-selective "
            "(unit, preferred digit, selectivity):"
        )
        for unit, digit, value in chosen:
            print(f"  {unit:4d}  {digit}  {value:.3f}")
    print(f"wrote {save_figure(fig, args.out)}")
    if args.pca_out:
        sample = images[:2000]
        projection = act.projections_by_layer(model, sample, extra=[args.layer])
        fig = plot_projections(
            projection, labels[:2000], f"{name}: PCA of 2,000 test images, layer by layer"
        )
        print(f"wrote {save_figure(fig, args.pca_out)}")
