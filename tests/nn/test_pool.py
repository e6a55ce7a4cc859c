import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.nn.pool import GridPool, GridUnpool


def smooth(pos: torch.Tensor) -> torch.Tensor:
    s = torch.sin(2.0 * pos).sum(-1) + torch.cos(3.0 * pos[:, 0]) * pos[:, -1]
    return torch.stack([s, pos.sum(-1) ** 2], dim=-1)


def reference_pool(x, pos, batch, num_graphs, grid_shape, k=3, eps=1e-6):
    r"""Brute-force oracle of the documented estimator (torch.cdist, float64)."""
    centres = lattice(grid_shape, dtype=torch.float64)
    out = torch.zeros(num_graphs, centres.size(0), x.size(1), dtype=torch.float64)
    for b in range(num_graphs):
        xb, pb = x[batch == b].double(), pos[batch == b].double()
        dist = torch.cdist(centres, pb)
        for j in range(centres.size(0)):
            d = dist[j]
            if float(d.min()) <= eps:
                w = (d <= eps).double()
            else:
                kth = d.sort().values[min(k, d.numel()) - 1]
                w = torch.where(d <= kth + eps, 1.0 / d**2, torch.zeros_like(d))
            out[b, j] = (w[:, None] * xb).sum(0) / w.sum()
    return out.transpose(1, 2).reshape(num_graphs, x.size(1), *grid_shape)


def random_points(num, ndim, generator):
    return torch.rand(num, ndim, generator=generator)


@settings(max_examples=15, deadline=None)
@given(
    ndim=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    grid=st.integers(2, 5),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_pool_matches_reference(ndim, sizes, grid, k, seed):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    pos = random_points(batch.numel(), ndim, gen)
    x = torch.randn(batch.numel(), 2, generator=gen)
    grid_shape = (grid,) * ndim
    out = GridPool(grid_shape, k=k)(x, pos, batch, len(sizes))
    ref = reference_pool(x, pos, batch, len(sizes), grid_shape, k=k)
    assert out.shape == (len(sizes), 2, *grid_shape)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape,grid_shape",
    [((8,), (8,)), ((12,), (4,)), ((16, 16), (8, 8)), ((15, 15), (5, 5)), ((28, 28), (14, 14)),
     ((16, 12), (4, 6)), ((8, 8, 8), (4, 4, 4)), ((6, 9, 6), (3, 3, 3))],
)
@pytest.mark.parametrize("k", [1, 3, 4])
def test_pool_fast_path_matches_search(shape, grid_shape, k):
    index = LatticeIndex.full(shape, num_graphs=2)
    x = torch.randn(index.pixel.numel(), 3)
    pool = GridPool(grid_shape, k=k)
    fast = pool(x, index.pos(), index.batch, 2, lattice=index)
    slow = pool(x, index.pos(), index.batch, 2)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_pool_fast_path_layouts():
    pool = GridPool((4, 4), k=3)
    assert pool._stencil((8, 8)) == {(0, 0): 0.25, (0, 1): 0.25, (1, 0): 0.25, (1, 1): 0.25}
    assert pool._stencil((12, 12)) == {(1, 1): 1.0}
    assert pool._stencil((4, 4)) == {(0, 0): 1.0}
    # k = 5 on a 2x2 block reaches the next block: the neighbour search must be used.
    assert GridPool((4, 4), k=5)._stencil((8, 8)) is None


def test_pool_full_lattice_is_block_average_of_linear_function():
    index = LatticeIndex.full((32, 32))
    pos = index.pos()
    x = (pos @ torch.tensor([[2.0], [-1.0]])) + 0.5
    out = GridPool((8, 8))(x, pos, lattice=index)
    expected = lattice((8, 8)) @ torch.tensor([[2.0], [-1.0]]) + 0.5
    torch.testing.assert_close(out.reshape(-1), expected.reshape(-1), atol=1e-6, rtol=0)


@settings(max_examples=10, deadline=None)
@given(ndim=st.integers(1, 3), num=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_pool_constant_is_exact(ndim, num, seed):
    gen = torch.Generator().manual_seed(seed)
    pos = random_points(num, ndim, gen)
    x = torch.full((num, 1), 0.7)
    out = GridPool((3,) * ndim)(x, pos)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))


def test_pool_hit_takes_node_value():
    centres = lattice((4, 4))
    pos = torch.cat([centres, torch.rand(50, 2)])
    x = torch.randn(pos.size(0), 2)
    out = GridPool((4, 4), k=3)(x, pos)
    torch.testing.assert_close(out[0].reshape(2, -1).t(), x[:16])


@pytest.mark.parametrize("shape", [(12, 12), (10, 10)])
def test_pool_permutation_and_ties(shape):
    # A lattice without its LatticeIndex has many exact ties; node order must not matter.
    index = LatticeIndex.full(shape, num_graphs=3)
    pos, batch = index.pos(), index.batch
    x = torch.randn(pos.size(0), 4)
    pool = GridPool((4, 4), k=3)
    out = pool(x, pos, batch)
    perm = torch.randperm(pos.size(0))
    torch.testing.assert_close(pool(x[perm], pos[perm], batch[perm]), out, atol=1e-6, rtol=0)


def test_pool_batch_composition():
    gen = torch.Generator().manual_seed(0)
    pos_a, pos_b = torch.rand(60, 2, generator=gen), torch.rand(90, 2, generator=gen)
    x_a, x_b = torch.randn(60, 3, generator=gen), torch.randn(90, 3, generator=gen)
    pool = GridPool((5, 5))
    both = pool(
        torch.cat([x_a, x_b]), torch.cat([pos_a, pos_b]),
        torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(90, dtype=torch.long)]),
    )
    torch.testing.assert_close(both[0:1], pool(x_a, pos_a), atol=1e-6, rtol=0)
    torch.testing.assert_close(both[1:2], pool(x_b, pos_b), atol=1e-6, rtol=0)


def test_pool_gradient():
    pos = torch.rand(40, 2)
    x = torch.randn(40, 3, requires_grad=True)
    GridPool((4, 4))(x, pos).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_pool_errors():
    pool = GridPool((4, 4))
    with pytest.raises(ValueError, match="at least one node"):
        pool(torch.randn(5, 1), torch.rand(5, 2), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="2 columns"):
        pool(torch.randn(5, 1), torch.rand(5, 3))
    with pytest.raises(ValueError, match="N=0"):
        pool(torch.randn(0, 1), torch.rand(0, 2))
    with pytest.raises(ValueError, match="positive"):
        GridPool((0, 4))
    with pytest.raises(ValueError, match="'k'"):
        GridPool((4, 4), k=0)


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
    pool, unpool = GridPool(grid_shape), GridUnpool()
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
    pooled = GridPool((5, 5))(x, pos, index.batch, lattice=index)
    centres = lattice((5, 5))
    back = GridUnpool()(pooled, centres.repeat(2, 1), torch.arange(2).repeat_interleave(25))
    torch.testing.assert_close(back, smooth(centres).repeat(2, 1), atol=1e-6, rtol=0)
