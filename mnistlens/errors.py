"""The one exception type mnistlens raises for problems a user can fix.

The CLI turns it into a one-line message and exit code 2; a notebook user sees
an ordinary exception whose text says what was wrong and what to do.
"""

import re


class MnistlensError(ValueError):
    """A user-fixable problem: bad input, missing data, an untrusted file."""


def first_line(err: BaseException, limit: int = 120) -> str:
    """An exception as one short line, for messages that must stay one line."""
    text = (str(err).strip().splitlines() or [""])[0][:limit]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def refused_pickle(err: BaseException) -> str | None:
    """What a weights_only refusal is about ("it would import builtins.exec"), else None."""
    text = str(err)
    if "weights_only" not in text and "weights only" not in text.lower():
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    return f"it would import {found[1]}" if found else "it would import or call code"
