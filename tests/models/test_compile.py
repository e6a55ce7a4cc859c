"""``torch.compile`` of the multiscale operator U-Net (issue 16, item 2): the full-lattice
sampling forward and the subsampled training forward (graph and dense paths) are each one
graph, without breaks (``torch._dynamo.explain``), and the compiled model computes what the
eager one does. The ``eager``/``aot_eager`` backends keep these tests to seconds; speed under
``inductor`` is measured by ``bench/compile_sampling.py``."""
import pytest
import torch

from pyg_infdiff import validation_enabled
from pyg_infdiff.graph import LatticeIndex, radius_graph
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.nn import KernelIntegralConv


def tiny_model(path: str = "auto") -> MultiscaleOperatorUNet:
    config = UNetConfig(in_channels=1, out_channels=1, operator_channels=8, radius=0.15,
                        kernel_hidden_channels=8, grid_shape=(8, 8), channels=8,
                        channel_mults=(1, 2), attention_levels=(1,), num_heads=2,
                        time_embed_dim=8)
    torch.manual_seed(0)
    model = MultiscaleOperatorUNet(config)
    torch.nn.init.normal_(model.proj.weight, std=0.5)  # the projection starts at zero
    for module in model.modules():
        if isinstance(module, KernelIntegralConv):
            module.path = path
    return model


def subsampled(shape=(16, 16), num_graphs=2, keep=128):
    full = LatticeIndex.full(shape, num_graphs)
    order = torch.randperm(full.pixel.numel(), generator=torch.Generator().manual_seed(0))
    index = order[:keep].sort().values
    return LatticeIndex(shape, full.pixel[index], full.batch[index], num_graphs)


def explain(model, *args, **kwargs):
    torch._dynamo.reset()
    result = torch._dynamo.explain(model)(*args, **kwargs)
    reasons = [f"{r.reason.splitlines()[0]} at {r.user_stack[-1]}" for r in result.break_reasons]
    return result.graph_count, result.graph_break_count, reasons


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("shape", [(16, 16), (8, 8)])
def test_full_lattice_sampling_forward_has_no_graph_break(shape):
    # (8, 8) nodes on an 8 x 8 grid; (16, 16) on it: the pool skips its empty-window widening.
    model = tiny_model().eval()
    lattice = LatticeIndex.full(shape, 2)
    pos = lattice.pos()
    x = torch.randn(pos.size(0), 1)
    with torch.no_grad():
        graphs, breaks, reasons = explain(model, x, pos, torch.tensor([5, 900]),
                                          lattice.batch, lattice=lattice)
    assert (graphs, breaks) == (1, 0), reasons


@pytest.mark.parametrize("path", ["graph", "dense"])
def test_subsampled_training_forward_has_no_graph_break(path):
    model = tiny_model(path).train()
    lattice = subsampled()
    pos = lattice.pos()
    edge_index = radius_graph(pos, model.config.radius, lattice.batch, loop=True)
    x = torch.randn(pos.size(0), 1)
    graphs, breaks, reasons = explain(model, x, pos, torch.tensor([5, 900]), lattice.batch,
                                      edge_index=edge_index, lattice=lattice)
    assert (graphs, breaks) == (1, 0), reasons


def test_compiled_model_matches_eager_and_trains():
    model = tiny_model()
    lattice = subsampled()
    pos = lattice.pos()
    edge_index = radius_graph(pos, model.config.radius, lattice.batch, loop=True)
    x, t = torch.randn(pos.size(0), 1), torch.tensor([5, 900])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x, pos, t, lattice.batch, edge_index=edge_index, lattice=lattice)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = model(x, pos, t, lattice.batch, edge_index=edge_index, lattice=lattice)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    for got, want in zip(grads, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_validation_is_off_inside_compiled_code():
    def probe(x):
        return x + 1 if validation_enabled() else x - 1

    assert validation_enabled()
    compiled = torch.compile(probe, backend="eager", fullgraph=True)
    assert float(compiled(torch.zeros(()))) == -1.0


def test_without_edges_the_neighbour_search_runs_eagerly():
    # torch_cluster cannot be traced: the model builds the radius graph outside the graph
    # (torch.compiler.disable), at most one break, and computes what the eager model does.
    model = tiny_model().eval()
    lattice = subsampled()
    pos = lattice.pos()
    x, t = torch.randn(pos.size(0), 1), torch.tensor([5, 900])
    with torch.no_grad():
        graphs, breaks, reasons = explain(model, x, pos, t, lattice.batch, lattice=lattice)
        assert breaks <= 1, reasons
        compiled = torch.compile(model, backend="eager")
        torch.testing.assert_close(compiled(x, pos, t, lattice.batch, lattice=lattice),
                                   model(x, pos, t, lattice.batch, lattice=lattice))


def test_switching_validation_does_not_recompile():
    # sample() calls the model with validation on, then off: one compilation serves both.
    from pyg_infdiff import validation

    model = tiny_model().eval()
    lattice = LatticeIndex.full((8, 8), 2)
    pos = lattice.pos()
    x, t = torch.randn(pos.size(0), 1), torch.tensor([5, 900])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        compiled(x, pos, t, lattice.batch, lattice=lattice)
        with torch._dynamo.config.patch(error_on_recompile=True), validation(False):
            compiled(x, pos, t, lattice.batch, lattice=lattice)


def test_sample_gives_a_compiled_model_the_lattice():
    # torch.compile wraps the model in an OptimizedModule whose forward(*args, **kwargs) hides
    # the model's signature: sampling must still pass the lattice (the dense, one-graph path).
    from pyg_infdiff.diffusion import accepts_lattice

    model = tiny_model()
    assert accepts_lattice(torch.compile(model, backend="eager"))
    assert accepts_lattice(model)


@pytest.mark.parametrize("rate", [None, 4])
def test_training_loss_with_a_fullgraph_compiled_model(rate):
    # The training path as the trainer runs it: collated batches (every pixel, or 4x
    # subsampled with radius edges), the loss outside, the model compiled as one graph.
    from pyg_infdiff.data import GraphCollator
    from pyg_infdiff.diffusion import MollifiedDiffusion
    from pyg_infdiff.noise import MollifiedNoise

    model = tiny_model()
    diffusion = MollifiedDiffusion(MollifiedNoise(sigma=1 / 32, ndim=2))
    collator = GraphCollator(diffusion.mollifier, rate=rate, radius=model.config.radius)
    images = [torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    batch = collator(images, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    loss = diffusion.training_loss(compiled, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    expected = diffusion.training_loss(model, batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
