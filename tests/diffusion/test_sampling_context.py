"""sample(..., context=...): the model reads every node through a context of fixed density.
The context's trajectory is the same at every resolution; the initial noise function is the
one drawn without a context."""
import pytest
import torch
import torch.nn.functional as F

from pyg_infdiff.diffusion import (
    ContextNodes,
    LatticeSubset,
    MollifiedDiffusion,
    Observation,
    context_for,
    sample,
    training_nodes,
)
from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.testing import redraw_zero_layers


def random_model():
    torch.manual_seed(0)
    config = UNetConfig.preset(28, operator_channels=8, channels=8, channel_mults=(1, 2),
                               attention_levels=(), grid_shape=(4, 4), radius=0.2,
                               kernel_hidden_channels=8, time_embed_dim=8)
    model = MultiscaleOperatorUNet(config).eval()
    redraw_zero_layers(model, gain=0.5, generator=torch.Generator().manual_seed(0))
    return model


DIFFUSION = MollifiedDiffusion(MollifiedNoise(0.05, 2), parametrization="x0")


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_context_trajectory_is_the_same_at_every_resolution(eta):
    # also stochastic DDIM: every fresh noise is a whole field, read at the context's nodes
    model = random_model()
    runs = {n: sample(model, DIFFUSION, shape=(n, n), num_samples=2, channels=1, steps=6,
                      eta=eta, context=40, generator=torch.Generator().manual_seed(5),
                      progress=False)
            for n in (8, 16, 32)}
    for n in (16, 32):
        assert torch.equal(runs[n].context_pos, runs[8].context_pos)
        torch.testing.assert_close(runs[n].context_values, runs[8].context_values,
                                   atol=1e-5, rtol=1e-4)
    # and the queries read one function: the finer lattices pooled agree with the coarser
    # far better than two seeds do
    fine = F.avg_pool2d(runs[32].images, 2)
    other = sample(model, DIFFUSION, shape=(16, 16), num_samples=2, channels=1, steps=6,
                   eta=eta, context=40, generator=torch.Generator().manual_seed(6),
                   progress=False)
    same = (fine - runs[16].images).norm() / runs[16].images.norm()
    different = (other.images - runs[16].images).norm() / runs[16].images.norm()
    assert same < 0.5 * different


class Recorder(torch.nn.Module):
    """A denoiser predicting zero that keeps what it was called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x_t, pos, t, batch, edge_index=None, context=None):
        self.calls.append((x_t.clone(), pos.clone(), batch.clone(), context))
        return torch.zeros_like(x_t)


def test_initial_noise_is_the_function_drawn_without_context():
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    recorder = Recorder()
    out = sample(recorder, DIFFUSION, shape=(12, 12), num_samples=3, channels=2, steps=2,
                 context=20, generator=gen(), progress=False)
    x_t, pos, batch, context = recorder.calls[0]
    lat = LatticeIndex.full((12, 12), 3)
    plain = DIFFUSION.draw_noise(3, 2, lat.pos(), lat.batch, lat, gen())
    query = torch.ones(pos.size(0), dtype=torch.bool)
    query[context] = False
    torch.testing.assert_close(x_t[query], plain)
    torch.testing.assert_close(pos[query], lat.pos())
    # the context points are uniform in the domain, 20 per sample, after each sample's queries
    assert torch.equal(torch.bincount(batch[context]), torch.tensor([20, 20, 20]))
    assert bool((batch[1:] >= batch[:-1]).all())
    torch.testing.assert_close(pos[context], out.context_pos)
    # the same field at the context points
    field = DIFFUSION.noise.draw(3, 2, generator=gen())
    torch.testing.assert_close(x_t[context], field.evaluate(out.context_pos,
                                                           torch.arange(3).repeat_interleave(20)),
                               atol=1e-5, rtol=1e-4)


def test_given_context_points():
    recorder = Recorder()
    points = lattice((4, 4))
    out = sample(recorder, DIFFUSION, pos=torch.rand(30, 2), num_samples=2, channels=1,
                 steps=2, context=points, progress=False)
    assert torch.equal(out.context_pos, points.repeat(2, 1))
    per_sample = torch.rand(2, 5, 2)
    out = sample(recorder, DIFFUSION, shape=(6, 6), num_samples=2, channels=1, steps=2,
                 context=per_sample, progress=False)
    assert torch.equal(out.context_pos, per_sample.reshape(-1, 2))
    assert out.images.shape == (2, 1, 6, 6) and out.values.shape == (72, 1)


def test_bad_context():
    recorder = Recorder()
    kwargs = dict(shape=(6, 6), num_samples=2, channels=1, steps=2, progress=False)
    with pytest.raises(ValueError, match="positive"):
        sample(recorder, DIFFUSION, context=0, **kwargs)
    with pytest.raises(TypeError, match="number of points"):
        sample(recorder, DIFFUSION, context=2.5, **kwargs)
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        sample(recorder, DIFFUSION, context=torch.rand(3, 5, 2), **kwargs)
    with pytest.raises(ValueError, match=r"\[0, 1\]|outside|range"):
        sample(recorder, DIFFUSION, context=torch.rand(5, 2) + 1, **kwargs)
    observation = Observation(torch.zeros(72, dtype=torch.bool), torch.zeros(72, 1))
    with pytest.raises(ValueError, match="does not combine"):
        sample(recorder, DIFFUSION, context=5, observation=observation, **kwargs)
    with pytest.raises(ValueError, match="needs a 'context'"):
        sample(recorder, DIFFUSION, context_until=100, **kwargs)


def test_merge_places_values():
    nodes = ContextNodes.build(2, torch.rand(6, 1), torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    merged = nodes.merge(torch.arange(6.0).view(-1, 1), -torch.arange(1.0, 5.0).view(-1, 1))
    assert merged[nodes.query].view(-1).tolist() == [0, 1, 2, 3, 4, 5]
    assert merged[nodes.context].view(-1).tolist() == [-1, -2, -3, -4]
    assert nodes.batch.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_kernels_built_once_do_not_change_samples():
    # sample() builds the graph and the kernels once on point sets; a wrapper that hides
    # them from sample() makes the model build both at every step: the same samples.
    model = random_model()

    def plain(x_t, pos, t, batch, edge_index=None, context=None):
        return model(x_t, pos, t, batch, context=context)

    kwargs = dict(num_samples=2, channels=1, steps=4, progress=False)
    pos = torch.rand(90, 2, generator=torch.Generator().manual_seed(1))
    for extra in (dict(pos=pos), dict(shape=(10, 10), context=30)):
        a = sample(model, DIFFUSION, generator=torch.Generator().manual_seed(0), **extra,
                   **kwargs)
        b = sample(plain, DIFFUSION, generator=torch.Generator().manual_seed(0), **extra,
                   **kwargs)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=1e-4)


def test_lattice_subset_draws_distinct_pixel_centres():
    subset = LatticeSubset((8, 8), 20)
    points = subset.draw(3, torch.Generator().manual_seed(0))
    assert points.shape == (3, 20, 2)
    centres = lattice((8, 8))
    for graph in points:  # 20 distinct pixel centres of the 8x8 lattice
        match = (graph[:, None] - centres[None]).abs().amax(-1) < 1e-7
        assert bool((match.sum(1) == 1).all()) and match.any(0).sum() == 20
    assert not torch.equal(points[0], points[1])
    torch.testing.assert_close(subset.draw(3, torch.Generator().manual_seed(0)), points)
    recorder = Recorder()
    out = sample(recorder, DIFFUSION, shape=(12, 12), num_samples=3, channels=1, steps=2,
                 context=subset, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.context_pos.shape == (60, 2)
    with pytest.raises(ValueError, match="between 1 and the 64 pixels"):
        LatticeSubset((8, 8), 65)
    with pytest.raises(ValueError, match="not 2-D"):
        sample(recorder, DIFFUSION, shape=(6, 6), channels=1, steps=2, progress=False,
               context=LatticeSubset((8,), 4))


def test_training_nodes_and_where_a_context_helps():
    sparse = training_nodes((32, 32), 4)
    assert isinstance(sparse, LatticeSubset) and sparse == LatticeSubset((32, 32), 256)
    full = training_nodes((28, 28), 1)
    assert torch.equal(full, lattice((28, 28)))
    # a number of points or a LatticeSubset: on at least as many points
    assert context_for(sparse, 255) is None and context_for(sparse, 256) is sparse
    assert context_for(100, 99) is None and context_for(100, 100) == 100
    # given points (a full training lattice): on more points only, its own lattice plainly
    assert context_for(full, 28 * 28) is None and context_for(full, 28 * 28 + 1) is full
    assert context_for(None, 10**6) is None


def test_context_until_reads_the_nodes_alone_from_that_timestep():
    recorder = Recorder()
    out = sample(recorder, DIFFUSION, shape=(6, 6), num_samples=2, channels=1, steps=4,
                 context=10, context_until=500, progress=False)
    with_context = [call[3] is not None for call in recorder.calls]
    timesteps = DIFFUSION.schedule.num_steps - 1 - torch.arange(4) * 250  # 999, 749, ...
    assert with_context == [bool(t > 500) for t in timesteps.tolist()]
    for x_t, pos, batch, context in recorder.calls:
        assert x_t.size(0) == pos.size(0) == batch.size(0) == (92 if context is not None
                                                               else 72)
    last = recorder.calls[-1]
    torch.testing.assert_close(last[1], LatticeIndex.full((6, 6), 2).pos())
    assert out.context_pos is None and out.context_values is None
    assert out.images.shape == (2, 1, 6, 6)


@pytest.mark.parametrize("where", ["lattice", "points"])
def test_context_until_above_every_step_is_the_plain_sample(where):
    # DDIM with eta = 0 draws only the initial field (the context points come after it), so
    # a context dropped before the first step gives exactly the sample without a context
    model = random_model()
    nodes = (dict(shape=(9, 9)) if where == "lattice"
             else dict(pos=torch.rand(70, 2, generator=torch.Generator().manual_seed(3))))
    kwargs = dict(num_samples=2, channels=1, steps=5, progress=False, **nodes)
    plain = sample(model, DIFFUSION, generator=torch.Generator().manual_seed(4), **kwargs)
    dropped = sample(model, DIFFUSION, generator=torch.Generator().manual_seed(4), context=25,
                     context_until=DIFFUSION.schedule.num_steps, **kwargs)
    torch.testing.assert_close(dropped.values, plain.values, atol=1e-5, rtol=1e-4)
    # and one dropped half-way lies between: it differs from both
    half = sample(model, DIFFUSION, generator=torch.Generator().manual_seed(4), context=25,
                  context_until=500, **kwargs)
    full = sample(model, DIFFUSION, generator=torch.Generator().manual_seed(4), context=25,
                  **kwargs)
    assert not torch.allclose(half.values, plain.values, atol=1e-4)
    assert not torch.allclose(half.values, full.values, atol=1e-4)
