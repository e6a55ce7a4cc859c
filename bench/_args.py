r"""The types of the benchmarks' options: :mod:`argparse` rejects a count or a budget that is
not positive with the script's usage line, so that no script checks them by hand.

Import them as ``from _args import positive_float, positive_int``.
"""
from __future__ import annotations

import argparse
import math

__all__ = ["positive_float", "positive_int"]


def positive_int(text: str) -> int:
    r"""An :mod:`argparse` type: an integer of at least 1 (counts, sizes, steps, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    r"""An :mod:`argparse` type: a finite number above 0 (budgets, rates, widths)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value
