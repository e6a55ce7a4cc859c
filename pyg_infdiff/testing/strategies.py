r"""`Hypothesis <https://hypothesis.readthedocs.io>`_ strategies for property tests of operators
on functions: dimensions, lattice shapes, resolution ladders, subsampling rates, seeds, point sets
and smooth functions.

Needs ``hypothesis`` (a test dependency), so it is not imported by :mod:`pyg_infdiff.testing`:

.. code-block:: python

    from hypothesis import given, settings

    from pyg_infdiff.graph import lattice
    from pyg_infdiff.testing import strategies as pst

    @given(shape=pst.lattice_shapes(ndim=2), f=pst.smooth_functions(ndim=2))
    @settings(max_examples=20, deadline=None)
    def test_something(shape, f):
        pos = lattice(shape)                    # [H * W, 2] pixel centres
        assert f(pos).shape == (pos.size(0), 1)

    test_something()                            # pytest calls it for you
"""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor

from pyg_infdiff.testing.functions import FourierFunction, random_smooth_function

#: The subsamplers that :func:`subsample_methods` draws from.
SubsampleMethods = ("uniform", "halton", "stratified")


def seeds() -> st.SearchStrategy[int]:
    r"""Seeds for :class:`torch.Generator`, in :math:`[0, 2^{31})`."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def generators() -> st.SearchStrategy[torch.Generator]:
    r"""Freshly seeded CPU :class:`torch.Generator` objects."""
    return seeds().map(lambda seed: torch.Generator().manual_seed(seed))


def dims(min_dim: int = 1, max_dim: int = 3) -> st.SearchStrategy[int]:
    r"""Domain dimensions :math:`d`."""
    return st.integers(min_value=min_dim, max_value=max_dim)


@st.composite
def lattice_shapes(
    draw: st.DrawFn,
    ndim: int | None = None,
    *,
    min_side: int = 1,
    max_side: int = 16,
    max_pixels: int = 4096,
) -> tuple[int, ...]:
    r"""Lattice shapes :math:`(n_1, \dots, n_d)` with :obj:`min_side` :math:`\le n_k \le`
    :obj:`max_side` and at most :obj:`max_pixels` pixels (:obj:`ndim` drawn from
    :func:`dims` when :obj:`None`)."""
    if ndim is None:
        ndim = draw(dims())
    if min_side**ndim > max_pixels:
        raise ValueError(f"min_side={min_side} in {ndim} dims exceeds max_pixels={max_pixels}")
    shape: list[int] = []
    for k in range(ndim):
        rest = ndim - k - 1
        budget = max_pixels // (math.prod(shape) * min_side**rest)
        shape.append(draw(st.integers(min_side, max(min_side, min(max_side, budget)))))
    return tuple(shape)


@st.composite
def resolution_ladders(
    draw: st.DrawFn,
    ndim: int = 2,
    *,
    min_side: int = 8,
    max_side: int = 64,
    length: int = 3,
    factor: int = 2,
) -> list[tuple[int, ...]]:
    r"""Increasing resolutions :math:`\mathbf{n}, f\mathbf{n}, f^2\mathbf{n}, \dots` (cubic
    lattices, :obj:`length` of them, the finest side at most :obj:`max_side`), for
    :func:`pyg_infdiff.testing.assert_discretization_invariant`."""
    top = max_side // factor ** (length - 1)
    if top < min_side:
        raise ValueError(
            f"No ladder of {length} resolutions (factor {factor}) between sides {min_side} and "
            f"{max_side}"
        )
    base = draw(st.integers(min_side, top))
    return [(base * factor**k,) * ndim for k in range(length)]


def rates(min_rate: float = 1.0, max_rate: float = 8.0) -> st.SearchStrategy[float]:
    r"""Subsampling rates in [:obj:`min_rate`, :obj:`max_rate`]."""
    return st.floats(min_value=min_rate, max_value=max_rate, allow_nan=False)


def subsample_methods() -> st.SearchStrategy[str]:
    r"""The methods of :func:`pyg_infdiff.graph.subsample`."""
    return st.sampled_from(SubsampleMethods)


def smooth_functions(
    ndim: int = 2, channels: int = 1, *, max_freq: int = 3
) -> st.SearchStrategy[FourierFunction]:
    r"""Random smooth functions from :func:`pyg_infdiff.testing.random_smooth_function`."""
    return seeds().map(
        lambda seed: random_smooth_function(
            ndim, channels, max_freq=max_freq, generator=torch.Generator().manual_seed(seed)
        )
    )


@st.composite
def point_sets(
    draw: st.DrawFn,
    ndim: int = 2,
    *,
    min_points: int = 1,
    max_points: int = 64,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Uniform random points in :math:`[0, 1]^d`, shape :math:`(N, d)`."""
    num = draw(st.integers(min_points, max_points))
    generator = torch.Generator().manual_seed(draw(seeds()))
    return torch.rand(num, ndim, generator=generator, dtype=torch.float64).to(dtype)
