"""`mnistlens stress`: change every test digit, and watch which model holds."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import (
    Parents,
    add_device_option,
    add_json_option,
    add_models_options,
    device_of,
    print_json,
    split_list,
)

DESCRIPTION = """\
Stress-test models: each model's accuracy on the 10,000 test images after each change at
each severity. Sweeps turn one factor up step by step (translate 0-4 px in 8 directions,
rotate 0-45 degrees, scale 0.6-1.4, shear, stroke thickness, elastic deformation, an
occluding band); corruptions are MNIST-C's 15 (Mu & Gilmer 2019) at MNIST-C's own
setting, summed up as each model's mean corruption accuracy. For each pair of models
(--pair, else each model with the next and the best dense model against the best
convolutional one), the gap at each severity and the change that widens it most.
Each changed set is made once (seeded) and shared by every model.
"""


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "stress",
        parents=[parents["data"]],
        help="accuracy under shifts, rotations, noise, ... (MNIST-C)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  mnistlens stress --models mlp.pt,cnn.pt --transforms translate,rotate\n"
        "  mnistlens stress --series --out stress/\n"
        "  mnistlens stress --models mlp.pt,cnn.pt --severities rotate=0,10,20,30 --json",
    )
    add_models_options(p, "one or more")
    p.add_argument(
        "--transforms",
        metavar="NAME,...",
        default="all",
        help="changes by name, or the groups sweeps, corruptions, all (all)",
    )
    p.add_argument(
        "--severities",
        metavar="NAME=S,S,...",
        nargs="+",
        help="sweep a change through these severities instead (e.g. rotate=0,10,20)",
    )
    p.add_argument(
        "--pair",
        metavar="A,B",
        action="append",
        help="a pair whose gap to report, A expected to be worse (repeat for more)",
    )
    p.add_argument("--out", metavar="DIR", help="write stress.json and the figures (PNG) here")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N test images")
    p.add_argument("--seed", type=int, default=0, help="draws the changes' random parts (0)")
    p.add_argument(
        "--no-causes",
        dest="causes",
        action="store_false",
        help="skip naming each pair's gap's cause (re-centring, deslanting, ... the digits)",
    )
    add_device_option(p, "run the models")
    add_json_option(p)
    p.set_defaults(run=run)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def run(args: argparse.Namespace) -> None:
    from mnistlens.commands.compare import load_models
    from mnistlens.perturb import parse_severities, resolve_transforms
    from mnistlens.perturb import run as stress

    device = device_of(args)
    transforms = [t.name for t in resolve_transforms(split_list(args.transforms))]
    severities = parse_severities(" ".join(args.severities)) if args.severities else None
    models = load_models(args, at_least=1)  # a stress test needs no second model
    found = stress(
        models,
        transforms,
        severities=severities,
        pairs=[split_list(p) for p in args.pair] if args.pair else None,
        out=args.out,
        limit=args.limit,
        seed=args.seed,
        causes=args.causes,
        data_dir=args.data_dir,
        device=device,
    )
    if args.json:
        print_json(found)
        return
    _print_table(found)


def causes_line(causes: dict) -> str:
    """'of 41 images B gets right and A wrong, A gets right once normalized for:
    position 2, slant 9, ...'"""
    fixed = ", ".join(f"{r['factor']} {r['fixed']}" for r in causes["factors"])
    n = causes["n_gap"]
    return f"of {n} images B gets right and A wrong, A gets right once normalized for: {fixed}"


def _print_table(found: dict) -> None:
    """Per model: clean, mean corruption accuracy, each sweep at its hardest severity;
    per pair: the clean gap and where it widens most; the files written."""
    sweeps = [t for t in found["transforms"] if t["kind"] == "sweep"]
    hardest = {t["name"]: t["severities"].index(t["hardest"]) for t in sweeps}
    heads = [f"{t['name']} {t['severities'][hardest[t['name']]]:g}" for t in sweeps]
    print(f"accuracy on {found['n_images']:,} test images (seed {found['seed']})")
    print(f"{'model':16s} {'clean':>7s} {'MNIST-C':>8s}" + "".join(f" {h:>13s}" for h in heads))
    for m in found["models"]:
        cells = [
            _percent(found["accuracy"][m["name"]][t["name"]][hardest[t["name"]]]) for t in sweeps
        ]
        print(
            f"{m['name']:16s} {_percent(m['clean']):>7s} "
            f"{_percent(m['mean_corruption_accuracy']):>8s}" + "".join(f" {c:>13s}" for c in cells)
        )
    if found["pairs"]:
        print("pairs (B minus A, points of accuracy):")
    for p in found["pairs"]:
        line = f"  {p['a']} -> {p['b']}: clean {100 * p['clean_gap']:+.2f}"
        if p["transform"] is not None:
            line += (
                f"; widest at {p['transform']} {p['severity']:g}: {100 * p['gap']:+.2f} "
                f"({100 * p['widening']:+.2f})"
            )
        else:
            line += "; no change widens it"
        shrinks = p["narrowest"]
        if shrinks["transform"] is not None:
            line += f"; narrowest at {shrinks['transform']} {shrinks['severity']:g}: "
            line += f"{100 * shrinks['gap']:+.2f}"
        print(line)
        if "causes" in p:
            print(f"    {causes_line(p['causes'])}")
    for name, path in found.get("plots", {}).items():
        print(f"wrote {path} ({name})")
    if "table" in found:
        print(f"wrote {found['table']}")
