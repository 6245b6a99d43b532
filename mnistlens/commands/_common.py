"""What several commands share: `--json` output, method lists, top-3 lines, .npy files.

Torch-free at import time like every command module: anything that needs the library
imports it inside the function.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The parent parsers cli.py hands to each command: "data" declares --data-dir,
# "model" declares --model and --data-dir.
Parents = dict[str, argparse.ArgumentParser]


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
    from .. import attribution

    return [attribution.resolve_method(name) for name in split_list(text)]


def top3_line(probabilities: torch.Tensor) -> str:
    """'top 3: 4 (99.1%), 9 (0.8%), 7 (0.1%)' for one image's (10,) probabilities."""
    top = probabilities.topk(3)
    return "top 3: " + ", ".join(f"{int(i)} ({float(p):.2%})" for p, i in zip(*top, strict=True))


def model_name(meta: dict) -> str:
    """The checkpoint's file name, for titles: 'cnn.pt'."""
    return Path(meta["path"]).name


def save_npy(path: str | os.PathLike, array: Any) -> Path:
    """Write a numpy array as .npy atomically (temp file + rename); returns the path."""
    import numpy as np

    from ..checkpoint import atomic_write

    return atomic_write(path, lambda f: np.save(f, array))
