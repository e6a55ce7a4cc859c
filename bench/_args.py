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
    return _positive(text, int, "an integer of at least 1")


def positive_float(text: str) -> float:
    r"""An :mod:`argparse` type: a finite number above 0 (budgets, rates, widths)."""
    return _positive(text, float, "a finite number above 0")


def _positive(text: str, convert: type[int] | type[float], what: str) -> int | float:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value
