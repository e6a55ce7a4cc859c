import pytest
import torch

from pyg_infdiff.graph import LatticeIndex, radius_graph
from pyg_infdiff.nn.operator_block import OperatorBlock

RADIUS = 0.2


def make_block(in_ch=4, out_ch=4, dim=2, **kwargs):
    block = OperatorBlock(in_ch, out_ch, RADIUS, 8, dim=dim, **kwargs)
    torch.nn.init.normal_(block.lin2.weight, std=0.3)  # leave the zero init
    return block


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_shapes_and_gradients(dim):
    pos = torch.rand(60, dim)
    batch = torch.cat([torch.zeros(25), torch.ones(35)]).long()
    edge_index = radius_graph(pos, RADIUS, batch, loop=True)
    block = make_block(4, 6, dim=dim)
    x = torch.randn(60, 4, requires_grad=True)
    out = block(x, pos, torch.randn(2, 8), batch, edge_index=edge_index)
    assert out.shape == (60, 6)
    out.square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert block.time_proj.weight.grad is not None


def test_graph_and_dense_paths_agree():
    index = LatticeIndex.full((12, 12), num_graphs=2)
    pos, batch = index.pos(), index.batch
    edge_index = radius_graph(pos, RADIUS, batch, loop=True)
    block = make_block()
    x, emb = torch.randn(pos.size(0), 4), torch.randn(2, 8)
    graph = block(x, pos, emb, batch, edge_index=edge_index)
    dense = block(x, pos, emb, batch, lattice=index)
    torch.testing.assert_close(graph, dense, atol=1e-5, rtol=1e-5)


def test_time_conditioning_is_per_graph():
    pos = torch.rand(40, 2)
    batch = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    edge_index = radius_graph(pos, RADIUS, batch, loop=True)
    block = make_block()
    x = torch.randn(40, 4)
    emb = torch.randn(2, 8)
    out = block(x, pos, emb, batch, edge_index=edge_index)
    emb2 = emb.clone()
    emb2[1] += 1.0
    out2 = block(x, pos, emb2, batch, edge_index=edge_index)
    torch.testing.assert_close(out[:20], out2[:20])
    assert float((out[20:] - out2[20:]).detach().abs().max()) > 1e-4


def test_permutation_invariance():
    pos = torch.rand(50, 2)
    edge_index = radius_graph(pos, RADIUS, loop=True)
    block = make_block()
    x, emb = torch.randn(50, 4), torch.randn(1, 8)
    out = block(x, pos, emb, edge_index=edge_index)
    perm = torch.randperm(50)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(50)
    out_p = block(x[perm], pos[perm], emb, edge_index=inv[edge_index])
    torch.testing.assert_close(out_p, out[perm], atol=1e-6, rtol=1e-5)


def test_identity_branches_and_errors():
    block = OperatorBlock(4, 4, RADIUS, 8)
    assert repr(block) == "OperatorBlock(4, 4, radius=0.2)"
    pos = torch.rand(10, 2)
    with pytest.raises(ValueError, match="input channels"):
        block(torch.randn(10, 3), pos, torch.randn(1, 8), edge_index=radius_graph(pos, RADIUS))
    with pytest.raises(ValueError, match="one graph"):
        block(torch.randn(10, 4), pos, torch.randn(2, 8), edge_index=radius_graph(pos, RADIUS))
    with pytest.raises(ValueError, match="mlp_ratio"):
        OperatorBlock(4, 4, RADIUS, 8, mlp_ratio=0)
