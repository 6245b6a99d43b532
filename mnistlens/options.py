"""KEY=VALUE options as people type them: an architecture's constructor arguments.

    >>> parse_options("hidden=512,256 dropout=0.1")
    {'hidden': [512, 256], 'dropout': 0.1}

The grammar of `mnistlens train --arch-kwargs` and of the explorer's Your model page:
pairs separated by spaces or ";", each value a bool, an int, a float or ints like
32,64 (`parse_value`). Torch-free, like everything the command line imports.
"""

from __future__ import annotations

import re


def parse_value(text: str) -> bool | int | float | list[int]:
    """'true' -> True, '32' -> 32, '0.1' -> 0.1, '32,64' -> [32, 64], '32,' -> [32].
    Raises ValueError for anything else."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        if "," not in text:
            return int(text) if text.lstrip("+-").isdigit() else float(text)
        values = [int(part) for part in text.split(",") if part.strip()]
        if values:
            return values
    except ValueError:
        pass
    raise ValueError(f"bad value {text!r}: expected true/false, an int, a float or ints like 32,64")


def parse_options(text: str) -> dict[str, bool | int | float | list[int]]:
    """'hidden=256, dropout=0.1' -> {'hidden': [256], 'dropout': 0.1}; '' -> {}.

    Raises ValueError naming the bad pair: not KEY=VALUE, a key given twice, or a
    value `parse_value` cannot read ("dropout: bad value ...")."""
    options: dict[str, bool | int | float | list[int]] = {}
    for item in re.split(r"[;\s]+", text.strip()):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not (equals and key.isidentifier()):
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        if key in options:
            raise ValueError(f"{key} given twice")
        try:
            options[key] = parse_value(value)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    return options
