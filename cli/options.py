"""Numeric command-line options, checked where they are parsed: a NaN, an infinity, a negative
time or a zero count is a usage error (exit 2) naming the option, never a run that checks nothing
or never ends."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def seconds(positive: bool = True) -> Callable[[str], float]:
    """A finite number of seconds, > 0 (or >= 0 when not `positive`)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number of seconds "
                                             f"{'above' if positive else 'of at least'} 0")
        return v
    return parse


def count(least: int = 1, most: int | None = None) -> Callable[[str], int]:
    """A whole number, at least `least` (and at most `most`: past it a run would not end)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < least or (most is not None and v > most):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from {least}"
                                             + (f" to {most}" if most is not None else " up"))
        return v
    return parse
