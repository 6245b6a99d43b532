"""What several commands share: `--json` output, `--device`, method lists, top-3 lines.

Torch-free at import time like every command module: anything that needs the library
imports it inside the function.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlens.options import parse_options

if TYPE_CHECKING:
    import torch

# The parent parsers cli.py hands to each command: "data" declares --data-dir,
# "model" declares --model and --data-dir.
Parents = dict[str, argparse.ArgumentParser]


class KeyValues(argparse.Action):
    """Collect KEY=VALUE pairs (separated by spaces or ';') into one dict, in the grammar
    of `options.parse_options`; a repeated option adds to it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        pairs = dict(getattr(namespace, self.dest) or {})
        try:
            given = parse_options(" ".join(values))
        except ValueError as err:
            parser.error(f"argument {option_string}: {err}")
        for key in given:
            if key in pairs:
                parser.error(f"argument {option_string}: {key} given twice")
        setattr(namespace, self.dest, {**pairs, **given})


def device_name(text: str) -> str:
    """`--device`'s type: auto, cpu, cuda or cuda:N, lower-cased. Only the spelling is
    checked here (no torch); whether this machine has it, `device_of` checks."""
    name = text.strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return name


def add_device_option(parser: argparse.ArgumentParser, what: str = "compute") -> None:
    """Declare `--device auto|cpu|cuda` (default auto); `device_of(args)` resolves it.
    `what` says what runs there, for the help ("train", "compute the maps")."""
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        metavar="auto|cpu|cuda",
        help=f"where to {what}: auto (a CUDA GPU when there is one, else the CPU), cpu, "
        "cuda or cuda:N (auto)",
    )


def device_of(args: argparse.Namespace) -> torch.device:
    """The torch.device --device names, checked against this machine: CUDA asked for and
    absent is a one-line MnistlensError (exit code 2). Call it first in `run`, so the
    error comes before any model or data is loaded."""
    from mnistlens.device import resolve_device

    return resolve_device(args.device)


def add_models_options(parser: argparse.ArgumentParser, how_many: str) -> None:
    """Declare `--models A,B,...` or `--series` (one of them required) and
    `--series-dir`; `how_many` says how many models the command takes ("two or more")."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--models", metavar="A,B,...", help=f"{how_many} model files or names")
    which.add_argument("--series", action="store_true", help="every model of the series")
    parser.add_argument(
        "--series-dir", metavar="DIR", help="the series' checkpoints (checkpoints/series)"
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Declare `--json` (print one JSON object instead of text)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def print_json(result: dict[str, Any]) -> None:
    """The `--json` output: one object on one line of stdout."""
    print(json.dumps(result))


def split_list(text: str) -> list[str]:
    """'saliency, ig,' -> ['saliency', 'ig']: a comma-separated option, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def resolve_methods(text: str) -> list[str]:
    """Canonical attribution method names for a comma list of names or aliases."""
    from mnistlens import attribution

    return [attribution.resolve_method(name) for name in split_list(text)]


def top3_line(probabilities: torch.Tensor) -> str:
    """'top 3: 4 (99.1%), 9 (0.8%), 7 (0.1%)' for one image's (10,) probabilities."""
    top = probabilities.topk(3)
    return "top 3: " + ", ".join(f"{int(i)} ({float(p):.2%})" for p, i in zip(*top, strict=True))


def model_name(meta: dict) -> str:
    """The checkpoint's file name, for titles: 'cnn.pt'."""
    return Path(meta["path"]).name


def the_digit(args: argparse.Namespace):
    """The digit --index or --image names: -> ((1, 28, 28) image, its label or None, how
    to name it: "test image 42" or "mine.png")."""
    from mnistlens.data import get_test_image
    from mnistlens.pictures import load_digit_image

    if args.image:
        return load_digit_image(args.image), None, Path(args.image).name
    image, label = get_test_image(args.index, args.data_dir)
    return image, label, f"test image {args.index}"


def load_model(args: argparse.Namespace):
    """The model named by --model (any supported format: `mnistlens.load`), adapted to
    the library's conventions, with --model-code/--arch/--arch-kwargs/--input for a
    user's state_dict: -> (model, metadata)."""
    from mnistlens.loading import load

    return load(
        args.model,
        model_code=getattr(args, "model_code", None),
        arch=getattr(args, "arch", None),
        arch_kwargs=getattr(args, "arch_kwargs", None) or None,
        input=getattr(args, "input", "auto"),
        data_dir=getattr(args, "data_dir", None),
    )
