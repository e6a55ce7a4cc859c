"""LatticeStencil's tap indices: the division-free route through node coordinates
(pixel_steps, then tap_of_steps of the differences over edges; edge_taps for the edges of a
graph) gives the box index of every offset, checked against a search of the stencil's own
offset table."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.nn.stencil import LatticeStencil


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 3), side=st.integers(2, 12), radius_px=st.floats(0.6, 4.0),
       seed=st.integers(0, 2**16))
def test_taps_index_the_offset_table(dim, side, radius_px, seed):
    shape = tuple(side + a for a in range(dim))  # unequal sides: axes are not interchangeable
    stencil = LatticeStencil(shape, radius_px / side, torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(seed)
    num = math.prod(shape)
    src = torch.randint(0, num, (200,), generator=gen)
    dst = torch.randint(0, num, (200,), generator=gen)
    steps = stencil.pixel_steps(torch.arange(num))
    assert steps.dtype == torch.int32 and steps.shape == (num, dim)
    # row-major coordinates
    flat = torch.zeros(num, dtype=torch.int64)
    for axis, n in enumerate(shape):
        flat = flat * n + steps[:, axis].long()
    assert torch.equal(flat, torch.arange(num))
    k = steps[dst] - steps[src]
    tap = stencil.tap_of_steps(k)
    assert torch.equal(tap, stencil.tap_index(src, dst))
    assert torch.equal(tap, stencil.edge_taps(torch.arange(num), src, dst))
    table = stencil.steps.to(torch.int32)
    for e in range(k.size(0)):
        match = (table == k[e]).all(-1).nonzero().flatten()
        expected = int(match[0]) if match.numel() else table.size(0)  # one past the box
        assert int(tap[e]) == expected
