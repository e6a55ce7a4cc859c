import importlib.util
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import lattice
from pyg_infdiff.testing import (
    DiscretizationReport,
    FourierFunction,
    assert_discretization_invariant,
    assert_permutation_invariant,
    discretization_error,
    operator_fn,
    random_smooth_function,
    redraw_zero_layers,
)
from pyg_infdiff.testing import strategies as pst

RADIUS = 0.2


def _weights(pos_dst, pos_src, batch_dst, batch_src):
    dist = torch.cdist(pos_dst.double(), pos_src.double())
    w = (1 - (dist / RADIUS) ** 2).clamp_min(0) ** 2
    return w * (batch_dst[:, None] == batch_src[None, :])


def kernel_mean(x, pos, batch, query_pos=None):
    """A smooth-kernel Monte-Carlo mean: discretisation invariant."""
    if query_pos is None:
        w = _weights(pos, pos, batch, batch)
    else:
        w = _weights(query_pos, pos, torch.zeros(query_pos.size(0), dtype=torch.long), batch)
    return ((w @ x.double()) / w.sum(-1, keepdim=True)).to(x.dtype)


def kernel_sum(x, pos, batch, query_pos=None):
    """The same kernel with a bare sum: grows with the number of points."""
    if query_pos is None:
        w = _weights(pos, pos, batch, batch)
    else:
        w = _weights(query_pos, pos, torch.zeros(query_pos.size(0), dtype=torch.long), batch)
    return (w @ x.double()).to(x.dtype)


def mean_pool(x, pos, batch):
    num_graphs = int(batch.max()) + 1
    total = x.new_zeros(num_graphs, x.size(1)).index_add_(0, batch, x)
    return total / torch.bincount(batch, minlength=num_graphs)[:, None]


def sum_pool(x, pos, batch):
    return x.new_zeros(int(batch.max()) + 1, x.size(1)).index_add_(0, batch, x)


FUNCTION = random_smooth_function(2, 2, max_freq=2, generator=torch.Generator().manual_seed(0))
QUERY = torch.rand(40, 2, generator=torch.Generator().manual_seed(1))


def test_mean_aggregator_is_discretisation_invariant():
    report = assert_discretization_invariant(
        kernel_mean, FUNCTION, resolutions=[16, 32, 64], query_points=QUERY, rtol=1e-2,
        require_convergence=True,
    )
    assert isinstance(report, DiscretizationReport)
    assert report.shapes == [(16, 16), (32, 32), (64, 64)]
    assert report.num_points == [256, 1024, 4096]
    assert len(report.errors) == 2 and report.errors[1] < report.errors[0] < 1e-2
    assert report.outputs[0].shape == (40, 2)
    assert "relative error" in str(report)


def test_sum_aggregator_fails_with_the_numbers():
    with pytest.raises(AssertionError, match=r"relative error 7\.\d+e-01 > rtol"):
        assert_discretization_invariant(
            kernel_sum, FUNCTION, resolutions=[16, 32], query_points=QUERY, rtol=0.05
        )


def test_graph_level_outputs_without_query_points():
    assert_discretization_invariant(mean_pool, FUNCTION, resolutions=[(8, 8), (16, 16)],
                                    rtol=1e-4)
    with pytest.raises(AssertionError, match="Not discretisation invariant"):
        assert_discretization_invariant(sum_pool, FUNCTION, resolutions=[8, 16], ndim=2)


def test_subsampled_discretisations_and_1d_3d():
    gen = torch.Generator().manual_seed(0)
    for ndim, resolutions in [(1, [64, 128, 256]), (3, [12, 24])]:
        f = random_smooth_function(ndim, 1, max_freq=1, generator=gen)
        query = torch.rand(10, ndim, generator=gen)
        assert_discretization_invariant(kernel_mean, f, resolutions=resolutions,
                                        query_points=query, rtol=3e-2)
    report = discretization_error(kernel_mean, FUNCTION, resolutions=[32, 64], query_points=QUERY,
                                  rate=4, method="stratified", generator=gen)
    assert report.num_points == [256, 1024]
    assert report.errors[0] < 0.1  # random nodes: a Monte-Carlo error of a few per cent


def test_convergence_check_catches_growing_errors():
    calls = iter([0.0, 0.1, 0.0])

    def flaky(x, pos, batch):
        return torch.ones(1, 1) + next(calls)  # errors: 0.09, 0.1 -> grows

    with pytest.raises(AssertionError, match="no convergence"):
        assert_discretization_invariant(flaky, FUNCTION, resolutions=[4, 8, 16], ndim=2,
                                        rtol=1.0, require_convergence=True)


def test_discretisation_checker_argument_errors():
    with pytest.raises(ValueError, match="at least two"):
        discretization_error(mean_pool, FUNCTION, resolutions=[8], ndim=2)
    with pytest.raises(ValueError, match="ndim"):
        discretization_error(mean_pool, FUNCTION, resolutions=[8, 16])
    with pytest.raises(ValueError, match="output shape changed"):
        discretization_error(kernel_mean, FUNCTION, resolutions=[8, 16], ndim=2)


def test_permutation_checker_passes_invariant_modules():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(30, 2, generator=gen)
    x = torch.randn(30, 3, generator=gen)
    batch = torch.tensor([0] * 12 + [1] * 18)
    errors = assert_permutation_invariant(kernel_mean, x, pos, batch, generator=gen)
    assert set(errors) == {"permutation", "duplication", "other_graphs"}
    assert max(errors.values()) < 1e-6
    assert_permutation_invariant(mean_pool, x, pos, batch, level="graph")
    assert_permutation_invariant(kernel_mean, x, pos)  # one graph, batch=None


def test_permutation_checker_catches_leaks_and_order_dependence():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(20, 2, generator=gen)
    x = torch.randn(20, 2, generator=gen)

    def leaky(x, pos, batch):  # ignores the batch vector
        return kernel_mean(x, pos, torch.zeros_like(batch))

    with pytest.raises(AssertionError, match="other_graphs: max abs deviation"):
        assert_permutation_invariant(leaky, x, pos)

    def ordered(x, pos, batch):
        return x - x[:1]

    with pytest.raises(AssertionError, match="permutation"):
        assert_permutation_invariant(ordered, x, pos, generator=gen)
    with pytest.raises(ValueError, match="output rows"):
        assert_permutation_invariant(mean_pool, x, pos, level="node")


@pytest.mark.skipif(importlib.util.find_spec("torch_cluster") is None,
                    reason="needs torch_cluster")
def test_operator_fn_with_a_bipartite_layer():
    class MeanConv(torch.nn.Module):  # a stand-in with the bipartite calling convention
        def forward(self, x, pos, edge_index):
            x_src, x_dst = x
            out = x_dst.new_zeros(x_dst.size(0), x_src.size(1)).index_add_(
                0, edge_index[1], x_src[edge_index[0]])
            return out / torch.bincount(edge_index[1], minlength=x_dst.size(0))[:, None]

    fn = operator_fn(MeanConv(), 0.25)
    report = assert_discretization_invariant(fn, FUNCTION, resolutions=[32, 64], query_points=QUERY,
                                             rtol=0.05)
    assert report.outputs[0].shape == (40, 2)
    # Several graphs: the query points are read in every graph, graph after graph.
    x, pos = FUNCTION(lattice((16, 16))), lattice((16, 16))
    out = fn(torch.cat([x, -x]), torch.cat([pos, pos]), torch.arange(2).repeat_interleave(256),
             QUERY)
    assert torch.allclose(out[:40], -out[40:], atol=1e-6)
    with pytest.raises(ValueError, match="query_points"):
        fn(x, pos, torch.zeros(256, dtype=torch.long))


@pytest.mark.skipif(
    importlib.util.find_spec("torch_cluster") is None
    or importlib.util.find_spec("pyg_infdiff.nn.kernel_conv") is None,
    reason="needs torch_cluster and pyg_infdiff.nn.kernel_conv",
)
def test_kernel_integral_conv_is_discretisation_invariant():
    from pyg_infdiff.nn.kernel_conv import KernelIntegralConv

    torch.manual_seed(0)
    conv = KernelIntegralConv(2, 3, 0.15).eval()
    report = assert_discretization_invariant(
        operator_fn(conv, 0.15), FUNCTION, resolutions=[16, 32, 64], query_points=QUERY,
        rtol=0.05, require_convergence=True,
    )
    assert report.errors[-1] < 0.02


def test_fourier_function():
    gen = torch.Generator().manual_seed(3)
    f = random_smooth_function(3, 4, max_freq=2, generator=gen)
    assert isinstance(f, FourierFunction) and f.ndim == 3 and f.channels == 4
    pos = lattice((12, 12, 12))
    values = f(pos)
    assert values.shape == (pos.size(0), 4) and values.dtype == torch.float32
    # Unit mean square per channel (the lattice rule is exact for these frequencies).
    assert torch.allclose(values.double().pow(2).mean(0), torch.ones(4, dtype=torch.float64),
                          atol=1e-4)
    assert torch.allclose(f.on_lattice((12, 12, 12)).reshape(4, -1).t(), values, atol=1e-6)
    same = random_smooth_function(3, 4, max_freq=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(same(pos), values)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        f(torch.rand(5, 2))
    with pytest.raises(ValueError, match="ndim"):
        random_smooth_function(0)


@given(shape=pst.lattice_shapes(min_side=2, max_side=9, max_pixels=200),
       ladder=pst.resolution_ladders(ndim=2, min_side=4, max_side=32, length=3),
       rate=pst.rates(), dim=pst.dims(), method=pst.subsample_methods(),
       points=pst.point_sets(ndim=3, max_points=20), f=pst.smooth_functions(ndim=1, channels=2),
       gen=pst.generators())
@settings(max_examples=30, deadline=None)
def test_strategies(shape, ladder, rate, dim, method, points, f, gen):
    assert 2 <= min(shape) and max(shape) <= 9 and math.prod(shape) <= 200
    assert len(ladder) == 3 and ladder[1] == tuple(2 * n for n in ladder[0])
    assert ladder[-1][0] <= 32
    assert 1.0 <= rate <= 8.0 and 1 <= dim <= 3
    assert method in ("uniform", "halton", "stratified")
    assert points.shape[1] == 3 and bool(((points >= 0) & (points <= 1)).all())
    assert f(torch.rand(4, 1)).shape == (4, 2)
    assert isinstance(gen, torch.Generator)


@given(data=st.data())
@settings(max_examples=10, deadline=None)
def test_lattice_shapes_with_fixed_ndim(data):
    shape = data.draw(pst.lattice_shapes(ndim=3, max_side=40, max_pixels=500))
    assert len(shape) == 3 and math.prod(shape) <= 500


def zero_module(x, pos, batch, query_pos=None):
    """What an untrained model with a zero-initialised head returns."""
    return x.new_zeros(query_pos.size(0) if query_pos is not None else 1, 2)


def test_all_zero_outputs_are_refused():
    # Zeros at every resolution compare nothing: the check fails and says why and what to do.
    with pytest.raises(AssertionError, match=r"Vacuous check: the output is all zero at "
                                             r"\(16, 16\), \(32, 32\).*re-initialise.*"
                                             r"redraw_zero_layers.*allow_zero=True"):
        assert_discretization_invariant(zero_module, FUNCTION, resolutions=[16, 32],
                                        query_points=QUERY)
    report = assert_discretization_invariant(zero_module, FUNCTION, resolutions=[16, 32],
                                             query_points=QUERY, allow_zero=True)
    assert report.errors == [0.0] and report.zero_outputs == [0, 1]
    # Zeros at one resolution only: flagged as such (the error alone, 1.0, would say less).
    calls = iter([0.0, 1.0])

    def zero_then_one(x, pos, batch):
        return torch.full((1, 1), next(calls))

    with pytest.raises(AssertionError, match=r"all zero at \(4, 4\) \(1 of 2"):
        assert_discretization_invariant(zero_then_one, FUNCTION, resolutions=[4, 8], ndim=2,
                                        rtol=2.0)
    # Tiny but normal outputs are not zero: relative errors are scale free.
    report = assert_discretization_invariant(
        lambda x, pos, batch: 1e-30 * mean_pool(x, pos, batch), FUNCTION,
        resolutions=[8, 16], ndim=2, rtol=1e-4)
    assert report.zero_outputs == []


def test_redraw_zero_layers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Conv1d(4, 2, 3), torch.nn.ReLU(),
                              torch.nn.Linear(2, 2, bias=False))
    for layer in (net[1], net[3]):
        torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(net[1].bias)
    first = net[0].weight.clone()
    names = redraw_zero_layers(net, gain=0.5, generator=torch.Generator().manual_seed(1))
    assert names == ["1", "3"]
    assert torch.equal(net[0].weight, first)  # layers with non-zero weights are left alone
    bound = 0.5 / math.sqrt(4 * 3)  # fan-in of the convolution
    assert bool(net[1].weight.any()) and float(net[1].weight.abs().max()) <= bound
    assert bool(net[1].bias.any()) and float(net[1].bias.abs().max()) <= bound
    assert float(net[3].weight.abs().max()) <= 0.5 / math.sqrt(2)
    # Reproducible with a generator; nothing left to re-draw afterwards.
    again = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 3))
    torch.nn.init.zeros_(again[0].weight)
    torch.nn.init.zeros_(again[0].bias)
    redraw_zero_layers(again, gain=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0].weight, net[1].weight)
    assert redraw_zero_layers(net) == []
    with pytest.raises(ValueError, match="gain"):
        redraw_zero_layers(net, gain=0.0)
