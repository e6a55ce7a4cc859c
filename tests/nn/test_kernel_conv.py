import importlib.util
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph.lattice import LatticeIndex, lattice
from pyg_infdiff.nn.kernel_conv import KernelIntegralConv

HAS_CLUSTER = importlib.util.find_spec("torch_cluster") is not None


def _brute_radius(pos_src, pos_dst, r):
    """Bipartite radius edges with torch_cluster's float rule: sum over axes of the squared
    coordinate differences, in the coordinates' dtype, strictly below float(r * r)."""
    diff = pos_dst[:, None, :] - pos_src[None, :, :]
    d2 = diff[..., 0] * diff[..., 0]
    for a in range(1, pos_src.size(1)):
        d2 = d2 + diff[..., a] * diff[..., a]
    r2 = torch.tensor(r * r, dtype=torch.float64).to(pos_src.dtype)
    dst, src = (d2 < r2).nonzero(as_tuple=True)
    return torch.stack([src, dst])


def _radius_graph(pos, r, batch=None):
    if HAS_CLUSTER:
        from pyg_infdiff.graph import radius_graph

        return radius_graph(pos, r, batch, loop=True)
    batch = torch.zeros(pos.size(0), dtype=torch.long) if batch is None else batch
    edges = []
    for b in batch.unique().tolist():
        idx = (batch == b).nonzero().squeeze(1)
        edges.append(idx[_brute_radius(pos[idx], pos[idx], r)])
    return torch.cat(edges, dim=1)


def _lattice_radius(pos_dst, n, r):
    """Exact bipartite radius edges from the full n x n lattice (row-major) to query points."""
    half = int(r * n) + 2
    k = torch.arange(-half, half + 1)
    box = torch.stack(torch.meshgrid(k, k, indexing="ij"), -1).reshape(-1, 2)
    cand = (pos_dst * n).floor().long()[:, None, :] + box[None]
    valid = ((cand >= 0) & (cand < n)).all(-1)
    diff = pos_dst[:, None, :] - ((cand.double() + 0.5) / n).float()
    d2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]
    r2 = torch.tensor(r * r, dtype=torch.float64).float()
    q, c = (valid & (d2 < r2)).nonzero(as_tuple=True)
    return torch.stack([cand[q, c, 0] * n + cand[q, c, 1], q])


def _subsampled(shape, num_graphs, keep, seed):
    full = LatticeIndex.full(shape, num_graphs)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(full.pixel.numel(), generator=g) < keep
    mask[:: max(1, full.num_pixels)] = True  # no empty graph
    return LatticeIndex(shape, full.pixel[mask], full.batch[mask], num_graphs)


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _run(conv, x, pos, **kwargs):
    x = x.detach().requires_grad_()
    conv.zero_grad()
    out = conv(x, pos, **kwargs)
    w = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * w).sum().backward()
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    return out.detach(), grads


CASES = {1: ((37,), 0.1), 2: ((13, 17), 0.2), 3: ((6, 7, 5), 0.3)}


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize("normalization", ["window", "mean"])
@pytest.mark.parametrize("keep", [1.0, 0.6])
def test_graph_path_equals_dense_path(dim, depthwise, normalization, keep):
    torch.manual_seed(dim)
    shape, radius = CASES[dim]
    lat = LatticeIndex.full(shape, 2) if keep == 1.0 else _subsampled(shape, 2, keep, dim)
    pos = lat.pos()
    edge_index = _radius_graph(pos, radius, lat.batch)
    x = torch.randn(pos.size(0), 3)
    conv = KernelIntegralConv(
        3, 4, radius, dim=dim, depthwise=depthwise, normalization=normalization
    )
    out_graph, grads_graph = _run(conv, x, pos, edge_index=edge_index)
    # Alternate the dense variants over the matrix; both are checked in every dimension.
    conv.dense_method = "direct" if depthwise == (keep == 1.0) else "fft"
    conv.path = "dense"
    out_dense, grads_dense = _run(conv, x, pos, lattice=lat)
    assert _rel(out_dense, out_graph) <= 1e-5
    for gd, gg in zip(grads_dense, grads_graph):
        assert _rel(gd, gg) <= 1e-5


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_tabulated_graph_path(dim):
    # With a lattice, the graph path gathers the kernel from a table of lattice offsets instead
    # of evaluating the MLP per edge: same numbers, gradients included. Edges longer than the
    # layer's radius (a wider caller graph) carry no weight in the window normalisation.
    torch.manual_seed(dim)
    shape, radius = CASES[dim]
    lat = _subsampled(shape, 2, 0.7, dim)
    pos = lat.pos()
    x = torch.randn(pos.size(0), 3)
    for depthwise, normalization, graph_radius in [
        (True, "window", radius),
        (False, "mean", radius),
        (True, "window", 1.5 * radius),
    ]:
        conv = KernelIntegralConv(
            3, 2, radius, dim=dim, depthwise=depthwise, normalization=normalization, path="graph"
        )
        edge_index = _radius_graph(pos, graph_radius, lat.batch)
        plain, grads_plain = _run(conv, x, pos, edge_index=edge_index)
        table, grads_table = _run(conv, x, pos, edge_index=edge_index, lattice=lat)
        assert _rel(table, plain) <= 1e-5
        for a, b in zip(grads_table, grads_plain):
            assert _rel(a, b) <= 1e-5
        if normalization == "window":
            conv.path = "dense"
            assert _rel(conv(x, pos, lattice=lat), plain) <= 1e-5


def test_edge_order_does_not_matter():
    # Target-sorted edges take a segment sum, others index_add_: the same numbers.
    torch.manual_seed(0)
    pos = torch.rand(60, 2)
    x = torch.randn(60, 3)
    edge_index = _radius_graph(pos, 0.3)
    conv = KernelIntegralConv(3, 3, 0.3)
    perm = torch.randperm(edge_index.size(1))
    assert (conv(x, pos, edge_index) - conv(x, pos, edge_index[:, perm])).abs().max() <= 1e-6


def test_inference_mode_then_training():
    # Cached denominators must not be inference tensors that autograd cannot save.
    lat = LatticeIndex.full((10, 10))
    pos, x = lat.pos(), torch.randn(100, 2)
    conv = KernelIntegralConv(2, 2, 0.2, path="dense")
    with torch.inference_mode():
        ref = conv(x, pos, lattice=lat)
    out = conv(x.requires_grad_(), pos, lattice=lat)
    out.sum().backward()
    assert torch.allclose(out, ref) and x.grad is not None


@settings(max_examples=8, deadline=None)
@given(
    n1=st.integers(3, 14),
    n2=st.integers(3, 14),
    radius=st.floats(0.04, 0.45),
    keep=st.floats(0.2, 1.0),
    seed=st.integers(0, 2**16),
)
def test_graph_equals_dense_property(n1, n2, radius, keep, seed):
    torch.manual_seed(seed)
    lat = _subsampled((n1, n2), 2, keep, seed)
    pos = lat.pos()
    x = torch.randn(pos.size(0), 2)
    for normalization in ("window", "mean"):
        conv = KernelIntegralConv(2, 3, radius, normalization=normalization, path="dense")
        out_dense = conv(x, pos, lattice=lat)
        conv.path = "graph"
        out_graph = conv(x, pos, _radius_graph(pos, radius, lat.batch))
        assert _rel(out_dense, out_graph) <= 1e-5


@pytest.mark.parametrize(
    "shape,radius", [((20, 20), 0.25), ((10, 10), 0.3), ((100,), 0.07), ((7, 9, 11), 3 / 9)]
)
def test_borderline_neighbours(shape, radius):
    # r is exactly a lattice distance: float rounding decides pair by pair whether the points at
    # distance r are neighbours. The dense path reproduces the count of the radius graph.
    torch.manual_seed(0)
    lat = _subsampled(shape, 1, 0.8, 1)
    pos = lat.pos()
    edge_index = _radius_graph(pos, radius)
    if HAS_CLUSTER:
        brute = _brute_radius(pos, pos, radius)
        key = lambda e: set(zip(*e.tolist()))  # noqa: E731
        assert key(edge_index) == key(brute)
    x = torch.randn(pos.size(0), 2)
    conv = KernelIntegralConv(2, 2, radius, dim=len(shape), normalization="mean")
    out_graph = conv(x, pos, edge_index)
    for method in ("direct", "fft"):
        conv.dense_method = method
        assert _rel(conv(x, pos, lattice=lat), out_graph) <= 1e-5


@pytest.mark.parametrize("path", ["graph", "dense"])
def test_node_permutation_invariance(path):
    torch.manual_seed(0)
    lat = _subsampled((12, 10), 2, 0.7, 0)
    pos, x = lat.pos(), torch.randn(lat.pixel.numel(), 4)
    conv = KernelIntegralConv(4, 5, 0.2, path=path)
    edge_index = _radius_graph(pos, 0.2, lat.batch)
    out = conv(x, pos, edge_index, lattice=lat)
    perm = torch.randperm(x.size(0))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    lat_p = LatticeIndex(lat.shape, lat.pixel[perm], lat.batch[perm], lat.num_graphs)
    out_p = conv(x[perm], pos[perm], inv[edge_index], lattice=lat_p)
    assert (out_p - out[perm]).abs().max() <= 1e-6


@pytest.mark.parametrize("path", ["graph", "dense"])
def test_batch_composition(path):
    torch.manual_seed(0)
    lat = _subsampled((9, 11), 3, 0.6, 3)
    pos, x = lat.pos(), torch.randn(lat.pixel.numel(), 3)
    conv = KernelIntegralConv(3, 3, 0.25, path=path, normalization="mean")
    out = conv(x, pos, _radius_graph(pos, 0.25, lat.batch), lattice=lat)
    for b in range(3):
        idx = (lat.batch == b).nonzero().squeeze(1)
        single = LatticeIndex(lat.shape, lat.pixel[idx], torch.zeros_like(idx), 1)
        alone = conv(x[idx], pos[idx], _radius_graph(pos[idx], 0.25), lattice=single)
        assert (alone - out[idx]).abs().max() <= 1e-6


def test_bipartite_form():
    torch.manual_seed(0)
    pos_src = lattice((16, 16))
    pos_dst = torch.rand(40, 2)
    x = torch.randn(pos_src.size(0), 3)
    conv = KernelIntegralConv(3, 2, 0.15)
    edges = _brute_radius(pos_src, pos_dst, 0.15)
    out = conv((x, None), (pos_src, pos_dst), edges)
    assert out.shape == (40, 2)
    # Target features are ignored; reading at the sources themselves is the plain form.
    assert torch.equal(conv((x, torch.randn(40, 3)), (pos_src, pos_dst), edges), out)
    self_edges = _radius_graph(pos_src, 0.15)
    plain = conv(x, pos_src, self_edges)
    assert torch.allclose(conv((x, None), (pos_src, pos_src), self_edges), plain)
    # Targets without neighbours get the bias only.
    far = conv((x[:5], None), (pos_src[:5], torch.tensor([[0.9, 0.9]])), torch.empty(2, 0).long())
    assert torch.allclose(far, conv.lin.bias.unsqueeze(0))


def _smooth_field(p):
    u, v = p[:, 0], p[:, 1]
    return torch.stack(
        [
            torch.sin(2 * math.pi * (1.1 * u + 0.7 * v) + 0.3),
            torch.cos(2 * math.pi * (0.6 * u - 1.3 * v)) * torch.exp(-((u - 0.4) ** 2)),
        ],
        dim=1,
    )


def _convergence(normalization, seed, resolutions=(64, 128, 256), radius=0.08):
    torch.manual_seed(seed)
    conv = KernelIntegralConv(2, 2, radius, normalization=normalization)
    queries = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
    outs = []
    with torch.no_grad():
        for n in resolutions:
            src = lattice((n, n))
            edges = _lattice_radius(queries, n, radius)
            outs.append(conv((_smooth_field(src), None), (src, queries), edges))
    return [_rel(a, b) for a, b in zip(outs[:-1], outs[1:])]


def test_convergence_between_resolutions():
    coarse, fine = _convergence("window", seed=0)
    assert fine <= 0.01 and fine < coarse


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_convergence_between_resolutions_seeds(seed):
    coarse, fine = _convergence("window", seed=seed)
    assert fine <= 0.01 and fine < coarse
    # The plain neighbour mean converges too, but more slowly.
    coarse_mean, fine_mean = _convergence("mean", seed=seed)
    assert fine_mean < coarse_mean and fine < fine_mean


@pytest.mark.parametrize("normalization", ["window", "mean"])
def test_output_variance_is_order_one(normalization):
    torch.manual_seed(0)
    shape = (32, 32)
    lat = LatticeIndex.full(shape)
    pos = lat.pos()
    freq = torch.randn(64, 2) * 3
    phase = torch.rand(64) * 2 * math.pi
    x = math.sqrt(2) * torch.cos(pos @ freq.t() + phase)  # smooth, unit variance per channel
    conv = KernelIntegralConv(64, 64, 0.1, normalization=normalization)
    with torch.no_grad():
        std = conv(x, pos, lattice=lat).std().item()
    assert 0.4 < std < 2.5


def test_auto_path():
    torch.manual_seed(0)
    lat = LatticeIndex.full((12, 12))
    pos, x = lat.pos(), torch.randn(144, 2)
    conv = KernelIntegralConv(2, 2, 0.2)
    edge_index = _radius_graph(pos, 0.2)
    dense = conv(x, pos, lattice=lat)  # no edges: dense
    graph = conv(x, pos, edge_index)  # no lattice: graph
    auto = conv(x, pos, edge_index, lattice=lat)
    assert _rel(dense, graph) <= 1e-5 and _rel(auto, graph) <= 1e-5
    assert conv.plan(edge_index) == "graph"
    assert conv.plan(None, lat) in ("direct", "fft")
    assert conv.plan(edge_index, lat) in ("graph", "direct", "fft")
    # Large kernels go to the FFT, tiny ones to the direct convolution.
    assert KernelIntegralConv(2, 2, 0.2).plan(None, LatticeIndex.full((128, 128))) == "fft"
    assert KernelIntegralConv(2, 2, 0.01).plan(None, LatticeIndex.full((128, 128))) == "direct"
    # Very sparse nodes on a large lattice: message passing.
    sparse = _subsampled((256, 256), 1, 0.01, 0)
    sparse_edges = _radius_graph(sparse.pos(), 0.02)
    assert KernelIntegralConv(2, 2, 0.02).plan(sparse_edges, sparse) == "graph"
    with pytest.raises(ValueError, match="edge_index"):
        conv(x, pos)
    with pytest.raises(ValueError, match="edge_index"):
        conv.plan()


def test_errors():
    with pytest.raises(ValueError, match="radius"):
        KernelIntegralConv(2, 2, 0.0)
    with pytest.raises(ValueError, match="radius"):
        KernelIntegralConv(2, 2, -0.1)
    with pytest.raises(ValueError, match="normalization"):
        KernelIntegralConv(2, 2, 0.1, normalization="sum")
    with pytest.raises(ValueError, match="path"):
        KernelIntegralConv(2, 2, 0.1, path="sparse")
    conv = KernelIntegralConv(2, 2, 0.2)
    lat = LatticeIndex.full((8, 8))
    pos, x = lat.pos(), torch.randn(64, 2)
    edges = _radius_graph(pos, 0.2)
    with pytest.raises(ValueError, match="Empty graph"):
        conv(x[:0], pos[:0], edges[:, :0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conv(x, pos + 0.5, edges)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conv(x, pos.masked_fill(pos > 0.9, float("nan")), edges)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        conv(torch.randn(64, 3), pos, edges)
    with pytest.raises(ValueError, match="positions"):
        conv(x, pos[:10], edges)
    with pytest.raises(ValueError, match="pos of shape"):
        conv(x, torch.rand(64, 3), edges)
    with pytest.raises(ValueError, match="edge_index"):
        conv(x, pos, edges[0])
    dense = KernelIntegralConv(2, 2, 0.2, path="dense")
    with pytest.raises(ValueError, match="lattice"):
        dense(x, pos, edges)
    with pytest.raises(ValueError, match="bipartite"):
        conv((x, None), (pos, pos), edges, lattice=lat)
    with pytest.raises(ValueError, match="pixel centres"):
        dense(x, pos.flip(0), lattice=lat)
    with pytest.raises(ValueError, match="does not match"):
        dense(x, pos, lattice=LatticeIndex.full((64,)))


def test_repr_and_reset():
    conv = KernelIntegralConv(64, 64, 0.08)
    assert repr(conv) == (
        "KernelIntegralConv(64, 64, radius=0.0800, depthwise=True, normalization='window')"
    )
    full = KernelIntegralConv(3, 5, 0.1, depthwise=False, normalization="mean", bias=False)
    assert repr(full) == (
        "KernelIntegralConv(3, 5, radius=0.1000, depthwise=False, normalization='mean')"
    )
    assert full.bias is None
    before = [p.clone() for p in conv.parameters()]
    conv.reset_parameters()
    assert all(a.shape == b.shape for a, b in zip(before, conv.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, conv.parameters()))
