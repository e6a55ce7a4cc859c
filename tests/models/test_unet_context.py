"""Reading nodes through a context subset (MultiscaleOperatorUNet(context=...)): exact
properties. The context nodes do not see the other nodes; with every node in the context the
call is the plain one."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.testing import redraw_zero_layers


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = UNetConfig.preset(28, operator_channels=8, channels=8, channel_mults=(1, 2),
                               attention_levels=(), grid_shape=(4, 4), radius=0.2,
                               kernel_hidden_channels=8, time_embed_dim=8)
    model = MultiscaleOperatorUNet(config).eval()
    redraw_zero_layers(model, generator=torch.Generator().manual_seed(seed))
    return model


MODEL = tiny_model()


def nodes(num, graphs, gen):
    pos = torch.rand(num * graphs, 2, generator=gen)
    return pos, torch.arange(graphs).repeat_interleave(num)


@settings(max_examples=15, deadline=None)
@given(num_ctx=st.integers(5, 40), num_extra=st.integers(1, 60), graphs=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_context_outputs_do_not_depend_on_the_other_nodes(num_ctx, num_extra, graphs, seed):
    gen = torch.Generator().manual_seed(seed)
    ctx_pos, ctx_batch = nodes(num_ctx, graphs, gen)
    extra_pos, extra_batch = nodes(num_extra, graphs, gen)
    x_ctx, x_extra = torch.randn(ctx_pos.size(0), 1, generator=gen), \
        torch.randn(extra_pos.size(0), 1, generator=gen)
    t = torch.randint(0, 1000, (graphs,), generator=gen)
    with torch.no_grad():
        alone = MODEL(x_ctx, ctx_pos, t, ctx_batch)
        # the extra nodes first within each graph, then the context nodes
        order = torch.argsort(torch.cat([extra_batch, ctx_batch]), stable=True)
        where = torch.empty_like(order)
        where[order] = torch.arange(order.numel())
        context = where[extra_pos.size(0):]
        out = MODEL(torch.cat([x_extra, x_ctx])[order], torch.cat([extra_pos, ctx_pos])[order],
                    t, torch.cat([extra_batch, ctx_batch])[order], context=context)
    torch.testing.assert_close(out[context], alone, atol=1e-5, rtol=1e-4)
    # the other nodes do read the context: they are not zero and differ from a plain call
    assert out[where[:extra_pos.size(0)]].abs().max() > 0


def test_all_nodes_as_context_is_the_plain_call():
    gen = torch.Generator().manual_seed(1)
    pos, batch = nodes(50, 2, gen)
    x, t = torch.randn(100, 1, generator=gen), torch.tensor([10, 500])
    with torch.no_grad():
        plain = MODEL(x, pos, t, batch)
        context = MODEL(x, pos, t, batch, context=torch.arange(100))
        edges = MODEL.context_graph(pos, torch.arange(100), batch)
        given_edges = MODEL(x, pos, t, batch, edge_index=edges, context=torch.arange(100))
    torch.testing.assert_close(context, plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(given_edges, context)


def test_context_with_a_lattice_is_refused():
    lat = LatticeIndex.full((8, 8), 1)
    with pytest.raises(ValueError, match="'lattice' or 'context'"):
        MODEL(torch.randn(64, 1), lat.pos(), torch.tensor([3]), lat.batch, lattice=lat,
              context=torch.arange(10))


def test_precomputed_kernels_give_the_same_output():
    gen = torch.Generator().manual_seed(3)
    pos, batch = nodes(70, 2, gen)
    context = torch.cat([torch.arange(0, 70, 3), torch.arange(70, 140, 2)])
    edges = MODEL.context_graph(pos, context, batch)
    kernels = MODEL.edge_kernels(pos, edges)
    x, t = torch.randn(140, 1, generator=gen), torch.tensor([20, 700])
    with torch.no_grad():
        fresh = MODEL(x, pos, t, batch, edge_index=edges, context=context)
        cached = MODEL(x, pos, t, batch, edge_index=edges, context=context, kernels=kernels)
    torch.testing.assert_close(cached, fresh)
    with pytest.raises(ValueError, match="one per operator block"):
        MODEL(x, pos, t, batch, edge_index=edges, context=context, kernels=kernels[:1])


def test_nested_lattices_read_through_the_coarse_one_agree_exactly():
    # a model read on 24x24 through the 8x8 lattice as its context gives, at the 8x8 centres,
    # exactly its values on the 8x8 lattice alone
    from pyg_infdiff.graph import lattice
    fine, coarse = lattice((24, 24)), lattice((8, 8))
    gen = torch.Generator().manual_seed(0)
    x_coarse = torch.randn(64, 1, generator=gen)
    x_fine = torch.randn(576, 1, generator=gen)
    x_fine.view(24, 24)[1::3, 1::3] = x_coarse.view(8, 8)  # one function: equal where shared
    t = torch.tensor([300])
    with torch.no_grad():
        alone = MODEL(x_coarse, coarse, t)
        both = MODEL(torch.cat([x_fine, x_coarse]), torch.cat([fine, coarse]), t,
                     context=torch.arange(576, 640))
    torch.testing.assert_close(both[:576].view(24, 24, 1)[1::3, 1::3].reshape(64, 1), alone,
                               atol=1e-5, rtol=1e-4)
