"""The `mnistlens` command: a thin shell over the library.

Each subcommand parses its options, calls library functions, and prints. Problems a
user can fix (bad option, missing data, unknown model, untrusted file) end with a
one-line `mnistlens: error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import MnistlensError

DESCRIPTION = """\
mnistlens opens the black box of MNIST classifiers: it trains reference networks,
explains their predictions and measures the explanations.

Images follow one convention everywhere: (N, 1, 28, 28) float32 in [0, 1], white
digit on black. MNIST is read from --data-dir, else $MNISTLENS_DATA, else
~/.cache/mnistlens (downloaded there when online). A model is a checkpoint path or
the name of a shipped one (linear.pt, mlp.pt, cnn.pt).
"""

EPILOG = """\
examples:
  mnistlens evaluate --model cnn.pt --plot confusion.png
  mnistlens predict --model cnn.pt --index 42
  mnistlens explain --model cnn.pt --index 42 --methods saliency,ig,gradcam
  mnistlens explain --model cnn.pt --image my_digit.png
  mnistlens weights --model linear.pt --out w.png
  mnistlens units --model cnn.pt --layer fc1 --unit 5 --top 16 --out units.png
  mnistlens visualize --model cnn.pt --class 3 --out dream3.png
  mnistlens measure --model cnn.pt --methods saliency,ig,gradcam --plot curves.png
  mnistlens train --arch cnn --epochs 8 --seed 0 --out checkpoints/cnn.pt

Run `mnistlens COMMAND --help` for each command's options.
Exit codes: 0 success, 2 bad input (message on stderr), 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like our other errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 32,64, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mnistlens",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mnistlens {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help="torchvision root holding MNIST/raw/ (default: $MNISTLENS_DATA or the user cache)",
    )
    with_model = argparse.ArgumentParser(add_help=False, parents=[common])
    with_model.add_argument(
        "--model", required=True, help="checkpoint path or shipped name (linear.pt, mlp.pt, cnn.pt)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a reference model and write a checkpoint",
        description="Train a model on the 60,000 training images (with a progress bar), "
        "report its accuracy on the 10,000 test images, and write a checkpoint atomically. "
        "The checkpoint records the arch, hyper-parameters, seed, data checksums, accuracy, "
        "training time and versions.",
    )
    p.add_argument("--arch", required=True, help="architecture name: linear, mlp or cnn")
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint file to write")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (5)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak one-cycle learning rate (3e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (1e-4)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="(0)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw (0)")
    p.add_argument("--no-augment", action="store_true", help="no random shift/rotate/scale")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on the first N images")
    p.add_argument(
        "--hidden",
        type=_int_list,
        metavar="W[,W...]",
        help="hidden widths: mlp '512,256'; cnn one width, e.g. '128'",
    )
    p.add_argument(
        "--channels",
        type=_int_list,
        metavar="C[,C...]",
        help="cnn conv channels per stage, e.g. '32,64'",
    )
    p.add_argument("--kernel-size", type=int, help="cnn conv kernel size (odd)")
    p.add_argument("--dropout", type=float, help="dropout probability (mlp, cnn)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser(
        "evaluate",
        parents=[with_model],
        help="accuracy, per-digit accuracy, confusions",
        description="Evaluate a checkpoint on a whole split: accuracy, per-digit accuracy, the "
        "most confused digit pairs, and optionally the confusion matrix as a PNG.",
    )
    p.add_argument("--split", choices=["test", "train"], default="test", help="(test)")
    p.add_argument("--plot", metavar="PNG", help="write the confusion matrix here")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        parents=[with_model],
        help="classify one test image",
        description="Classify MNIST test image INDEX: true label, prediction, top-3 probabilities.",
    )
    p.add_argument("--index", type=int, required=True, help="test-set index, 0 to 9999")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser(
        "explain",
        parents=[with_model],
        help="attribution maps for one digit (or all)",
        description="Explain why the model labels a digit as it does: attribution maps side "
        "by side (a PNG), the prediction and top-3 probabilities, and the completeness error "
        "(delta) of integrated gradients. The digit is test image --index, or your own "
        "picture with --image (fitted into 28x28 as MNIST was made). With --all, one "
        "method's maps for the whole test set go into a .npy file.",
        epilog="methods: saliency, input_x_gradient (ixg), integrated_gradients (ig), "
        "smoothgrad (sg), deeplift (dl), gradient_shap (shap), occlusion, grad_cam (gradcam), "
        "guided_backprop (gbp)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="test-set index, 0 to 9999")
    which.add_argument("--image", metavar="FILE", help="your own digit picture (PNG, JPEG)")
    which.add_argument("--all", action="store_true", help="every test image (needs --method)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (default: saliency,ig, and grad_cam for CNNs)",
    )
    p.add_argument("--method", help="the one method for --all (default ig)")
    p.add_argument("--target", type=int, help="explain this class instead of the prediction")
    p.add_argument(
        "--baseline",
        default="black",
        help="IG/DeepLIFT baseline: black, mean, blur or noise (black)",
    )
    p.add_argument("--steps", type=int, default=50, help="integration steps for IG (50)")
    p.add_argument(
        "--tol",
        type=float,
        help="IG to a completeness tolerance instead of fixed steps, e.g. 0.01 (adaptive)",
    )
    p.add_argument("--shared-scale", action="store_true", help="one colour scale for all maps")
    p.add_argument("--out", help="PNG to write (default explain_<index>.png); .npy with --all")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser(
        "weights",
        parents=[with_model],
        help="pictures of what the weights learned",
        description="linear: the 10 class templates (signed). mlp: first-layer units as "
        "28x28 images, for each digit the units that drive it most (through the outgoing "
        "weights). cnn: first-layer filters, and with --index each conv layer's feature maps "
        "for that test image.",
    )
    p.add_argument("--index", type=int, help="cnn: also show feature maps for this test image")
    p.add_argument("--out", default="weights.png", help="PNG to write (weights.png)")
    p.set_defaults(run=cmd_weights)

    p = sub.add_parser(
        "units",
        parents=[with_model],
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
    p.set_defaults(run=cmd_units)

    p = sub.add_parser(
        "visualize",
        parents=[with_model],
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
    p.set_defaults(run=cmd_visualize)

    p = sub.add_parser(
        "measure",
        parents=[with_model],
        help="how faithful each attribution method is",
        description="Measure explanations on the first N test images: deletion and insertion "
        "areas (against a random pixel ranking), the completeness error, and with "
        "--randomization the cascading model-randomization sanity check.",
    )
    p.add_argument(
        "--methods",
        default="saliency,ig,ixg,gradcam,gbp",
        help="comma-separated methods (saliency,ig,ixg,gradcam,gbp)",
    )
    p.add_argument("--n", type=int, default=200, help="test images to measure on (200)")
    p.add_argument(
        "--randomization",
        action="store_true",
        help="also run the model-randomization check (on 20 images)",
    )
    p.add_argument("--plot", metavar="PNG", help="write the mean deletion/insertion curves")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=cmd_measure)
    return parser


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
    import torch

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
        has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
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
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
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
    target = A.predict(model, images).argmax(dim=1)
    report: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    for name in ["random", *methods]:
        maps = (
            F.random_maps(images) if name == "random" else A.attribute(name, model, images, target)
        )
        curves[name] = {
            mode: F.perturbation_curve(model, images, maps, target, mode)
            for mode in ("deletion", "insertion")
        }
        entry = {
            f"{mode}_auc": float(F.area_under_curve(c).mean()) for mode, c in curves[name].items()
        }
        if name != "random":
            entry["completeness_error_median"] = float(
                F.completeness_error(model, images, maps, target).median()
            )
            if args.randomization:
                entry["randomization"] = F.randomization_check(
                    model, images[:20], name, target[:20]
                )
        report[name] = entry
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mnistlens` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except MnistlensError as err:
        print(f"mnistlens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnistlens: interrupted", file=sys.stderr)
        return 130
    return 0
