"""`mnistlens measure`: how faithful each attribution method is, on the first N test images."""

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
    resolve_methods,
)
from mnistlens.errors import MnistlensError


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "measure",
        parents=[parents["model"]],
        help="how faithful each attribution method is",
        description="Measure explanations on the first N test images: deletion and insertion "
        "areas (against a random pixel ranking), the completeness error, and with "
        "--randomization the cascading model-randomization sanity check.",
    )
    p.add_argument(
        "--methods",
        default="saliency,ig,ixg,gradcam,gbp,lrp",
        help="comma-separated methods (saliency,ig,ixg,gradcam,gbp,lrp)",
    )
    p.add_argument("--n", type=int, default=200, help="test images to measure on (200)")
    p.add_argument(
        "--randomization",
        action="store_true",
        help="also run the model-randomization check and give each method a sanity "
        "verdict (on 20 images)",
    )
    p.add_argument(
        "--captum-metrics",
        action="store_true",
        help="also Captum's infidelity and max-sensitivity (on 20 images)",
    )
    p.add_argument(
        "--counterfactuals",
        action="store_true",
        help="measure counterfactuals instead (proto beside plain, each digit to its "
        "runner-up): valid, L1, L0, plausibility, other models' agreement, seconds "
        "(--n 100 is plenty)",
    )
    p.add_argument(
        "--ood",
        action="store_true",
        help="measure the is-it-a-digit detectors instead: flagged shares and AUROC on "
        "MNIST test digits and on probe sets (letters, symbols, printed digits, noise, "
        "blank, inverted, scribbles, scikit-learn's 8x8 digits)",
    )
    p.add_argument("--plot", metavar="PNG", help="write the mean deletion/insertion curves")
    add_device_option(p, "compute the maps and the scores")
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    device = device_of(args)  # CUDA asked for and absent: fail before loading anything
    from mnistlens import faithfulness
    from mnistlens.data import load_mnist

    model, meta = load_model(args)
    if not 1 <= args.n <= 10_000:
        raise MnistlensError(f"--n must be 1 to 10000, got {args.n}")
    if args.counterfactuals:
        measure_counterfactuals(args, model, meta, device)
        return
    if args.ood:
        measure_ood(args, model, meta, device)
        return
    methods = resolve_methods(args.methods)
    images = load_mnist("test", args.data_dir)[0][: args.n]
    report, curves = faithfulness.compare_methods(
        model,
        images,
        methods,
        args.randomization,
        captum_metrics=args.captum_metrics,
        device=device,
    )
    result = {"model": meta["path"], "n_images": len(images), "methods": report}
    if args.plot:
        from mnistlens.plots import plot_perturbation_curves, save_figure

        fig = plot_perturbation_curves(curves, f"{model_name(meta)}, {len(images)} test images")
        result["plot"] = str(save_figure(fig, args.plot))
    if args.json:
        print_json(result)
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
                print(f"  {name}: {cells} -> sanity {entry['sanity']}")
        print(f"sanity rule: {faithfulness.SANITY_RULE}")
    if args.captum_metrics:
        print(
            "Captum metrics (lower is better; infidelity of a random ranking: "
            f"{report['random']['infidelity']:.3f}):"
        )
        for name, entry in report.items():
            if "sensitivity_max" in entry:
                print(
                    f"  {name}: infidelity {entry['infidelity']:.3f}, "
                    f"max-sensitivity {entry['sensitivity_max']:.3f}"
                )
    if args.plot:
        print(f"wrote {result['plot']}")


def measure_ood(args: argparse.Namespace, model, meta: dict, device) -> None:
    """`--ood`: every candidate detector on MNIST test digits and the probe sets."""
    from mnistlens.data import load_mnist
    from mnistlens.typicality import default_spec, probes, scoreboard

    test = load_mnist("test", args.data_dir)[0]
    rows = scoreboard.scoreboard(
        model,
        model_name(meta),
        probes.probe_sets(test),
        test_images=test,
        data_dir=args.data_dir,
        device=device,
    )
    default = default_spec(model).name
    if args.json:
        print_json({"model": meta["path"], "default": default, "rows": [vars(r) for r in rows]})
        return
    print(scoreboard.markdown(rows))
    print(f"the verdict uses {default}; flagged: share above the threshold that flags 5% of "
          "held-apart training digits; AUROC: letters against MNIST test digits")  # fmt: skip


def measure_counterfactuals(args: argparse.Namespace, model, meta: dict, device) -> None:
    """`--counterfactuals`: proto beside plain on the first --n test images, believed or
    not by the other shipped models."""
    from pathlib import Path

    from mnistlens import series
    from mnistlens.counterfactual.measures import measure
    from mnistlens.data import load_mnist
    from mnistlens.loading import load
    from mnistlens.paths import checkpoint_dir

    images = load_mnist("test", args.data_dir)[0][: args.n]
    # the judges: the other shipped models (but softmax regression, too weak to be one)
    # and the series' LeNet, a third architecture
    mine = Path(meta["path"]).resolve()
    judges = [p for p in sorted(checkpoint_dir().glob("*.pt")) if p.stem != "linear"]
    judges.append(series.checkpoint_path("lenet"))
    others = {p.stem: load(p)[0] for p in judges if p.is_file() and p.resolve() != mine}
    table = measure(model, images, others, device=device)
    result = {"model": meta["path"], "n_images": len(images), "counterfactuals": table}
    if args.json:
        print_json(result)
        return
    print(f"{meta['path']}: counterfactuals of the first {len(images)} test images, each to "
          "its runner-up class")  # fmt: skip
    print(f"{'mode':8s} {'valid':>6s} {'L1':>6s} {'L0':>5s} {'plausib.':>9s} {'IM1':>6s} "
          f"{'IM2':>6s} {'s/digit':>8s}  other models that agree")  # fmt: skip
    for mode, row in table.items():
        agree = ", ".join(
            f"{n} {'-' if a is None else f'{a:.0%}'}" for n, a in row["agreement"].items()
        )
        plaus = "-" if row["plausibility_median"] is None else f"{row['plausibility_median']:.4f}"
        im = [("-" if row[k] is None else f"{row[k]:.2f}") for k in ("im1_median", "im2_median")]
        print(
            f"{mode:8s} {row['valid']:6.0%} {row['l1_median']:6.1f} {row['l0_median']:5d} "
            f"{plaus:>9s} {im[0]:>6s} {im[1]:>6s} {row['seconds_per_digit']:8.2f}  {agree}"
        )
