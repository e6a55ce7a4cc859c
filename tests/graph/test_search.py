import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch_cluster")

from pyg_infdiff.graph import (  # noqa: E402
    knn,
    lattice,
    max_neighbors_bound,
    radius,
    radius_graph,
    subsample,
)
from pyg_infdiff.graph import search as search_module  # noqa: E402
from pyg_infdiff.testing.strategies import seeds  # noqa: E402

MARGIN = 1e-6  # pairs this close to the radius are left out of exact comparisons


def _random_batch(sizes, ndim, gen, dtype=torch.float64):
    pos = torch.rand(sum(sizes), ndim, generator=gen, dtype=dtype)
    batch = torch.cat([torch.full((n,), b) for b, n in enumerate(sizes)]).long()
    return pos, batch


def _brute_force(pos_src, pos_dst, r, batch_src, batch_dst):
    dist = torch.cdist(pos_dst.double(), pos_src.double())  # [dst, src]
    same = batch_dst[:, None] == batch_src[None, :]
    inside = (dist < r) & same
    ambiguous = ((dist - r).abs() < MARGIN) & same
    return inside, ambiguous


def _edge_set(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


def _assert_same_edges(edge_index, inside, ambiguous):
    found = _edge_set(edge_index)
    assert len(found) == edge_index.size(1), "duplicate edges"
    expected = {(j, i) for i, j in inside.nonzero().tolist()}
    loose = {(j, i) for i, j in ambiguous.nonzero().tolist()}
    assert found - loose == expected - loose


sizes_strategy = st.lists(st.integers(0, 40), min_size=1, max_size=4)


@given(sizes=sizes_strategy, ndim=st.integers(1, 3), r=st.floats(0.01, 0.8), seed=seeds(),
       loop=st.booleans())
@settings(max_examples=60, deadline=None)
def test_radius_graph_matches_brute_force(sizes, ndim, r, seed, loop):
    gen = torch.Generator().manual_seed(seed)
    pos, batch = _random_batch(sizes, ndim, gen)
    edge_index = radius_graph(pos, r, batch, loop=loop)
    assert edge_index.dtype == torch.long and edge_index.shape[0] == 2
    inside, ambiguous = _brute_force(pos, pos, r, batch, batch)
    if not loop:
        inside.fill_diagonal_(False)
    _assert_same_edges(edge_index, inside, ambiguous)
    self_loops = int((edge_index[0] == edge_index[1]).sum())
    assert self_loops == (pos.size(0) if loop else 0)


@given(src_sizes=sizes_strategy, data=st.data(), ndim=st.integers(1, 3), r=st.floats(0.01, 0.8),
       seed=seeds())
@settings(max_examples=60, deadline=None)
def test_bipartite_radius_matches_brute_force(src_sizes, data, ndim, r, seed):
    dst_sizes = data.draw(st.lists(st.integers(0, 30), min_size=len(src_sizes),
                                   max_size=len(src_sizes)))
    gen = torch.Generator().manual_seed(seed)
    pos_src, batch_src = _random_batch(src_sizes, ndim, gen)
    pos_dst, batch_dst = _random_batch(dst_sizes, ndim, gen)
    edge_index = radius(pos_src, pos_dst, r, batch_src, batch_dst)
    inside, ambiguous = _brute_force(pos_src, pos_dst, r, batch_src, batch_dst)
    _assert_same_edges(edge_index, inside, ambiguous)
    # Orientation: row 0 indexes the sources, row 1 the targets.
    if edge_index.numel():
        assert int(edge_index[0].max()) < pos_src.size(0)
        assert int(edge_index[1].max()) < pos_dst.size(0)


def test_radius_orientation_on_a_small_example():
    pos_src = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.5, 0.5]])
    pos_dst = torch.tensor([[0.12, 0.1]])
    edge_index = radius(pos_src, pos_dst, 0.1)
    assert edge_index.tolist() == [[0], [0]]
    edge_index = radius(pos_dst, pos_src, 0.1)
    assert edge_index.tolist() == [[0], [0]]
    # radius_graph: edge_index[0] = source j, edge_index[1] = target i, like PyG.
    edge_index = radius_graph(pos_src, 0.6, loop=False)
    assert _edge_set(edge_index) == {(0, 2), (2, 0), (1, 2), (2, 1)}


def test_unbatched_equals_single_graph_batch():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(50, 2, generator=gen)
    a = radius_graph(pos, 0.2)
    b = radius_graph(pos, 0.2, torch.zeros(50, dtype=torch.long))
    assert _edge_set(a) == _edge_set(b)


def test_float32_and_mixed_dtypes():
    gen = torch.Generator().manual_seed(0)
    pos_src = torch.rand(60, 2, generator=gen)
    pos_dst = torch.rand(20, 2, generator=gen, dtype=torch.float64)
    edge_index = radius(pos_src, pos_dst, 0.25)
    inside, ambiguous = _brute_force(pos_src, pos_dst, 0.25, torch.zeros(60), torch.zeros(20))
    _assert_same_edges(edge_index, inside, ambiguous)


@given(sizes=sizes_strategy, data=st.data(), ndim=st.integers(1, 3), k=st.integers(1, 8),
       seed=seeds())
@settings(max_examples=40, deadline=None)
def test_knn_matches_brute_force(sizes, data, ndim, k, seed):
    dst_sizes = data.draw(st.lists(st.integers(0, 20), min_size=len(sizes), max_size=len(sizes)))
    gen = torch.Generator().manual_seed(seed)
    pos_src, batch_src = _random_batch(sizes, ndim, gen)
    pos_dst, batch_dst = _random_batch(dst_sizes, ndim, gen)
    edge_index = knn(pos_src, pos_dst, k, batch_src, batch_dst)
    dist = torch.cdist(pos_dst, pos_src)
    dist[batch_dst[:, None] != batch_src[None, :]] = float("inf")
    for i in range(pos_dst.size(0)):
        src = edge_index[0, edge_index[1] == i]
        assert bool((batch_src[src] == batch_dst[i]).all())
        expected = dist[i].sort().values
        expected = expected[torch.isfinite(expected)][:k]
        assert src.numel() == expected.numel()
        assert torch.allclose(dist[i, src].sort().values, expected)


@pytest.mark.parametrize("loop", [True, False])
def test_explicit_cap_raises_on_truncation(loop):
    pos = lattice((16, 16))
    with pytest.raises(ValueError, match="max_num_neighbors=4"):
        radius_graph(pos, 0.2, loop=loop, max_num_neighbors=4)
    with pytest.raises(ValueError, match="max_num_neighbors=4"):
        radius(pos, pos[:3], 0.2, max_num_neighbors=4)


@pytest.mark.parametrize("loop", [True, False])
def test_explicit_cap_warns_and_keeps_the_cap(loop):
    pos = lattice((16, 16))
    with pytest.warns(UserWarning, match="max_num_neighbors=5"):
        edge_index = radius_graph(pos, 0.2, loop=loop, max_num_neighbors=5, on_truncation="warn")
    degree = torch.bincount(edge_index[1], minlength=pos.size(0))
    assert int(degree.max()) == 5
    if not loop:
        assert bool((edge_index[0] != edge_index[1]).all())
    reference = _edge_set(radius_graph(pos, 0.2, loop=loop))
    assert _edge_set(edge_index) <= reference


@pytest.mark.parametrize("loop", [True, False])
def test_exact_cap_is_not_truncation(loop):
    pos = lattice((12, 12))
    full = radius_graph(pos, 0.2, loop=loop)
    cap = int(torch.bincount(full[1]).max())
    capped = radius_graph(pos, 0.2, loop=loop, max_num_neighbors=cap)
    assert _edge_set(capped) == _edge_set(full)
    with pytest.raises(ValueError, match="target points have more than"):
        radius_graph(pos, 0.2, loop=loop, max_num_neighbors=cap - 1)


def test_automatic_cap_grows_until_exact(monkeypatch):
    # The path taken on devices where the cap costs memory: a deliberately small first guess
    # must still give every neighbour.
    monkeypatch.setattr(search_module, "_FULL_CAP_DEVICES", ())
    monkeypatch.setattr(search_module, "_initial_cap", lambda *args: 2)
    gen = torch.Generator().manual_seed(0)
    pos, batch = _random_batch([30, 50], 2, gen)
    edge_index = radius_graph(pos, 0.3, batch)
    inside, ambiguous = _brute_force(pos, pos, 0.3, batch, batch)
    _assert_same_edges(edge_index, inside, ambiguous)


def test_initial_cap_covers_subsampled_lattices():
    pixel = subsample((32, 32), rate=4, generator=torch.Generator().manual_seed(0))
    pos = lattice((32, 32))[pixel]
    cap = search_module._initial_cap(pos, None, 0.15)
    assert int(torch.bincount(radius_graph(pos, 0.15)[1]).max()) < cap


@given(ndim=st.integers(1, 3), side=st.integers(1, 12), r=st.floats(0.01, 0.7), seed=seeds())
@settings(max_examples=40, deadline=None)
def test_max_neighbors_bound_is_an_upper_bound(ndim, side, r, seed):
    shape = (side,) * ndim
    points = lattice(shape, dtype=torch.float64)
    centres = torch.rand(64, ndim, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    centres = torch.cat([centres, points[:8]])
    count = (torch.cdist(centres, points) < r).sum(-1)
    bound = max_neighbors_bound(r, shape)
    assert int(count.max()) <= bound <= math.prod(shape)


def test_max_neighbors_bound_is_tight_enough():
    # The volume bound for a 64x64 lattice and r=0.08 is within 35% of the true maximum.
    pos = lattice((64, 64))
    true_max = int(torch.bincount(radius_graph(pos, 0.08)[1]).max())
    assert true_max <= max_neighbors_bound(0.08, (64, 64)) <= 1.35 * true_max


def test_empty_point_sets():
    empty = torch.zeros(0, 2)
    pos = torch.rand(5, 2)
    for edge_index in [
        radius_graph(empty, 0.1),
        radius(empty, pos, 0.1),
        radius(pos, empty, 0.1),
        knn(empty, pos, 3),
        radius_graph(empty, 0.1, torch.zeros(0, dtype=torch.long), max_num_neighbors=3),
    ]:
        assert edge_index.shape == (2, 0) and edge_index.dtype == torch.long


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, b: radius_graph(p, 0.0), "radius"),
        (lambda p, b: radius_graph(p, -1.0), "radius"),
        (lambda p, b: radius_graph(p, float("nan")), "radius"),
        (lambda p, b: radius_graph(p, float("inf")), "radius"),
        (lambda p, b: radius_graph(p * 2, 0.1), r"domain \[0, 1\]\^d"),
        (lambda p, b: radius_graph(p - 0.5, 0.1), r"domain \[0, 1\]\^d"),
        (lambda p, b: radius_graph(torch.full_like(p, float("nan")), 0.1), "non-finite"),
        (lambda p, b: radius_graph(p[:, 0], 0.1), r"\[N, d\]"),
        (lambda p, b: radius_graph(p.long(), 0.1), "floating point"),
        (lambda p, b: radius_graph(p, 0.1, b[:-1]), "one entry per point"),
        (lambda p, b: radius_graph(p, 0.1, b.flip(0)), "sorted"),
        (lambda p, b: radius_graph(p, 0.1, b.int()), "LongTensor"),
        (lambda p, b: radius_graph(p, 0.1, b - 1), "negative"),
        (lambda p, b: radius_graph(p, 0.1, max_num_neighbors=0), "max_num_neighbors"),
        (lambda p, b: radius_graph(p, 0.1, on_truncation="ignore"), "on_truncation"),
        (lambda p, b: radius(p, p, 0.1, b, None), "both"),
        (lambda p, b: radius(p, p[:, :1], 0.1), "same dimension"),
        (lambda p, b: knn(p, p, 0), "'k'"),
        (lambda p, b: knn(p, p, 2, None, b), "both"),
    ],
)
def test_bad_inputs(call, match):
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(10, 2, generator=gen)
    batch = torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(ValueError, match=match):
        call(pos, batch)


def test_small_tolerance_outside_the_domain():
    pos = torch.tensor([[0.0, 1.0 + 5e-7], [-5e-7, 0.5]])
    assert radius_graph(pos, 0.6, loop=False).size(1) == 2
