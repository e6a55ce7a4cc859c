"""The chunked depthwise edge sum (pyg_infdiff.nn._edge_sum) gives the autograd composition of
its parts exactly: values and both gradients, with a per-edge kernel or a tabulated one, for
any chunking; and the layer gives the same numbers through it as through message passing."""
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff import validation
from pyg_infdiff.graph import LatticeIndex, radius_graph
from pyg_infdiff.graph.lattice import lattice
from pyg_infdiff.nn import KernelIntegralConv, _edge_sum
from pyg_infdiff.nn._edge_sum import chunk_edges, edge_sum


def reference(x, kernel, src, dst, num_dst, tap=None):
    rows = kernel if tap is None else kernel[tap]
    return torch.zeros(num_dst, x.size(1), dtype=rows.dtype).index_add(0, dst, rows * x[src])


@settings(max_examples=40, deadline=None)
@given(num_src=st.integers(1, 30), num_dst=st.integers(1, 30), num_edges=st.integers(0, 200),
       channels=st.integers(1, 6), table=st.booleans(), chunk=st.integers(1, 80),
       seed=st.integers(0, 2**16))
def test_edge_sum_is_the_composition_of_its_parts(num_src, num_dst, num_edges, channels, table,
                                                   chunk, seed):
    # chunks of `chunk` edges (or the floor of 64): many, one, or a partial last
    with mock.patch.object(_edge_sum, "CHUNK_ELEMENTS", chunk * channels):
        check_against_reference(num_src, num_dst, num_edges, channels, table, seed)


def check_against_reference(num_src, num_dst, num_edges, channels, table, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_src, channels, dtype=torch.float64, generator=gen, requires_grad=True)
    src = torch.randint(0, num_src, (num_edges,), generator=gen)
    dst = torch.randint(0, num_dst, (num_edges,), generator=gen)  # any order
    rows = 7 if table else num_edges
    kernel = torch.randn(rows, channels, dtype=torch.float64, generator=gen, requires_grad=True)
    tap = torch.randint(0, rows, (num_edges,), generator=gen) if table else None
    grad = torch.randn(num_dst, channels, dtype=torch.float64, generator=gen)

    out = edge_sum(x, kernel, src, dst, num_dst, tap=tap)
    gx, gk = torch.autograd.grad(out, (x, kernel), grad)
    ref = reference(x, kernel, src, dst, num_dst, tap)
    rx, rk = torch.autograd.grad(ref, (x, kernel), grad)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gk, rk)


@pytest.fixture
def monkeypatch_chunk(monkeypatch):
    def set_chunk(elements: int) -> None:
        monkeypatch.setattr(_edge_sum, "CHUNK_ELEMENTS", elements)
        assert chunk_edges(10**6, 1, torch.device("cpu")) == max(elements, 64)
    return set_chunk


@pytest.mark.parametrize("table", [False, True])
def test_gradcheck(table, monkeypatch_chunk):
    monkeypatch_chunk(8)  # 64 edges per chunk at the floor: several chunks of 150 edges
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    src, dst = torch.randint(0, 12, (150,), generator=gen), torch.randint(0, 9, (150,),
                                                                           generator=gen)
    rows = 5 if table else 150
    kernel = torch.randn(rows, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    tap = torch.randint(0, rows, (150,), generator=gen) if table else None
    assert torch.autograd.gradcheck(lambda a, b: edge_sum(a, b, src, dst, 9, tap=tap),
                                    (x, kernel))


def test_only_the_inputs_that_need_gradients_get_them():
    x = torch.randn(5, 2)
    kernel = torch.randn(4, 2, requires_grad=True)
    src, dst = torch.tensor([0, 1, 4, 2]), torch.tensor([1, 1, 0, 3])
    edge_sum(x, kernel, src, dst, 4).sum().backward()
    assert x.grad is None and kernel.grad is not None
    with pytest.raises(RuntimeError):  # no second derivative (once differentiable)
        x = torch.randn(5, 2, requires_grad=True)
        (g,) = torch.autograd.grad(edge_sum(x, kernel, src, dst, 4).sum(), x, create_graph=True)
        g.sum().backward()


def test_mixed_precision_promotes_like_the_composition():
    x = torch.randn(6, 3, dtype=torch.float32, requires_grad=True)
    kernel = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    src, dst = torch.tensor([0, 5, 2, 2]), torch.tensor([0, 0, 1, 2])
    out = edge_sum(x, kernel, src, dst, 3)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and kernel.grad.dtype == torch.float64


def test_chunks_fit_a_cache_on_cpu_and_span_all_edges_elsewhere():
    cpu = torch.device("cpu")
    assert chunk_edges(10**6, 64, cpu) * 64 == _edge_sum.CHUNK_ELEMENTS
    assert chunk_edges(10**6, 10**6, cpu) == 64  # a floor against tiny chunks
    assert chunk_edges(12345, 64, torch.device("meta")) == 12345


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(1, 3), on_lattice=st.booleans(), num=st.integers(2, 60),
       validate=st.booleans(), seed=st.integers(0, 2**16))
def test_the_depthwise_layer_is_its_formula(dim, on_lattice, num, validate, seed):
    # The layer (fused sum, kernel per edge or tabulated per lattice offset) against its
    # definition W (sum_j k(x_i - y_j) v_j / sum_j w(x_i - y_j)) + b, values and gradients.
    torch.manual_seed(seed)
    conv = KernelIntegralConv(3, 4, 0.35, dim=dim, path="graph").double()
    gen = torch.Generator().manual_seed(seed)
    index = None
    if on_lattice:  # random pixels of a lattice
        shape = ({1: 40, 2: 8, 3: 4}[dim],) * dim
        pos = lattice(shape, dtype=torch.float64)
        keep = torch.randperm(pos.size(0), generator=gen)[: min(num, pos.size(0))].sort().values
        pos, index = pos[keep], LatticeIndex(shape, keep, torch.zeros_like(keep), 1)
    else:
        pos = torch.rand(num, dim, dtype=torch.float64, generator=gen)
    src, dst = radius_graph(pos, 0.35)
    x = torch.randn(pos.size(0), 3, dtype=torch.float64, generator=gen, requires_grad=True)
    with validation(validate):
        out = conv(x, pos, torch.stack([src, dst]), lattice=index)
    offset = pos[dst] - pos[src]
    num_ = reference(x, conv.kernel(offset), src, dst, pos.size(0))
    den = reference(torch.ones(pos.size(0), 1, dtype=torch.float64),
                    conv.kernel.window(offset).unsqueeze(-1), src, dst, pos.size(0))
    ref = conv.lin(num_ / den)  # self loops: every node has a positive window sum
    torch.testing.assert_close(out, ref)
    params = [x, *conv.parameters()]
    for a, b in zip(torch.autograd.grad(out.square().sum(), params),
                    torch.autograd.grad(ref.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b)
