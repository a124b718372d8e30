"""What the command-line entry points share: one-line errors and checked values.

A ``Rule`` is a flag's type and range. The parser uses it to read a flag, and the same
rule checks that value again when it is read back from a run's ``config.json``, so a
value the parser would refuse cannot enter through a hand-edited file either.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from tinylm.checkpoint import CheckpointError
from tinylm.data import DataError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class Rule:
    """A value's type (``int`` or ``float``) and the range it must lie in, described in words."""

    def __init__(self, kind: type, allowed: Callable[[float], bool], description: str):
        self.kind, self.allowed, self.description = kind, allowed, description
        self.__name__ = description  # what argparse calls the type in its messages

    def __call__(self, text: str):
        """Read a flag's text (argparse's ``type=``)."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.description}, got {text!r}") from None
        if not self.allowed(value):
            raise argparse.ArgumentTypeError(f"must be {self.description}, got {text}")
        return value

    def accepts(self, value) -> bool:
        """Whether a value read from JSON has the right type and range (True is no number;
        an integer must fit in 64 bits, as every count and seed does)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not (isinstance(value, int) and -2**63 <= value < 2**63):
            return False
        try:
            return bool(self.allowed(self.kind(value)))
        except OverflowError:  # an integer too large for a float
            return False


seed = Rule(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)")
positive_int = Rule(int, lambda v: v > 0, "a positive integer")
non_negative_int = Rule(int, lambda v: v >= 0, "an integer >= 0")
positive_float = Rule(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
non_negative_float = Rule(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
probability = Rule(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
fraction = Rule(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def run(main, argv=None, prog: str = "tinylm") -> int:
    """Call ``main(argv)``; errors a user can fix are one line on stderr and exit code 2."""
    import os

    try:
        main(argv)
    except (DataError, CheckpointError, ValueError, RuntimeError, OSError, MemoryError) as exc:
        if os.environ.get("TINYLM_DEBUG"):  # the full traceback, for developers
            raise
        if isinstance(exc, MemoryError):
            exc = f"out of memory ({exc or 'MemoryError'}): try smaller sizes"
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
