"""No host synchronisation in the hot loop (issue 16, item 1): the inner layers of the model read
nothing back from the device, on the graph and on the dense path, in training and in sampling;
the inputs are checked where they enter (the model's call, the loss, sample()), in one read
each, and not at all with :func:`pyg_infdiff.validation` off. Counted by ``host_syncs.py``."""
import pytest
import torch
from host_syncs import count_host_syncs

from pyg_infdiff import validation, validation_enabled
from pyg_infdiff.data import GraphCollator
from pyg_infdiff.diffusion import MollifiedDiffusion, sample
from pyg_infdiff.graph import LatticeIndex, radius_graph
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.nn import GridPool, GridUnpool, KernelIntegralConv
from pyg_infdiff.noise import MollifiedNoise

BOUNDARY = "pyg_infdiff/models/unet.py"  # MultiscaleOperatorUNet.forward: check_nodes, once


def tiny_model(path: str = "auto", **overrides) -> MultiscaleOperatorUNet:
    base = dict(in_channels=1, out_channels=1, operator_channels=8, radius=0.15,
                kernel_hidden_channels=8, grid_shape=(8, 8), channels=8, channel_mults=(1, 2),
                attention_levels=(1,), num_heads=2, time_embed_dim=8, num_operator_blocks=2)
    torch.manual_seed(0)
    model = MultiscaleOperatorUNet(UNetConfig(**{**base, **overrides}))
    for module in model.modules():
        if isinstance(module, KernelIntegralConv):
            module.path = path
    return model


def collated(model: MultiscaleOperatorUNet, diffusion: MollifiedDiffusion, rate: float = 4):
    images = [torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    collator = GraphCollator(diffusion.mollifier, rate=rate, radius=model.config.radius)
    return collator(images, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def diffusion() -> MollifiedDiffusion:
    return MollifiedDiffusion(MollifiedNoise(sigma=1 / 32, ndim=2))


def library_sites(count) -> set[str]:
    return {site.split(":")[0] for site in count.by_site if site != "<outside the package>"}


@pytest.mark.parametrize("path", ["graph", "dense"])
def test_model_forward_backward_reads_once_at_its_boundary(path, diffusion):
    model = tiny_model(path)
    batch = collated(model, diffusion)
    lattice = LatticeIndex.from_data(batch)
    t = torch.tensor([3, 700])

    def step():
        out = model(batch.x, batch.pos, t, batch.batch, edge_index=batch.edge_index,
                    lattice=lattice)
        out.square().sum().backward()

    step()  # warm-up: caches of the layers
    with count_host_syncs() as count:
        step()
    assert count.total == 1 and library_sites(count) == {BOUNDARY}, str(count)
    with validation(False), count_host_syncs() as count:
        step()
    assert count.total == 0, str(count)


@pytest.mark.parametrize("path", ["graph", "dense"])
def test_training_step_reads_only_the_collated_batch(path, diffusion):
    model = tiny_model(path)
    batch = collated(model, diffusion)
    generator = torch.Generator().manual_seed(0)

    def step():
        diffusion.training_loss(model, batch, generator=generator).backward()

    step()
    with count_host_syncs() as count:
        step()
    # The lattice shapes of the batch; the time steps and batch vector; the model's inputs.
    assert count.total == 3, str(count)
    assert library_sites(count) == {BOUNDARY, "pyg_infdiff/diffusion/process.py"}, str(count)
    with validation(False), count_host_syncs() as count:
        step()
    assert count.total == 1, str(count)  # the lattice shapes: data, not a check


def test_full_lattice_forward_reads_nothing_inside():
    model = tiny_model().eval()
    lattice = LatticeIndex.full((16, 16), 2)
    pos = lattice.pos()
    x = torch.randn(pos.size(0), 1)
    with torch.no_grad():
        model(x, pos, torch.tensor([5, 5]), lattice.batch, lattice=lattice)
        with count_host_syncs() as count:
            model(x, pos, torch.tensor([5, 5]), lattice.batch, lattice=lattice)
        assert count.total == 1 and library_sites(count) == {BOUNDARY}, str(count)
        with validation(False), count_host_syncs() as count:
            model(x, pos, torch.tensor([5, 5]), lattice.batch, lattice=lattice)
    assert count.total == 0, str(count)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_steps_read_nothing(sampler, diffusion):
    model = tiny_model().eval()
    counts = []
    for steps in (1, 4):
        with count_host_syncs() as count:
            sample(model, diffusion, shape=(16, 16), num_samples=2, channels=1, steps=steps,
                   sampler=sampler, progress=False, generator=torch.Generator().manual_seed(0))
        counts.append(count.total)
    # Set-up reads (the sampler's time steps, the model's inputs at its first call) only.
    assert counts[0] == counts[1] <= 4, counts
    assert validation_enabled()  # restored after sampling


def test_layers_alone_check_values_unless_switched_off():
    conv = KernelIntegralConv(2, 2, radius=0.2)
    pos = torch.rand(30, 2)
    edge_index = radius_graph(pos, 0.2, loop=True)
    x = torch.randn(30, 2)
    with count_host_syncs() as count:
        conv(x, pos, edge_index)
    assert count.total > 0  # coordinates in [0, 1] and the order of the edges
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conv(x, pos + 2, edge_index)
    with validation(False), count_host_syncs() as count:
        out = conv(x, pos, edge_index)
        grid = GridPool((4, 4))(out, pos, torch.zeros(30, dtype=torch.long), num_graphs=1)
        GridUnpool()(grid, pos)
    assert count.total == 0, str(count)
    torch.testing.assert_close(out, conv(x, pos, edge_index))  # index_add_ vs segments


def test_pool_widening_is_bounded_and_exact():
    # A single node per graph: every grid point is filled after the fixed widening steps.
    pool = GridPool((8, 5))
    pos = torch.tensor([[0.05, 0.05], [0.9, 0.5]])
    x = torch.tensor([[1.0], [-2.0]])
    with count_host_syncs() as count:
        grid = pool(x, pos, torch.tensor([0, 1]), num_graphs=2)
    assert count.by_site.get("pyg_infdiff/nn/pool.py", 0) == 0
    torch.testing.assert_close(grid[0], torch.ones(1, 8, 5))
    torch.testing.assert_close(grid[1], torch.full((1, 8, 5), -2.0))


@pytest.mark.device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: "
                    "torch.cuda.is_available() is False on this machine")
@pytest.mark.parametrize("path", ["graph", "dense"])
def test_no_cuda_synchronisation_inside_the_model(path, diffusion):
    # On a GPU, CUDA itself says whether anything waited for the device (C++ operators too):
    # a training step's forward and backward with validation off, and a full-lattice forward.
    model = tiny_model(path).cuda()
    batch = collated(model, diffusion).to("cuda")
    lattice = LatticeIndex.from_data(batch)
    t = torch.tensor([3, 700], device="cuda")
    full = LatticeIndex.full((16, 16), 2, "cuda")

    def step():
        out = model(batch.x, batch.pos, t, batch.batch, edge_index=batch.edge_index,
                    lattice=lattice)
        out.square().sum().backward()
        with torch.no_grad():
            model(torch.randn(512, 1, device="cuda"), full.pos(), t, full.batch, lattice=full)

    step()
    torch.cuda.synchronize()
    with validation(False):
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
