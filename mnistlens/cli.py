"""The `mnistlens` command: a thin shell over the library.

Each subcommand parses its options, calls library functions, and prints. Problems a
user can fix (bad option, missing data, unknown model, untrusted file) end with a
one-line `mnistlens: error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import (
    cmd_evaluate,
    cmd_explain,
    cmd_measure,
    cmd_predict,
    cmd_train,
    cmd_units,
    cmd_visualize,
    cmd_weights,
)
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
