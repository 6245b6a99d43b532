"""What each `mnistlens` subcommand does: parse nothing, call the library, print.

`cli.py` builds the argument parser; each `cmd_*` here receives its parsed options.
The computing lives in the library modules, so a notebook user can do the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import MnistlensError
from .models import conv_layer_names


def _arch_kwargs(args: argparse.Namespace) -> dict:
    """Turn the architecture options that were given into constructor keyword arguments."""
    kwargs: dict = {}
    if args.hidden is not None:
        kwargs["hidden"] = args.hidden
        if args.arch == "cnn":
            if len(args.hidden) != 1:
                raise MnistlensError(f"cnn takes one --hidden width, got {args.hidden}")
            kwargs["hidden"] = args.hidden[0]
    for name in ("channels", "kernel_size", "dropout"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def cmd_train(args: argparse.Namespace) -> None:
    from .checkpoint import save_checkpoint
    from .models import build
    from .train import TrainConfig, train

    config = TrainConfig(
        arch=args.arch,
        arch_kwargs=_arch_kwargs(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        augment=not args.no_augment,
        seed=args.seed,
        train_subset=args.train_subset,
    )
    config.validate()
    build(config.arch, **config.arch_kwargs)  # fail on bad arch options before loading data
    model, metadata = train(config, data_dir=args.data_dir, progress=not args.quiet)
    metadata["command"] = "mnistlens " + " ".join(sys.argv[1:])
    path = save_checkpoint(args.out, model, config.arch, config.arch_kwargs, metadata)
    print(
        f"test accuracy {metadata['test_accuracy']:.2%} after {metadata['train_seconds']:.0f} s "
        f"of training ({metadata['n_parameters']:,} parameters)"
    )
    print(f"wrote {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from .checkpoint import load_model
    from .data import load_mnist
    from .metrics import evaluate

    model, meta = load_model(args.model)
    images, labels = load_mnist(args.split, args.data_dir)
    report = evaluate(model, images, labels)
    report = {"model": meta["path"], "arch": meta["arch"], "split": args.split, **report}
    if args.plot:
        from .plots import plot_confusion, save_figure

        title = f"{Path(meta['path']).name} on {args.split}: {report['accuracy']:.2%}"
        report["plot"] = str(
            save_figure(plot_confusion(torch.tensor(report["confusion"]), title), args.plot)
        )
    if args.json:
        print(json.dumps(report))
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


def cmd_predict(args: argparse.Namespace) -> None:
    import torch

    from .checkpoint import load_model
    from .data import get_test_image

    model, meta = load_model(args.model)
    image, label = get_test_image(args.index, args.data_dir)
    with torch.inference_mode():
        probs = model(image.unsqueeze(0)).softmax(dim=1)[0]  # (10,)
    top = probs.topk(3)
    result = {
        "index": args.index,
        "label": label,
        "prediction": int(probs.argmax()),
        "probabilities": [round(float(p), 6) for p in probs],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"test image {args.index}: true label {label}, predicted {result['prediction']}")
    print("top 3: " + ", ".join(f"{int(i)} ({float(p):.2%})" for p, i in zip(*top, strict=True)))


def _method_options(name: str, args: argparse.Namespace) -> dict:
    """The command-line options that apply to attribution method `name`."""
    if name == "integrated_gradients":
        return {"baseline": args.baseline, "n_steps": args.steps, "tol": args.tol}
    if name == "deeplift":
        return {"baseline": args.baseline}
    return {}


def cmd_explain(args: argparse.Namespace) -> None:

    from . import attribution as A
    from .checkpoint import load_model
    from .data import get_test_image, load_digit_image, load_mnist
    from .explain import explain
    from .plots import plot_explanation, save_figure

    model, meta = load_model(args.model)
    if args.target is not None and not 0 <= args.target <= 9:
        raise MnistlensError(f"--target must be a digit 0-9, got {args.target}")
    if args.all:
        name = A.resolve_method(args.method or "ig")
        out = Path(args.out or f"{name}_maps.npy")
        if out.suffix != ".npy":
            raise MnistlensError(f"--all writes a .npy file; got --out {out}")
        images, _ = load_mnist("test", args.data_dir)
        maps = A.attribute(
            name, model, images, args.target, progress=True, **_method_options(name, args)
        )
        _save_npy(out, maps[:, 0].numpy())
        print(f"{name} maps for {len(images):,} test images, shape {tuple(maps[:, 0].shape)}")
        print(f"wrote {out}")
        return

    if args.methods:
        methods = [A.resolve_method(m) for m in args.methods.split(",") if m.strip()]
    else:
        has_conv = bool(conv_layer_names(model))
        methods = ["saliency", "integrated_gradients"] + (["grad_cam"] if has_conv else [])
    if args.image:
        image, label, what = load_digit_image(args.image), None, Path(args.image).name
    else:
        image, label = get_test_image(args.index, args.data_dir)
        what = f"test image {args.index}"
    result = explain(
        model,
        image.unsqueeze(0),
        methods,
        args.target,
        **{m: _method_options(m, args) for m in methods},
    )

    probs = result.probabilities[0]
    prediction, target = int(result.predictions[0]), int(result.target[0])
    notes = {}
    numbers: dict[str, dict] = {}
    for name, maps in result.maps.items():
        numbers[name] = {"sum": float(maps.sum()), "max_abs": float(maps.abs().max())}
        if name in result.deltas:
            delta = float(result.deltas[name][0])
            numbers[name]["delta"] = delta
            notes[name] = f"delta {delta:+.2e}"
    stem = f"explain_{args.index}" if args.image is None else f"explain_{Path(args.image).stem}"
    title = (
        f"{what}: "
        + (f"label {label}, " if label is not None else "")
        + f"predicted {prediction} ({float(probs[prediction]):.1%}); explaining {target}"
    )
    fig = plot_explanation(
        image,
        {k: v[0] for k, v in result.maps.items()},
        title,
        notes,
        shared_scale=args.shared_scale,
    )
    png = str(save_figure(fig, args.out or f"{stem}.png"))
    for entry in numbers.values():
        entry["png"] = png

    if args.json:
        print(
            json.dumps(
                {
                    "index": args.index,
                    "image": args.image,
                    "label": label,
                    "prediction": prediction,
                    "target": target,
                    "probabilities": [float(p) for p in probs],
                    "model": meta["path"],
                    "png": png,
                    "methods": numbers,
                }
            )
        )
        return
    top = probs.topk(3)
    print(
        f"{what}: "
        + (f"true label {label}, " if label is not None else "")
        + f"predicted {prediction}"
        + (f", explaining {target}" if target != prediction else "")
    )
    print("top 3: " + ", ".join(f"{int(i)} ({float(p):.2%})" for p, i in zip(*top, strict=True)))
    for name, entry in numbers.items():
        line = f"  {name}: sum {entry['sum']:+.3f}, max |a| {entry['max_abs']:.3g}"
        if "delta" in entry:
            line += f", completeness delta {entry['delta']:+.2e}"
        print(line)
    print(f"wrote {png}")


def cmd_weights(args: argparse.Namespace) -> None:
    import torch

    from . import weights as W
    from .checkpoint import load_model
    from .data import get_test_image
    from .plots import plot_image_grid, save_figure

    model, meta = load_model(args.model)
    name = Path(meta["path"]).name
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
                    maps[:32].clamp(min=0),
                    [str(i) for i in range(32)],
                    f"{layer} feature maps for test image {args.index} "
                    f"(label {label}), first 32 channels, after conv",
                    columns=8,
                    shared_scale=False,
                )
                written.append(save_figure(fig, out))
    elif len(linears) == 1:
        templates = W.linear_templates(model)
        fig = plot_image_grid(
            templates,
            [f"digit {d}" for d in range(10)],
            f"{name}: class templates (red = ink raises the logit)",
            signed=True,
            columns=5,
        )
        written = [save_figure(fig, args.out)]
    else:
        units = W.first_layer_units(model)
        ranked = W.units_by_class(model, per_class=4)
        order = [u for _, us in ranked for u in us]
        titles = [f"{d}: unit {u}" for d, us in ranked for u in us]
        fig = plot_image_grid(
            units[order],
            titles,
            f"{name}: first-layer units that drive each digit most (4 per digit)",
            signed=True,
            columns=8,
            shared_scale=False,
        )
        written = [save_figure(fig, args.out)]
        for digit, us in ranked:
            print(f"digit {digit}: units {', '.join(map(str, us))}")
    for path in written:
        print(f"wrote {path}")


def cmd_units(args: argparse.Namespace) -> None:
    from . import activations as act
    from .checkpoint import load_model
    from .data import load_mnist
    from .plots import plot_class_profile, plot_image_grid, plot_projections, save_figure

    model, meta = load_model(args.model)
    images, labels = load_mnist("test", args.data_dir)
    raw = act.layer_activations(model, images, args.layer, progress=True)
    units = act.unit_activations(raw)  # (N, units)
    name = Path(meta["path"]).name
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


def cmd_visualize(args: argparse.Namespace) -> None:
    import torch

    from .checkpoint import load_model
    from .featureviz import maximize
    from .models import get_layer
    from .plots import plot_image_grid, save_figure

    model, meta = load_model(args.model)
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
        f"{Path(meta['path']).name}: input maximizing {what}",
        columns=1,
    )
    print(
        f"{what}: objective {history[0]:.2f} -> {history[-1]:.2f} in {len(history)} steps; "
        f"the model reads the result as {int(probs.argmax())} ({float(probs.max()):.1%})"
    )
    print(f"wrote {save_figure(fig, args.out)}")


def cmd_measure(args: argparse.Namespace) -> None:
    from . import attribution as A
    from . import faithfulness as F
    from .checkpoint import load_model
    from .data import load_mnist

    model, meta = load_model(args.model)
    if not 1 <= args.n <= 10_000:
        raise MnistlensError(f"--n must be 1 to 10000, got {args.n}")
    methods = [A.resolve_method(m) for m in args.methods.split(",") if m.strip()]
    images = load_mnist("test", args.data_dir)[0][: args.n]
    report, curves = F.compare_methods(model, images, methods, args.randomization)
    result = {"model": meta["path"], "n_images": len(images), "methods": report}
    if args.plot:
        from .plots import plot_perturbation_curves, save_figure

        fig = plot_perturbation_curves(
            curves, f"{Path(meta['path']).name}, {len(images)} test images"
        )
        result["plot"] = str(save_figure(fig, args.plot))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{meta['path']}: {len(images)} test images, explaining the predicted class")
    print(f"{'method':22s} {'deletion':>9s} {'insertion':>9s} {'completeness':>12s}")
    for name, entry in report.items():
        comp = entry.get("completeness_error_median")
        print(
            f"{name:22s} {entry['deletion_auc']:9.3f} {entry['insertion_auc']:9.3f} "
            f"{'' if comp is None else f'{comp:12.4f}'}"
        )
    print("(deletion: lower is better; insertion: higher; a method should beat random)")
    if args.randomization:
        print(
            "rank correlation with the trained model's maps as layers are randomized "
            "(top first; near 1 = the map ignores the weights):"
        )
        for name, entry in report.items():
            if "randomization" in entry:
                cells = ", ".join(f"{k} {v:.2f}" for k, v in entry["randomization"].items())
                print(f"  {name}: {cells}")
    if args.plot:
        print(f"wrote {result['plot']}")


def _save_npy(path: Path, array) -> None:
    import numpy as np

    from .checkpoint import atomic_write

    atomic_write(path, lambda f: np.save(f, array))
