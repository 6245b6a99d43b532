"""The `mnistlens` command: a thin shell over the library.

Each subcommand is one module in `mnistlens/commands/` with `add_parser(subparsers,
parents)` (its options and help) and `run(args)` (call the library, print); this file
holds what they share and the list of them. Problems a user can fix (bad option,
missing data, unknown model, untrusted file) end with a one-line `mnistlens: error: ...`
on stderr and exit code 2, never a traceback.

Nothing here imports torch: `mnistlens --help` and usage errors answer at once, and
each command imports the library inside `run()`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from mnistlens import __version__
from mnistlens.commands._common import KeyValues
from mnistlens.errors import MnistlensError

# One module per command, in the order `--help` lists them: a new command is a new
# file in mnistlens/commands/ and a line here.
COMMANDS = (
    "train",
    "evaluate",
    "predict",
    "explain",
    "weights",
    "units",
    "visualize",
    "measure",
    "inspect",
    "series",
    "compare",
    "stress",
    "counterfactual",
    "concepts",
    "app",
)

DESCRIPTION = """\
mnistlens opens the black box of MNIST classifiers: it trains reference networks,
explains their predictions and measures the explanations.

Images follow one convention everywhere: (N, 1, 28, 28) float32 in [0, 1], white
digit on black. MNIST is read from --data-dir, else $MNISTLENS_DATA, else
~/.cache/mnistlens (downloaded there when online). A model is a checkpoint path or
the name of a shipped one (linear.pt, mlp.pt, cnn.pt), a torch.export program (.pt2),
or your own state_dict file with --model-code FILE.py:CLASS or --arch NAME.
train, series train, explain and measure compute on a CUDA GPU when there is one
(--device auto, the default), or where --device cpu|cuda says.
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
  mnistlens train --arch cnn --arch-kwargs channels=32,64,128 --epochs 8 --out cnn.pt
  mnistlens series train                                          # the architecture series
  mnistlens compare --series --report docs/                       # ... compared
  mnistlens inspect --model net.pt --model-code net.py:Net      # your own model
  mnistlens explain --model net.pt2 --index 42                   # a torch.export program

Run `mnistlens COMMAND --help` for each command's options.
Exit codes: 0 success, 2 bad input (message on stderr), 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like our other errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Options several commands share: "data" (--data-dir), "model" (--model, --data-dir)."""
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="torchvision root holding MNIST/raw/ (default: $MNISTLENS_DATA or the user cache)",
    )
    model = argparse.ArgumentParser(add_help=False, parents=[data])
    model.add_argument(
        "--model",
        required=True,
        help="a mnistlens checkpoint (path or shipped name: linear.pt, mlp.pt, cnn.pt), "
        "a torch.export program (.pt2), or a state_dict file with --model-code or --arch",
    )
    yours = model.add_argument_group("your own model (a state_dict file)")
    yours.add_argument(
        "--model-code",
        metavar="FILE.py:CLASS",
        help="your model's class in your own source file, e.g. net.py:Net",
    )
    yours.add_argument("--arch", help="or a registered architecture: linear, mlp, cnn")
    yours.add_argument(
        "--arch-kwargs",
        nargs="+",
        action=KeyValues,
        default={},
        metavar="KEY=VALUE",
        help="constructor arguments for --model-code or --arch, e.g. hidden=128",
    )
    yours.add_argument(
        "--input",
        choices=["auto", "unit", "mnist-normalized", "0-255"],
        default="auto",
        help="the pixels your model expects: [0, 1] (unit), (x - 0.1307) / 0.3081 "
        "(mnist-normalized) or 0-255; auto tries each on 1,000 test images (auto)",
    )
    return {"data": data, "model": model}


def build_parser() -> argparse.ArgumentParser:
    """The whole `mnistlens` parser; each command's `run` is the parsed `args.run`."""
    parser = _Parser(
        prog="mnistlens",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mnistlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parents = _parents()
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub, parents)
    return parser


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse in this process; -> whether it took both
    settings (False where malloc is not glibc's, e.g. macOS).

    By default glibc maps every block over 128 KB afresh and unmaps it when freed (or
    trims the heap), so the many short-lived tensors of a few MB that attribution and
    scoring make page-fault on every use (measured in benchmarks/README.md). Only for the
    command's own process (a
    library should not change its caller's allocator); the tests set the same values as
    MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ in the environment.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mapped = mallopt(m_mmap_threshold, 32 * 2**20)  # as far as glibc itself slides it
    trimmed = mallopt(m_trim_threshold, 2**30)  # return memory only past 1 GB free
    return bool(mapped and trimmed)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mnistlens` console script; returns the exit code."""
    from_shell = argv is None
    if from_shell:
        # Importing torch allocates ~10^6 objects, and the default threshold (700) would
        # collect garbage hundreds of times meanwhile; every 20,000 allocations
        # still frees the reference cycles a long run leaves.
        gc.set_threshold(20_000, 10, 10)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors end inside argparse
        return int(stop.code or 0)
    args.argv = argv  # what was asked, e.g. for the checkpoint's record of its command
    if from_shell:
        keep_freed_memory()  # a command will run (not --help or a usage error)
    try:
        args.run(args)
    except MnistlensError as err:
        print(f"mnistlens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnistlens: interrupted", file=sys.stderr)
        return 130
    finally:
        if from_shell:
            # The process is about to end: its last garbage collection would walk every
            # object torch created. Frozen objects are skipped; the OS frees all.
            gc.freeze()
    return 0
