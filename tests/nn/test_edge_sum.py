"""The chunked depthwise edge sum (pyg_infdiff.nn._edge_sum) gives the autograd composition of
its parts exactly: values and both gradients, with a per-edge kernel or a tabulated one, for
any chunking; and the layer gives the same numbers through it as through message passing."""
import warnings
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


# ---------------------------------------------------------------- the compiled backend
@pytest.fixture
def backend():
    r"""Sets the edge sum's backend for one test; restores the backend, the compiled loops
    and the record of a failed compilation afterwards."""
    saved = _edge_sum.get_edge_sum_backend(), dict(_edge_sum._compiled), _edge_sum._compile_error
    yield _edge_sum.set_edge_sum_backend
    _edge_sum.set_edge_sum_backend(saved[0])
    _edge_sum._compiled.clear()
    _edge_sum._compiled.update(saved[1])
    _edge_sum._compile_error = saved[2]


def sum_and_grads(table, seed=0, num_src=40, num_dst=30, num_edges=300, channels=5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_src, channels, generator=gen, requires_grad=True)
    rows = 7 if table else num_edges
    kernel = torch.randn(rows, channels, generator=gen, requires_grad=True)
    src = torch.randint(0, num_src, (num_edges,), generator=gen)
    dst = torch.randint(0, num_dst, (num_edges,), generator=gen)
    tap = torch.randint(0, rows, (num_edges,), generator=gen) if table else None
    grad = torch.randn(num_dst, channels, generator=gen)
    out = edge_sum(x, kernel, src, dst, num_dst, tap=tap)
    return (out, *torch.autograd.grad(out, (x, kernel), grad))


@pytest.mark.parametrize("table", [False, True])
def test_the_compiled_loops_give_the_chunked_sum_and_repeat_exactly(table, backend):
    backend("fused")
    fused = sum_and_grads(table)
    backend("compiled")
    compiled = sum_and_grads(table)
    for a, b in zip(compiled, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # one thread, edge order: the same bits on a second run, other sizes and a second thread
    assert all(torch.equal(a, b) for a, b in zip(sum_and_grads(table), compiled, strict=True))
    other = sum_and_grads(table, seed=1, num_src=57, num_dst=9, num_edges=123, channels=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        again = sum_and_grads(table, seed=1, num_src=57, num_dst=9, num_edges=123, channels=3)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    assert all(torch.equal(a, b) for a, b in zip(other, again, strict=True))


def test_auto_compiles_large_sums_on_a_cpu_only(backend, monkeypatch):
    backend("auto")
    calls = []
    real = _edge_sum._CompiledEdgeSum.apply
    monkeypatch.setattr(_edge_sum._CompiledEdgeSum, "apply",
                        lambda *a: calls.append(a[2].numel()) or real(*a))
    monkeypatch.setattr(_edge_sum, "AUTO_MIN_ELEMENTS", 100 * 5)
    sum_and_grads(table=True, num_edges=99)  # 495 edges x channels: chunks
    assert calls == []
    sum_and_grads(table=True, num_edges=100)  # 500: compiled
    assert calls == [100]
    backend("fused")
    sum_and_grads(table=True, num_edges=1000)
    assert calls == [100]
    backend("compiled")  # any size, but only on a CPU
    assert _edge_sum._wants_compiled(torch.zeros(2, 1), 1)
    assert not _edge_sum._wants_compiled(torch.zeros(2, 1, device="meta"), 10**9)


def test_a_failing_compiler_falls_back_under_auto_and_raises_when_asked_for(backend,
                                                                             monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise OSError("no C++ compiler")
        return call

    monkeypatch.setattr(_edge_sum.torch, "compile", broken)
    monkeypatch.setattr(_edge_sum, "AUTO_MIN_ELEMENTS", 1)
    _edge_sum._compiled.clear()
    _edge_sum._compile_error = None
    backend("fused")
    expected = sum_and_grads(table=True)
    backend("compiled")
    with pytest.raises(RuntimeError, match="set_edge_sum_backend"):
        sum_and_grads(table=True)
    backend("auto")
    with pytest.warns(RuntimeWarning, match="OSError: no C.. compiler"):
        got = sum_and_grads(table=True)  # this call eager, the same numbers
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert not _edge_sum._wants_compiled(torch.zeros(2, 1), 10**9)  # chunks from now on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sum_and_grads(table=True)


def test_the_backend_setting(backend, monkeypatch):
    assert backend("fused") in ("auto", "fused", "compiled")
    assert backend("compiled") == "fused"
    assert _edge_sum.get_edge_sum_backend() == "compiled"
    with pytest.raises(ValueError, match="auto, fused, compiled"):
        backend("triton")
    monkeypatch.setattr(_edge_sum, "_backend", "fast")  # as from $PYG_INFDIFF_EDGE_SUM
    with pytest.raises(ValueError, match="PYG_INFDIFF_EDGE_SUM"):
        sum_and_grads(table=True)


def test_the_layer_through_the_compiled_loops(backend):
    conv = KernelIntegralConv(3, 4, 0.3, path="graph")
    gen = torch.Generator().manual_seed(3)
    pos = torch.rand(60, 2, generator=gen)
    edge_index = radius_graph(pos, 0.3)
    x = torch.randn(60, 3, generator=gen, requires_grad=True)
    results = []
    for name in ("fused", "compiled"):
        backend(name)
        out = conv(x, pos, edge_index)
        results.append((out, *torch.autograd.grad(out.square().sum(), [x, *conv.parameters()])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
