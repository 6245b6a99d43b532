"""`mnistlens predict`: classify one test image."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents, add_json_option, load_model, print_json, top3_line


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "predict",
        parents=[parents["model"]],
        help="classify one test image",
        description="Classify MNIST test image INDEX: true label, prediction, top-3 probabilities.",
    )
    p.add_argument("--index", type=int, required=True, help="test-set index, 0 to 9999")
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from mnistlens.data import get_test_image

    model, _ = load_model(args)
    image, label = get_test_image(args.index, args.data_dir)
    with torch.inference_mode():
        probs = model(image.unsqueeze(0)).softmax(dim=1)[0]  # (10,)
    result = {
        "index": args.index,
        "label": label,
        "prediction": int(probs.argmax()),
        "probabilities": [round(float(p), 6) for p in probs],
    }
    if args.json:
        print_json(result)
        return
    print(f"test image {args.index}: true label {label}, predicted {result['prediction']}")
    print(top3_line(probs))
