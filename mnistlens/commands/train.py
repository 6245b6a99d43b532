"""`mnistlens train`: train a reference model and write a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlens.commands._common import KeyValues, Parents, add_device_option, device_of
from mnistlens.errors import MnistlensError

# Written with line breaks: the raw formatter keeps the epilog's layout (and so this one's).
DESCRIPTION = """\
Train a model on the 60,000 training images (with a progress bar), report its accuracy
on the 10,000 test images, and write a checkpoint atomically. The checkpoint records
the arch, hyper-parameters, seed, data checksums, accuracy, training time and versions,
and the device it trained on (a GPU with --device auto or cuda); its weights are saved
from the CPU, so it loads on any machine.
"""

EPILOG = """\
--arch-kwargs takes the keyword arguments of the architecture's builder
(mnistlens/models.py) as KEY=VALUE pairs, separated by spaces or ';'. A value is
true/false, an int, a float, or a comma-separated list of ints; a list of one int
is written with a trailing comma (channels=32,), since channels=32 is the number 32.

examples:
  mnistlens train --arch mlp --arch-kwargs hidden=512,256 dropout=0.1 --out mlp.pt
  mnistlens train --arch cnn --arch-kwargs channels=32,64,128 hidden=128 --out cnn.pt
  mnistlens train --arch linear --epochs 10 --no-augment --lr 1e-2 --out linear.pt
  mnistlens train --arch mlp --epochs 8 --snapshots 4 --out mlp.pt   # for TracIn
  mnistlens train --arch cnn --device cpu --out cnn.pt   # the CPU, even with a GPU
  mnistlens train --arch autoencoder --epochs 5 --out checkpoints/autoencoder/autoencoder.pt
"""


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[parents["data"]],
        help="train a reference model and write a checkpoint",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--arch",
        required=True,
        help="architecture name: linear, mlp or cnn (or autoencoder, for counterfactuals)",
    )
    p.add_argument(
        "--arch-kwargs",
        nargs="+",
        action=KeyValues,
        default={},
        metavar="KEY=VALUE",
        help="architecture options, e.g. mlp: hidden=512,256 dropout=0.1; "
        "cnn: channels=32,64 kernel_size=3 hidden=128 (see below)",
    )
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint file to write")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (5)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak one-cycle learning rate (3e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (1e-4)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="(adamw)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (0)")
    p.add_argument(
        "--zero-init",
        action="store_true",
        help="start from all-zero weights (linear only: templates free of init noise)",
    )
    p.add_argument("--label-smoothing", type=float, default=0.0, help="(0)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw (0)")
    p.add_argument("--no-augment", action="store_true", help="no random shift/rotate/scale")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on the first N images")
    p.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="train on randomly permuted labels (the data-randomization sanity check)",
    )
    p.add_argument(
        "--classes",
        metavar="D,...",
        help="train an autoencoder of these digits only (e.g. 3), for counterfactuals' IM1/IM2",
    )
    p.add_argument(
        "--snapshots",
        type=int,
        default=0,
        metavar="K",
        help="keep K evenly spaced end-of-epoch snapshots (the last epoch among them) in the "
        "checkpoint, for TracIn; each adds the model's size to the file (0)",
    )
    add_device_option(p, "train")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--force", action="store_true", help="overwrite --out if it exists (a shipped model too)"
    )
    p.set_defaults(run=run)


def _digits(text: str | None) -> list[int] | None:
    """--classes '3' or '0,1' -> [3] or [0, 1] (checked by TrainConfig.validate)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MnistlensError(f"--classes takes digits like 3 or 0,1, got {text!r}") from None


def _check_arch(arch: str, kwargs: dict) -> None:
    """Build the model once, so bad arch options fail before the data is loaded."""
    from mnistlens.models import build

    try:
        build(arch, **kwargs)
    except MnistlensError as err:
        # channels=32 is the int 32, and a builder iterating over it says only
        # "'int' object is not iterable": name the fix.
        lone = [k for k, v in kwargs.items() if type(v) is int]
        if lone and "not iterable" in str(err):
            raise MnistlensError(f"{err} (a list of one int is written {lone[0]}=N,)") from None
        raise


def run(args: argparse.Namespace) -> None:
    device = device_of(args)  # CUDA asked for and absent: fail before anything else
    from mnistlens.loading.checkpoint import save_checkpoint
    from mnistlens.train import TrainConfig, train

    config = TrainConfig(
        arch=args.arch,
        arch_kwargs=args.arch_kwargs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        augment=not args.no_augment,
        seed=args.seed,
        train_subset=args.train_subset,
        optimizer=args.optimizer,
        momentum=args.momentum,
        zero_init=args.zero_init,
        shuffle_labels=args.shuffle_labels,
        snapshots=args.snapshots,
        classes=_digits(args.classes),
    )
    if Path(args.out).exists() and not args.force:
        raise MnistlensError(
            f"{args.out} exists; pass --force to overwrite it (or choose another --out)"
        )
    config.validate()
    _check_arch(config.arch, config.arch_kwargs)
    model, metadata = train(config, data_dir=args.data_dir, progress=not args.quiet, device=device)
    metadata["command"] = "mnistlens " + " ".join(args.argv)
    path = save_checkpoint(args.out, model, config.arch, config.arch_kwargs, metadata)
    score = (
        f"test accuracy {metadata['test_accuracy']:.2%}"
        if "test_accuracy" in metadata
        else f"test reconstruction error {metadata['test_reconstruction_error']:.4f} (MSE)"
    )
    print(
        f"{score} after {metadata['train_seconds']:.0f} s "
        f"of training on {metadata['device']} ({metadata['n_parameters']:,} parameters)"
    )
    if "snapshots" in metadata:
        epochs = ", ".join(map(str, metadata["snapshots"]["epochs"]))
        print(f"kept {config.snapshots} snapshots for TracIn (after epochs {epochs})")
    print(f"wrote {path}")
