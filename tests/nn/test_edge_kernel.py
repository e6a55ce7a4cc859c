"""Kernels computed once on fixed edges (KernelIntegralConv.edge_kernel) give the graph path's
output exactly, for plain and bipartite edges."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import radius, radius_graph
from pyg_infdiff.nn import EdgeKernel, KernelIntegralConv


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, 3), depthwise=st.booleans(),
       normalization=st.sampled_from(["window", "mean"]), num=st.integers(2, 80),
       seed=st.integers(0, 2**16))
def test_edge_kernel_gives_the_graph_path(dim, depthwise, normalization, num, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    conv = KernelIntegralConv(4, 4, 0.3, dim=dim, depthwise=depthwise,
                              normalization=normalization, path="graph")
    pos = torch.rand(num, dim, generator=gen)
    x = torch.randn(num, 4, generator=gen)
    edge_index = radius_graph(pos, 0.3)
    kernel = conv.edge_kernel(pos, edge_index)
    assert isinstance(kernel, EdgeKernel) and kernel.denom.shape == (num, 1)
    torch.testing.assert_close(conv(x, pos, edge_index, edge_kernel=kernel),
                               conv(x, pos, edge_index))
    # the same kernel serves other features on the same nodes
    y = torch.randn(num, 4, generator=gen)
    torch.testing.assert_close(conv(y, pos, edge_index, edge_kernel=kernel),
                               conv(y, pos, edge_index))


def test_bipartite_edge_kernel():
    gen = torch.Generator().manual_seed(0)
    conv = KernelIntegralConv(3, 5, 0.25, dim=2, path="graph")
    src, dst = torch.rand(60, 2, generator=gen), torch.rand(40, 2, generator=gen)
    x = torch.randn(60, 3, generator=gen)
    edge_index = radius(src, dst, 0.25)
    kernel = conv.edge_kernel((src, dst), edge_index)
    torch.testing.assert_close(conv((x, None), (src, dst), edge_index, edge_kernel=kernel),
                               conv((x, None), (src, dst), edge_index))


def test_edge_kernel_of_other_edges_is_refused():
    conv = KernelIntegralConv(2, 2, 0.3, dim=2, path="graph")
    pos = torch.rand(30, 2)
    kernel = conv.edge_kernel(pos, radius_graph(pos, 0.3))
    with pytest.raises(ValueError, match="same 'edge_index'"):
        conv(torch.randn(30, 2), pos, radius_graph(pos, 0.1), edge_kernel=kernel)
