r"""Public test helpers: invariance checkers and smooth test functions.

The Hypothesis strategies live in :mod:`pyg_infdiff.testing.strategies` (it needs
``hypothesis``, a test dependency, so it is imported explicitly).
"""
from pyg_infdiff.testing.functions import FourierFunction, random_smooth_function
from pyg_infdiff.testing.invariance import (
    DiscretizationReport,
    assert_discretization_invariant,
    assert_permutation_invariant,
    discretization_error,
    operator_fn,
)
from pyg_infdiff.testing.weights import redraw_zero_layers

__all__ = [
    "DiscretizationReport",
    "FourierFunction",
    "assert_discretization_invariant",
    "assert_permutation_invariant",
    "discretization_error",
    "operator_fn",
    "random_smooth_function",
    "redraw_zero_layers",
]
