r"""GridUnpool (multilinear interpolation), the window pools of GridPool (method "tent", its
normalised transpose, and "box"), and their round trips. The inverse-distance pool is in
test_pool_idw.py."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import LatticeIndex, lattice, subsample
from pyg_infdiff.nn.pool import GridPool, GridUnpool, multilinear_weights
from pyg_infdiff.testing import strategies as pst


def smooth(pos: torch.Tensor) -> torch.Tensor:
    s = torch.sin(2.0 * pos).sum(-1) + torch.cos(3.0 * pos[:, 0]) * pos[:, -1]
    return torch.stack([s, pos.sum(-1) ** 2], dim=-1)


@settings(max_examples=10, deadline=None)
@given(
    channels=st.integers(1, 3),
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_unpool_matches_grid_sample(channels, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(2, channels, *shape, generator=gen)
    pos = torch.rand(64, len(shape), generator=gen)
    batch = torch.randint(0, 2, (64,), generator=gen)
    out = GridUnpool()(grid, pos, batch)
    coords = (2 * pos - 1).flip(-1).view(64, *([1] * len(shape)), len(shape))
    ref = F.grid_sample(
        grid[batch], coords, mode="bilinear", padding_mode="border", align_corners=False
    ).view(64, channels)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_unpool_1d_linear_and_border():
    grid = torch.arange(5.0).view(1, 1, 5)  # value j at (j + 0.5) / 5
    pos = torch.tensor([[0.0], [0.05], [0.1], [0.3], [0.55], [0.9], [0.95], [1.0]])
    out = GridUnpool()(grid, pos).view(-1)
    expected = (pos.view(-1) * 5 - 0.5).clamp(0, 4)
    torch.testing.assert_close(out, expected)


def test_unpool_3d_trilinear_exact():
    shape = (4, 5, 3)
    centres = lattice(shape)
    coef = torch.tensor([1.0, -2.0, 0.5])
    grid = (centres @ coef + centres[:, 0] * centres[:, 1]).view(1, 1, *shape)
    lo = torch.tensor([0.5 / n for n in shape])
    hi = torch.tensor([1 - 0.5 / n for n in shape])
    pos = lo + torch.rand(100, 3) * (hi - lo)  # inside the hull of the centres
    out = GridUnpool()(grid, pos).view(-1)
    torch.testing.assert_close(out, pos @ coef + pos[:, 0] * pos[:, 1], atol=1e-5, rtol=0)


def test_unpool_errors():
    with pytest.raises(ValueError, match="pos"):
        GridUnpool()(torch.randn(1, 1, 4, 4), torch.rand(3, 3))
    with pytest.raises(ValueError, match="holds 1"):
        GridUnpool()(torch.randn(1, 1, 4, 4), torch.rand(3, 2), torch.tensor([0, 1, 1]))


def test_round_trip_converges_with_density():
    grid_shape = (8, 8)
    pool, unpool = GridPool(grid_shape, method="idw"), GridUnpool()
    centres = lattice(grid_shape)
    exact = smooth(centres).t().reshape(1, 2, *grid_shape)
    gen = torch.Generator().manual_seed(1)
    query = torch.rand(500, 2, generator=gen)
    floor = unpool(exact, query)  # multilinear interpolation of the exact centre values
    pool_err, trip_err = [], []
    for num in (200, 1000, 5000, 25000):
        pos = torch.rand(num, 2, generator=gen)
        pooled = pool(smooth(pos), pos)
        pool_err.append(float((pooled - exact).abs().max()))
        trip_err.append(float((unpool(pooled, query) - floor).abs().max()))
    assert all(b < a for a, b in zip(pool_err, pool_err[1:])), pool_err
    assert trip_err[-1] < 0.2 * trip_err[0], trip_err
    assert float((floor - smooth(query)).abs().mean()) < 0.05


def test_round_trip_exact_on_full_lattice():
    # Odd multiples: pooling picks the pixels at the centres, unpooling there reads them back.
    index = LatticeIndex.full((15, 15), num_graphs=2)
    pos = index.pos()
    x = smooth(pos)
    pooled = GridPool((5, 5), method="idw")(x, pos, index.batch, lattice=index)
    centres = lattice((5, 5))
    back = GridUnpool()(pooled, centres.repeat(2, 1), torch.arange(2).repeat_interleave(25))
    torch.testing.assert_close(back, smooth(centres).repeat(2, 1), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ window pools (issue 12)
WINDOWS = ("tent", "box")


@settings(max_examples=15, deadline=None)
@given(
    ndim=pst.dims(),
    num=st.integers(1, 120),
    grid=st.integers(1, 6),
    num_graphs=st.integers(1, 3),
    seed=pst.seeds(),
)
def test_tent_pool_is_normalised_transpose_of_unpool(ndim, num, grid, num_graphs, seed):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(num * num_graphs, ndim, generator=gen, dtype=torch.float64)
    batch = torch.arange(num_graphs).repeat_interleave(num)
    x = torch.randn(pos.size(0), 2, generator=gen, dtype=torch.float64)
    grid_shape = (grid,) * ndim

    def transpose(values):  # U^T values, by the vector-Jacobian product of the unpooling
        g = torch.zeros(num_graphs, values.size(1), *grid_shape, dtype=torch.float64,
                        requires_grad=True)
        (GridUnpool()(g, pos, batch) * values).sum().backward()
        return g.grad

    num_, den = transpose(x), transpose(torch.ones(pos.size(0), 1, dtype=torch.float64))
    out = GridPool(grid_shape, method="tent")(x, pos, batch, num_graphs)
    filled = (den > 0).expand_as(out)
    torch.testing.assert_close(out[filled], (num_ / den)[filled])


def _lattice_pool(method, shape, grid_shape, f, dtype=torch.float64):
    index = LatticeIndex.full(shape)
    pos = index.pos(dtype)
    return GridPool(grid_shape, method=method)(f(pos), pos, lattice=index)


@pytest.mark.parametrize("method", WINDOWS)
@pytest.mark.parametrize("grid_shape", [(6,), (5, 4), (3, 4, 3)])
def test_window_pool_converges_on_lattices(method, grid_shape):
    # Full lattices at multiples 1, 2, 3, 4 of the grid: quadratures of one window integral,
    # the gap to a fine reference shrinking with the resolution (IDW takes other quantities).
    ndim = len(grid_shape)
    fine = 16 if ndim < 3 else 8
    ref = _lattice_pool(method, [fine * g for g in grid_shape], grid_shape, smooth)
    gaps = [float((_lattice_pool(method, [m * g for g in grid_shape], grid_shape, smooth) - ref)
                  .norm() / ref.norm()) for m in (1, 2, 3, 4)]
    assert all(b < a for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 0.4 * gaps[0], gaps


@settings(max_examples=10, deadline=None)
@given(ndim=pst.dims(), grid=st.integers(2, 5), mult=st.integers(1, 4), seed=pst.seeds())
def test_tent_pool_affine_exact_inside(ndim, grid, mult, seed):
    # Lattices that are multiples of the grid: the nodes are symmetric about every interior
    # grid point, so functions affine in each coordinate are exact there (the border windows
    # are reflected at the face and biased inward).
    gen = torch.Generator().manual_seed(seed)
    coef = torch.randn(ndim, dtype=torch.float64, generator=gen)
    grid_shape = (grid,) * ndim

    def f(pos):
        return (pos @ coef + 0.3 + pos.prod(-1))[:, None]

    out = _lattice_pool("tent", [mult * grid] * ndim, grid_shape, f)
    expected = f(lattice(grid_shape, dtype=torch.float64)).view(1, 1, *grid_shape)
    inner = (slice(None), slice(None)) + (slice(1, -1),) * ndim
    torch.testing.assert_close(out[inner], expected[inner])
    if mult == 1:  # nodes at the grid points: the tents are Kronecker deltas
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("method", WINDOWS)
@pytest.mark.parametrize("rate", [4, 16])
def test_window_pool_subsets_agree_in_expectation(method, rate):
    grid_shape, side = (8, 8), 64
    full = _lattice_pool(method, (side, side), grid_shape, smooth)
    index = LatticeIndex.full((side, side))
    pos_all = index.pos(torch.float64)
    pool = GridPool(grid_shape, method=method)
    gen = torch.Generator().manual_seed(rate)
    total, per_draw, draws = torch.zeros_like(full), [], 64
    for _ in range(draws):
        pixel = subsample((side, side), rate=rate, generator=gen)
        pos = pos_all[pixel]
        out = pool(smooth(pos), pos)
        per_draw.append(float((out - full).norm() / full.norm()))
        total += out
    bias = float((total / draws - full).norm() / full.norm())
    noise = sum(per_draw) / draws
    assert bias < 0.25 * noise, (bias, noise)  # the error averages out: Monte-Carlo noise
    assert bias < 0.01


@settings(max_examples=15, deadline=None)
@given(
    method=st.sampled_from(WINDOWS),
    ndim=pst.dims(),
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=3),
    grid=st.integers(1, 7),
    seed=pst.seeds(),
)
def test_window_pool_permutation_and_batch_invariance(method, ndim, sizes, grid, seed):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    pos = torch.rand(batch.numel(), ndim, generator=gen)
    x = torch.randn(batch.numel(), 3, generator=gen)
    pool = GridPool((grid,) * ndim, method=method)
    out = pool(x, pos, batch, len(sizes))
    assert out.shape == (len(sizes), 3, *(grid,) * ndim) and bool(torch.isfinite(out).all())
    perm = torch.randperm(batch.numel(), generator=gen)  # across graphs too: no sorting needed
    torch.testing.assert_close(pool(x[perm], pos[perm], batch[perm], len(sizes)), out,
                               atol=1e-5, rtol=1e-5)
    for b in range(len(sizes)):  # other graphs in the batch change nothing
        alone = pool(x[batch == b], pos[batch == b])
        torch.testing.assert_close(out[b:b + 1], alone, atol=1e-5, rtol=1e-5)
    # every value is a convex combination of the graph's node values, empty windows included
    for b in range(len(sizes)):
        lo, hi = x[batch == b].min(0).values, x[batch == b].max(0).values
        ob = out[b].reshape(3, -1)
        assert bool((ob >= lo[:, None] - 1e-5).all() and (ob <= hi[:, None] + 1e-5).all())


@settings(max_examples=15, deadline=None)
@given(method=st.sampled_from(WINDOWS), ndim=pst.dims(), num=st.integers(1, 200),
       grid=st.integers(1, 9), seed=pst.seeds())
def test_window_pool_constant_is_exact(method, ndim, num, grid, seed):
    # Sparse sets leave windows empty (the fallback fills them): still exact.
    pos = torch.rand(num, ndim, generator=torch.Generator().manual_seed(seed))
    out = GridPool((grid,) * ndim, method=method)(torch.full((num, 2), 0.7), pos)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))


def test_empty_windows_are_widened():
    # Grid of 5 in 1-D, nodes at the first and last grid points only: the tents of grid
    # points 1, 2, 3 are empty. Widening by (1, 2, 1)/4: points 1 and 3 see one node each
    # after one step; point 2 sees both after the second (taps 2 apart).
    pos = torch.tensor([[0.1], [0.9]], requires_grad=True)
    x = torch.tensor([[1.0], [3.0]], requires_grad=True)
    out = GridPool((5,), method="tent")(x, pos)
    torch.testing.assert_close(out.view(-1), torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0]))
    out.sum().backward()  # finite gradients through the widened windows
    assert bool(torch.isfinite(x.grad).all() and torch.isfinite(pos.grad).all())
    torch.testing.assert_close(x.grad.view(-1), torch.tensor([2.5, 2.5]))
    pos, x = pos.detach(), x.detach()
    # Non-empty windows are never changed by the fallback.
    pos, x = torch.cat([pos, torch.tensor([[0.5]])]), torch.cat([x, torch.tensor([[5.0]])])
    out = GridPool((5,), method="tent")(x, pos)
    torch.testing.assert_close(out.view(-1)[[0, 2, 4]], torch.tensor([1.0, 5.0, 3.0]))


def test_empty_window_rate_at_one_node_per_cell():
    # 32² lattice at rate 4 onto 16²: about 4 nodes per tent; a few percent of empty windows.
    gen = torch.Generator().manual_seed(0)
    pos = LatticeIndex.full((32, 32)).pos()
    empty = []
    for _ in range(20):
        p = pos[subsample((32, 32), rate=4, generator=gen)]
        index, weight = multilinear_weights(p, (16, 16))
        den = torch.zeros(256).index_add_(0, index.view(-1), weight.view(-1))
        empty.append(float((den == 0).float().mean()))
    assert 0.0 < sum(empty) / len(empty) < 0.05


def test_box_pool_is_block_mean_on_lattices():
    index = LatticeIndex.full((12, 18), num_graphs=2)
    x = torch.randn(index.pixel.numel(), 3)
    out = GridPool((4, 6), method="box")(x, index.pos(), index.batch)
    images = x.view(2, 12 * 18, 3).transpose(1, 2).reshape(2, 3, 12, 18)
    torch.testing.assert_close(out, F.avg_pool2d(images, 3), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", WINDOWS)
def test_window_pool_dtypes(method):
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(500, 2, generator=gen)
    x = torch.randn(500, 4, generator=gen)
    pool = GridPool((6, 6), method=method)
    ref = pool(x.double(), pos.double())
    assert ref.dtype == torch.float64
    out = pool(x, pos)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    low = pool(x.bfloat16(), pos)  # accumulated in float32, rounded once at the end
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.double(), ref, atol=2e-2, rtol=1e-2)


def test_window_pool_gradient_and_repr_and_errors():
    pos = torch.rand(40, 2)
    x = torch.randn(40, 3, requires_grad=True)
    GridPool((4, 4), method="tent")(x, pos).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert repr(GridPool((4, 4), method="tent")) == "GridPool(grid_shape=(4, 4), method='tent')"
    assert repr(GridPool((4, 4), method="idw")) == "GridPool(grid_shape=(4, 4), k=3)"
    assert GridPool((4, 4)).method == "tent"  # one window integral at every discretisation
    with pytest.raises(ValueError, match="method"):
        GridPool((4, 4), method="bilinear")
    with pytest.raises(ValueError, match="at least one node"):
        GridPool((4, 4), method="tent")(torch.randn(5, 1), torch.rand(5, 2),
                                        torch.zeros(5, dtype=torch.long), 2)
