"""`mnistlens inspect`: what mnistlens sees in a model file, before explaining it."""

from __future__ import annotations

import argparse

from mnistlens.commands._common import Parents, add_json_option, load_model, print_json


def add_parser(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser(
        "inspect",
        parents=[parents["model"]],
        help="what was detected in a model file (format, input, layers, accuracy)",
        description="Load a model as every other command does and say what was detected: "
        "the file's format, the input convention and why, what the model returns and what "
        "was rewritten (a final softmax removed, functional ReLUs made modules), its layers "
        "in execution order with their output shapes, its parameters, its accuracy on the "
        "10,000 test images, and which attribution methods apply.",
    )
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from mnistlens.loading.conventions import describe

    model, meta = load_model(args)
    facts = describe(model, meta, args.data_dir)
    if args.json:
        print_json(facts)
        return
    print(f"{facts['path']}: {facts['format']}")
    print(f"input: {facts['input']} ({facts['input_reason']}), per image {facts['input_shape']}")
    removed = " (removed: methods attribute the logits)" if facts["output_removed"] else ""
    print(f"outputs: {facts['outputs']}{removed}")
    print(f"batch: {facts['batch']}")
    if facts["relu_modules"]:
        print("functional ReLUs rewritten into modules (for DeepLIFT and guided backprop)")
    for note in facts["notes"]:
        print(f"note: {note}")
    print(f"layers ({'traced with torch.fx' if facts['traced'] else 'found by running it'}):")
    for layer in facts["layers"]:
        shape = "" if layer["shape"] is None else " x ".join(map(str, layer["shape"]))
        kind = layer["kind"] + (", functional" if layer["functional"] else "")
        print(f"  {layer['name']:24s} {kind:22s} {shape}")
    print(f"parameters: {facts['parameters']:,}")
    print(f"test accuracy: {facts['test_accuracy']:.2%} (10,000 test images)")
    print(f"methods: {', '.join(facts['methods'])}")
    for name, why in facts["methods_skipped"].items():
        print(f"  not {name}: {why}")
