"""What the command-line entry points share: one-line errors and checked flag types."""

from __future__ import annotations

import argparse
import sys

from tinylm.checkpoint import CheckpointError
from tinylm.data import DataError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def run(main, argv=None, prog: str = "tinylm") -> int:
    """Call ``main(argv)``; errors a user can fix are one line on stderr and exit code 2."""
    import os

    try:
        main(argv)
    except (DataError, CheckpointError, ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("TINYLM_DEBUG"):  # the full traceback, for developers
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
