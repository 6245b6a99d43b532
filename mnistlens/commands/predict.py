"""`mnistlens predict`: classify a test image or your own pictures, each with a verdict on
whether it is a digit at all."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlens.commands._common import Parents, add_json_option, load_model, print_json, top3_line
from mnistlens.errors import MnistlensError


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "predict",
        parents=[parents["model"]],
        help="classify a test image or your own pictures",
        description="Classify MNIST test image INDEX, or your own pictures (PNG, JPEG; "
        "fitted into 28x28 as MNIST was made): prediction, top-3 probabilities, and "
        "whether the picture looks like a digit at all (a detector on the model's own "
        "features, calibrated to flag 5% of real MNIST digits). Every picture is read "
        "before anything is printed: one unreadable file stops the call. With --json, one JSON "
        "object per line, one per picture.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="test-set index, 0 to 9999")
    which.add_argument(
        "--image", nargs="+", metavar="FILE", help="one or more digit pictures (PNG, JPEG)"
    )
    add_json_option(p)
    p.set_defaults(run=run)


def read_pictures(paths: list[str]):
    """Every picture as an MNIST-style image, (N, 1, 28, 28); the first unreadable one
    (missing, not an image, blank) is a one-line MnistlensError naming it."""
    import torch

    from mnistlens.pictures import load_digit_image

    images = []
    for path in paths:
        try:
            images.append(load_digit_image(path))
        except MnistlensError as err:
            message = str(err)
            raise MnistlensError(message if path in message else f"{path}: {message}") from None
    return torch.stack(images)


def run(args: argparse.Namespace) -> None:
    import torch

    from mnistlens.data import get_test_image
    from mnistlens.typicality import digit_like_or_why, verdict_line

    model, _ = load_model(args)
    if args.image:
        images, labels = read_pictures(args.image), [None] * len(args.image)
        names = [Path(p).name for p in args.image]
    else:
        image, label = get_test_image(args.index, args.data_dir)
        images, labels, names = image.unsqueeze(0), [label], [f"test image {args.index}"]
    with torch.inference_mode():
        probs = model(images).softmax(dim=1)  # (N, 10)
    verdicts = digit_like_or_why(model, images, data_dir=args.data_dir)
    for i, name in enumerate(names):
        result = {
            **({"index": args.index} if args.image is None else {"image": args.image[i]}),
            "label": labels[i],
            "prediction": int(probs[i].argmax()),
            "probabilities": [round(float(p), 6) for p in probs[i]],
            "digit_like": verdicts.to_json(i),
        }
        if args.json:
            print_json(result)
            continue
        truth = f"true label {labels[i]}, " if labels[i] is not None else ""
        print(f"{name}: {truth}predicted {result['prediction']}")
        print(top3_line(probs[i]))
        print(verdict_line(result["digit_like"]))
