"""`mnistlens series`: the series of simple architectures, listed or trained."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents, add_device_option, device_of, split_list

DESCRIPTION = """\
The series of simple networks mnistlens compares (mnistlens/series.py): softmax
regression, MLPs of growing width and depth, with and without regularization, and
CNNs of one to three stages. `series train` trains the members whose checkpoint is
missing (finished ones are skipped, so an interrupted run resumes), with one overall
progress bar and each run's own.
"""


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "series",
        parents=[parents["data"]],
        help="list or train the series of architectures",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mnistlens series list\n  mnistlens series train\n"
        "  mnistlens series train --only mlp-32,lenet --force",
    )
    p.add_argument("action", choices=["list", "train"], help="list the members, or train them")
    p.add_argument("--only", metavar="A,B", help="comma-separated member names (default all)")
    p.add_argument("--force", action="store_true", help="retrain finished members too")
    p.add_argument("--out-dir", metavar="DIR", help="where the checkpoints go (checkpoints/series)")
    p.add_argument("--epochs", type=int, help="override every member's epochs (quick runs)")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on the first N images")
    add_device_option(p, "train")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from mnistlens import series

    device = device_of(args) if args.action == "train" else None
    only = split_list(args.only) if args.only else None
    if args.action == "list":
        for name in only or series.list_series():
            member = series.get_member(name)
            path = series.checkpoint_path(name, args.out_dir)
            state = "trained" if path.is_file() else "to train"
            print(f"{name:16s} {member.question:40s} {state:9s} {path}")
        return
    overrides = {
        key: value
        for key, value in (("epochs", args.epochs), ("train_subset", args.train_subset))
        if value is not None
    }
    import time

    start = time.perf_counter()
    paths = series.train_series(
        args.out_dir,
        only,
        args.force,
        args.data_dir,
        not args.quiet,
        overrides or None,
        device=device,
    )
    print(f"series ready ({len(paths)} models) in {time.perf_counter() - start:.0f} s:")
    for path in paths:
        print(f"  {path}")
