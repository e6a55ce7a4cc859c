import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import context_graph


def brute_force(pos, r, context, batch):
    edges = set()
    for i in range(pos.size(0)):
        edges.add((i, i))
        for j in context.tolist():
            if batch[j] == batch[i] and (pos[j] - pos[i]).norm() < r:
                edges.add((j, i))
    return edges


@settings(max_examples=25, deadline=None)
@given(num=st.integers(1, 60), frac=st.floats(0.05, 1.0), r=st.floats(0.05, 0.6),
       graphs=st.integers(1, 3), dim=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_context_graph_matches_brute_force(num, frac, r, graphs, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(num * graphs, dim, generator=gen)
    batch = torch.arange(graphs).repeat_interleave(num)
    keep = torch.rand(pos.size(0), generator=gen) < frac
    keep[0] = True
    context = keep.nonzero().view(-1)
    edge_index = context_graph(pos, r, context, batch)
    got = list(map(tuple, edge_index.t().tolist()))
    assert len(got) == len(set(got))  # no edge twice, self-loops of context nodes included
    # pairs within rounding of the radius may go either way
    assert brute_force(pos, r - 1e-6, context, batch) <= set(got)
    assert set(got) <= brute_force(pos, r + 1e-6, context, batch)
    # grouped by target, as the kernel integral's segment sums want
    assert bool((edge_index[1][1:] >= edge_index[1][:-1]).all())
    # sources are context nodes or the target itself
    src, dst = edge_index
    assert bool((keep[src] | (src == dst)).all())


def test_context_graph_of_all_nodes_is_the_radius_graph():
    from pyg_infdiff.graph import radius_graph
    pos = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    a = context_graph(pos, 0.2, torch.arange(50))
    b = radius_graph(pos, 0.2)
    assert set(map(tuple, a.t().tolist())) == set(map(tuple, b.t().tolist()))


def test_bad_context():
    pos = torch.rand(10, 2)
    with pytest.raises(ValueError, match="sorted"):
        context_graph(pos, 0.2, torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="sorted"):
        context_graph(pos, 0.2, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="out of range"):
        context_graph(pos, 0.2, torch.tensor([1, 10]))


def test_a_node_on_a_context_node_reads_it_as_itself():
    # 8x8 pixel centres are the centres of pixels 3i + 1 of 24x24: those 64 lattice nodes
    # have a context twin, get no self-loop, and read exactly what the twin reads.
    from pyg_infdiff.graph import lattice
    fine, coarse = lattice((24, 24)), lattice((8, 8))
    pos = torch.cat([fine, coarse])
    context = torch.arange(576, 640)
    edge_index = context_graph(pos, 0.15, context)
    src, dst = edge_index
    loops = src[src == dst]
    on_coarse = torch.zeros(24, 24, dtype=torch.bool)
    on_coarse[1::3, 1::3] = True
    twins = on_coarse.view(-1).nonzero().view(-1)
    assert set(loops.tolist()) == set(range(640)) - set(twins.tolist())
    for node, twin in [(int(twins[0]), 576), (int(twins[-1]), 639)]:
        assert sorted(src[dst == node].tolist()) == sorted(src[dst == twin].tolist())
