r"""GridPool(method="idw"): the inverse-distance pool of the official model, against a float64
oracle with its float32 error bound, its fast path on full lattices and its exact cases. The
window pools and the unpooling are in test_pool.py."""
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.nn.pool import GridPool

F32 = 2.0**-24  # unit roundoff of float32


def reference_pool(x, pos, batch, num_graphs, grid_shape, k=3, eps=1e-6):
    r"""Brute-force oracle of the documented estimator (float64, exact centres), and the
    greatest difference that float32 can make to each output (:func:`pool_rounding_bound`)."""
    centres = lattice(grid_shape, dtype=torch.float64)
    out = torch.zeros(num_graphs, centres.size(0), x.size(1), dtype=torch.float64)
    bound = torch.zeros_like(out)
    for b in range(num_graphs):
        xb, pb = x[batch == b].double(), pos[batch == b].double()
        dist = (pb[None, :, :] - centres[:, None, :]).norm(dim=-1)  # exact, unlike cdist's mm
        for j in range(centres.size(0)):
            d = dist[j]
            kth = float(d.sort().values[min(k, d.numel()) - 1])
            if float(d.min()) <= eps:
                w = (d <= eps).double()
            else:
                w = torch.where(d <= kth + eps, 1.0 / d**2, torch.zeros_like(d))
            out[b, j] = (w[:, None] * xb).sum(0) / w.sum()
            bound[b, j] = pool_rounding_bound(xb, d, w, out[b, j], centres[j], eps, kth,
                                              hit=float(d.min()) <= eps)
    shape = (num_graphs, x.size(1), *grid_shape)
    return (out.transpose(1, 2).reshape(shape), bound.transpose(1, 2).reshape(shape))


def pool_rounding_bound(x, dist, w, y, centre, eps, kth, hit):
    r"""A first-order bound on :math:`|y_{32} - y|` for one centre, where :math:`y` is the
    exact estimate and :math:`y_{32}` what :class:`GridPool` computes from float32 inputs.

    Two sources, the second dominant where a node lies close to the centre:

    * float32 arithmetic on the normalised weights :math:`\hat w_i` and the features:
      at most :math:`(m + 4)\,u \sum_i \hat w_i |x_i|` for :math:`m` terms;
    * the centre :math:`c`, held in float32 (:math:`|\delta| \le u \lVert c \rVert`), moves
      every distance by up to :math:`|\delta|`, and :math:`w_i = d_i^{-2}` by
      :math:`2 w_i |\delta| / d_i`, so :math:`y` moves by at most
      :math:`|\delta| \sum_i 2 \hat w_i |x_i - y| / d_i` (:math:`2 |\delta| / d_i \ll 1`).
      Hits (a node within :math:`\epsilon`) weigh 1 each and do not move.

    Membership (hit or tie, decided at :math:`\epsilon` resolution) is exact in both unless a
    distance lies within :math:`2|\delta|` of a threshold: then the bound is infinite and the
    caller skips that centre. :math:`u = 2^{-24}`; a factor 2 covers second-order terms.
    """
    keep = w > 0
    what = w[keep] / w[keep].sum()
    xk, dk = x[keep], dist[keep]
    m = int(keep.sum())
    arithmetic = (m + 4) * F32 * (what[:, None] * xk.abs()).sum(0)
    delta = F32 * float(centre.norm())
    if hit:
        centre_term = torch.zeros_like(arithmetic)
    else:
        centre_term = delta * (2 * what[:, None] * (xk - y).abs() / dk[:, None]).sum(0)
    # the hit test (at eps) and the tie test (at the k-th distance + eps), both shifted by delta
    thresholds = [eps] if hit else [eps, kth + eps]
    near = any(bool(((dist - t).abs() <= 2 * delta).any()) for t in thresholds)
    if near:
        return torch.full_like(arithmetic, float("inf"))
    return 2 * (arithmetic + centre_term) + 1e-12


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
@example(ndim=1, sizes=[1, 32, 40], grid=5, k=2, seed=0)  # 1.48e-5 off: nodes 1e-3 from a centre
def test_pool_matches_reference(ndim, sizes, grid, k, seed):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    pos = random_points(batch.numel(), ndim, gen)
    x = torch.randn(batch.numel(), 2, generator=gen)
    grid_shape = (grid,) * ndim
    out = GridPool(grid_shape, k=k, method="idw")(x, pos, batch, len(sizes))
    ref, bound = reference_pool(x, pos, batch, len(sizes), grid_shape, k=k)
    assert out.shape == (len(sizes), 2, *grid_shape)
    err = (out.double() - ref).abs()
    assert bool((err <= bound).all()), (
        f"greatest error {float(err.max()):.3g} where the float32 bound is "
        f"{float(bound.view(-1)[int((err - bound).argmax())]):.3g}"
    )


@pytest.mark.parametrize(
    "shape,grid_shape",
    [((8,), (8,)), ((12,), (4,)), ((16, 16), (8, 8)), ((15, 15), (5, 5)), ((28, 28), (14, 14)),
     ((16, 12), (4, 6)), ((8, 8, 8), (4, 4, 4)), ((6, 9, 6), (3, 3, 3))],
)
@pytest.mark.parametrize("k", [1, 3, 4])
def test_pool_fast_path_matches_search(shape, grid_shape, k):
    index = LatticeIndex.full(shape, num_graphs=2)
    x = torch.randn(index.pixel.numel(), 3)
    pool = GridPool(grid_shape, k=k, method="idw")
    fast = pool(x, index.pos(), index.batch, 2, lattice=index)
    slow = pool(x, index.pos(), index.batch, 2)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_pool_fast_path_layouts():
    pool = GridPool((4, 4), k=3, method="idw")
    assert pool._stencil((8, 8)) == {(0, 0): 0.25, (0, 1): 0.25, (1, 0): 0.25, (1, 1): 0.25}
    assert pool._stencil((12, 12)) == {(1, 1): 1.0}
    assert pool._stencil((4, 4)) == {(0, 0): 1.0}
    # k = 5 on a 2x2 block reaches the next block: the neighbour search must be used.
    assert GridPool((4, 4), k=5, method="idw")._stencil((8, 8)) is None


def test_pool_full_lattice_is_block_average_of_linear_function():
    index = LatticeIndex.full((32, 32))
    pos = index.pos()
    x = (pos @ torch.tensor([[2.0], [-1.0]])) + 0.5
    out = GridPool((8, 8), method="idw")(x, pos, lattice=index)
    expected = lattice((8, 8)) @ torch.tensor([[2.0], [-1.0]]) + 0.5
    torch.testing.assert_close(out.reshape(-1), expected.reshape(-1), atol=1e-6, rtol=0)


@settings(max_examples=10, deadline=None)
@given(ndim=st.integers(1, 3), num=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_pool_constant_is_exact(ndim, num, seed):
    gen = torch.Generator().manual_seed(seed)
    pos = random_points(num, ndim, gen)
    x = torch.full((num, 1), 0.7)
    out = GridPool((3,) * ndim, method="idw")(x, pos)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))


def test_pool_hit_takes_node_value():
    centres = lattice((4, 4))
    pos = torch.cat([centres, torch.rand(50, 2)])
    x = torch.randn(pos.size(0), 2)
    out = GridPool((4, 4), k=3, method="idw")(x, pos)
    torch.testing.assert_close(out[0].reshape(2, -1).t(), x[:16])


@pytest.mark.parametrize("shape", [(12, 12), (10, 10)])
def test_pool_permutation_and_ties(shape):
    # A lattice without its LatticeIndex has many exact ties; node order must not matter.
    index = LatticeIndex.full(shape, num_graphs=3)
    pos, batch = index.pos(), index.batch
    x = torch.randn(pos.size(0), 4)
    pool = GridPool((4, 4), k=3, method="idw")
    out = pool(x, pos, batch)
    perm = torch.randperm(pos.size(0))
    torch.testing.assert_close(pool(x[perm], pos[perm], batch[perm]), out, atol=1e-6, rtol=0)


def test_pool_batch_composition():
    gen = torch.Generator().manual_seed(0)
    pos_a, pos_b = torch.rand(60, 2, generator=gen), torch.rand(90, 2, generator=gen)
    x_a, x_b = torch.randn(60, 3, generator=gen), torch.randn(90, 3, generator=gen)
    pool = GridPool((5, 5), method="idw")
    both = pool(
        torch.cat([x_a, x_b]), torch.cat([pos_a, pos_b]),
        torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(90, dtype=torch.long)]),
    )
    torch.testing.assert_close(both[0:1], pool(x_a, pos_a), atol=1e-6, rtol=0)
    torch.testing.assert_close(both[1:2], pool(x_b, pos_b), atol=1e-6, rtol=0)


def test_pool_gradient():
    pos = torch.rand(40, 2)
    x = torch.randn(40, 3, requires_grad=True)
    GridPool((4, 4), method="idw")(x, pos).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_pool_errors():
    pool = GridPool((4, 4), method="idw")
    with pytest.raises(ValueError, match="at least one node"):
        pool(torch.randn(5, 1), torch.rand(5, 2), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="2 columns"):
        pool(torch.randn(5, 1), torch.rand(5, 3))
    with pytest.raises(ValueError, match="N=0"):
        pool(torch.randn(0, 1), torch.rand(0, 2))
    with pytest.raises(ValueError, match="positive"):
        GridPool((0, 4))
    with pytest.raises(ValueError, match="'k'"):
        GridPool((4, 4), k=0, method="idw")
