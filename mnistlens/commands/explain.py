"""`mnistlens explain`: attribution maps for one digit (a PNG), or one method for all."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from mnistlens.commands._common import (
    Parents,
    add_device_option,
    add_json_option,
    device_of,
    load_model,
    print_json,
    resolve_methods,
    split_list,
    the_digit,
    top3_line,
)
from mnistlens.errors import MnistlensError
from mnistlens.io import save_npy

# Written out, not read from the registry, so that --help needs no torch; a test
# checks that it names every registered method and alias.
EPILOG = (
    "methods: saliency, input_x_gradient (ixg), integrated_gradients (ig), "
    "smoothgrad (sg), deeplift (dl), gradient_shap (shap), occlusion, grad_cam (gradcam), "
    "grad_cam_x_input (gradcam_x_input, gcxi), guided_backprop (gbp), "
    "lrp (layerwise_relevance)"
)


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "explain",
        parents=[parents["model"]],
        help="attribution maps for one digit (or all)",
        description="Explain why the model labels a digit as it does: attribution maps side "
        "by side (a PNG), the prediction and top-3 probabilities, and under each map how "
        "faithful it is (deletion area against a random ranking, completeness error where "
        "the method claims completeness). The digit is test image --index, or your own "
        "picture with --image (fitted into 28x28 as MNIST was made). With --all, one "
        "method's maps for the whole test set go into a .npy file. With --model a.pt,b.pt,... "
        "the digit goes through several models: a models x methods grid, one colour scale "
        "per method, so the maps compare.",
        epilog=EPILOG,
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
    p.add_argument(
        "--force", action="store_true", help="with --all: overwrite the .npy if it exists"
    )
    add_device_option(p, "compute the maps and their scores")
    add_json_option(p)
    p.set_defaults(run=run)


def _method_options(name: str, args: argparse.Namespace) -> dict:
    """Those of --baseline, --steps, --tol, --data-dir that method `name` takes (the
    registry knows which)."""
    from mnistlens import attribution

    return attribution.method_options(
        name, baseline=args.baseline, n_steps=args.steps, tol=args.tol, data_dir=args.data_dir
    )


def _explain_all(model, args: argparse.Namespace, device) -> None:
    """One method's maps for the 10,000 test images, into a .npy file (N, 28, 28)."""
    from mnistlens import attribution
    from mnistlens.data import load_mnist

    name = attribution.resolve_method(args.method or "ig")
    out = Path(args.out or f"{name}_maps.npy")
    if out.suffix != ".npy":
        raise MnistlensError(f"--all writes a .npy file; got --out {out}")
    # The whole test set's maps can take minutes to hours (IG): never lose them silently.
    if out.exists() and not args.force:
        raise MnistlensError(
            f"{out} exists; pass --force to overwrite it (or choose another --out)"
        )
    images, _ = load_mnist("test", args.data_dir)
    maps = attribution.attribute(
        name,
        model,
        images,
        args.target,
        progress=True,
        device=device,
        **_method_options(name, args),
    )
    save_npy(out, maps[:, 0].numpy())
    print(f"{name} maps for {len(images):,} test images, shape {tuple(maps[:, 0].shape)}")
    print(f"wrote {out}")


def _explain_models(args: argparse.Namespace) -> None:
    """--model a.pt,b.pt,...: one digit through several models, a models x methods grid."""
    from mnistlens.comparison.figures import plot_model_grid
    from mnistlens.comparison.maps import explain_models
    from mnistlens.loading import load
    from mnistlens.plots import save_figure
    from mnistlens.typicality import digit_like_or_why

    device = device_of(args)  # CUDA asked for and absent: fail before loading anything
    paths = split_list(args.model)
    models = {Path(p).stem: load(p, data_dir=args.data_dir)[0] for p in paths}
    methods = resolve_methods(args.methods or "saliency,ig,gradcam")
    image, label, what = the_digit(args)
    results = explain_models(
        models,
        image.unsqueeze(0),
        methods,
        args.target,
        device=device,
        **{m: _method_options(m, args) for m in methods},
    )
    shown = [m for m in methods if all(m in r.maps for r in results.values())]
    if not shown:
        raise MnistlensError(f"none of {', '.join(methods)} applies to every model given")
    titles, numbers = {}, {}
    for name, result in results.items():
        prediction = int(result.predictions[0])
        probability = float(result.probabilities[0, prediction])
        titles[name] = f"{name}\npredicts {prediction} ({probability:.0%})"
        numbers[name] = {
            "prediction": prediction,
            "probabilities": [float(p) for p in result.probabilities[0]],
            "methods": {m: result.scores[m].image(0) for m in shown},
            "digit_like": digit_like_or_why(
                models[name], image.unsqueeze(0), data_dir=args.data_dir, device=device
            ).to_json(0),
        }
        if numbers[name]["digit_like"]["verdict"] is False:
            titles[name] += ", not digit-like"
    grid = {name: {m: r.maps[m][0] for m in shown} for name, r in results.items()}
    label_text = f"label {label}, " if label is not None else ""
    fig = plot_model_grid(image, grid, titles, f"{what}: {label_text}one colour scale per method")
    stem = f"explain_{args.index}" if args.image is None else f"explain_{Path(args.image).stem}"
    png = str(save_figure(fig, args.out or f"{stem}_models.png"))
    if args.json:
        print_json({"index": args.index, "label": label, "png": png, "models": numbers})
        return
    for name, entry in numbers.items():
        cells = ", ".join(
            f"{m} deletion {v['deletion_auc']:.2f}" for m, v in entry["methods"].items()
        )
        print(f"{name}: predicts {entry['prediction']}; {cells}")
    print(f"wrote {png}")


@contextlib.contextmanager
def _one_thread(args: argparse.Namespace):
    """One torch thread while explaining one digit (not --all), unless $OMP_NUM_THREADS
    says otherwise; the previous count is restored after.

    One digit is a fraction of a second of computing on one core, so a second thread can
    save little; but on a shared machine two threads that wait for each other's busy core
    made it many times slower (the app runs one thread per process for the same reason)."""
    import torch

    before = torch.get_num_threads()
    if not args.all and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(args: argparse.Namespace) -> None:
    with _one_thread(args):
        _run(args)


def _check_options(args: argparse.Namespace) -> None:
    """The shared options, checked before any model loads, in the flags' own names (a
    --baseline no chosen method uses would otherwise pass unnoticed)."""
    from mnistlens.attribution.common import BASELINES

    if args.baseline not in BASELINES:
        raise MnistlensError(
            f"--baseline must be one of {', '.join(BASELINES)}, got {args.baseline!r}"
        )
    if args.steps < 1:
        raise MnistlensError(f"--steps must be a whole number >= 1, got {args.steps}")
    if args.tol is not None and not 0 < args.tol < 1:
        raise MnistlensError(f"--tol must be between 0 and 1 (e.g. 0.01), got {args.tol}")
    if args.target is not None and not 0 <= args.target <= 9:
        raise MnistlensError(f"--target must be a digit 0-9, got {args.target}")


def _run(args: argparse.Namespace) -> None:
    device = device_of(args)  # CUDA asked for and absent: fail before loading anything
    _check_options(args)
    if "," in args.model:
        _explain_models(args)
        return
    model, meta = load_model(args)
    if args.all:
        _explain_all(model, args, device)
        return

    from mnistlens.attribution import why_not
    from mnistlens.explain import explain, map_note
    from mnistlens.plots import plot_explanation, save_figure
    from mnistlens.typicality import digit_like_or_why, verdict_line

    if args.methods:
        methods = resolve_methods(args.methods)
    else:
        with_cam = why_not("grad_cam", model) is None  # not without a conv layer
        methods = ["saliency", "integrated_gradients"] + (["grad_cam"] if with_cam else [])
    image, label, what = the_digit(args)
    result = explain(
        model,
        image.unsqueeze(0),
        methods,
        args.target,
        measure=True,  # every map carries its own faithfulness numbers
        device=device,
        **{m: _method_options(m, args) for m in methods},
    )
    verdict = digit_like_or_why(model, image.unsqueeze(0), data_dir=args.data_dir, device=device)

    probs = result.probabilities[0]
    prediction, target = int(result.predictions[0]), int(result.target[0])
    notes = {name: map_note(result, name) for name in result.maps}
    numbers: dict[str, dict] = {}
    for name, maps in result.maps.items():
        numbers[name] = {
            "sum": float(maps.sum()),
            "max_abs": float(maps.abs().max()),
            "faithfulness": result.scores[name].image(0),
        }
        if name in result.layers:
            numbers[name]["layer"] = result.layers[name]
        if name in result.deltas:
            numbers[name]["delta"] = float(result.deltas[name][0])
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
        warning=verdict.warning(0),
    )
    png = str(save_figure(fig, args.out or f"{stem}.png"))
    for entry in numbers.values():
        entry["png"] = png

    if args.json:
        print_json(
            {
                "index": args.index,
                "image": args.image,
                "label": label,
                "prediction": prediction,
                "target": target,
                "probabilities": [float(p) for p in probs],
                "digit_like": verdict.to_json(0),
                "model": meta["path"],
                "png": png,
                "faithfulness_keys": "deletion/insertion AUC of the map and of a random "
                "ranking of this image's pixels (deletion: lower is better); "
                "completeness_error is relative, for methods that claim completeness",
                "methods": numbers,
            }
        )
        return
    print(
        f"{what}: "
        + (f"true label {label}, " if label is not None else "")
        + f"predicted {prediction}"
        + (f", explaining {target}" if target != prediction else "")
    )
    print(top3_line(probs))
    print(verdict_line(verdict.to_json(0)))
    for name, entry in numbers.items():
        line = f"  {name}: sum {entry['sum']:+.3f}, max |a| {entry['max_abs']:.3g}"
        trust = entry["faithfulness"]
        line += (
            f"; deletion {trust['deletion_auc']:.2f} vs random {trust['random_deletion_auc']:.2f}"
        )
        if "completeness_error" in trust:
            line += f", completeness error {trust['completeness_error']:.1%}"
        if "layer" in entry:
            line += f" (layer {entry['layer']})"
        print(line)
    print(f"wrote {png}")
