"""Console output for long-running work."""

import sys


def echo(message: str) -> None:
    """Prints one progress line and flushes, so logs piped to a file stay current."""
    print(message, file=sys.stdout, flush=True)
