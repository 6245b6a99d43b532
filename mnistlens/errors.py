"""The one exception type mnistlens raises for problems a user can fix.

The CLI turns it into a one-line message and exit code 2; a notebook user sees
an ordinary exception whose text says what was wrong and what to do.
"""


class MnistlensError(ValueError):
    """A user-fixable problem: bad input, missing data, an untrusted file."""
