import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from pyg_infdiff.diffusion import (
    LossAwareTimestepSampler,
    MollifiedDiffusion,
    cosine_schedule,
    linear_schedule,
    min_snr_weight,
)
from pyg_infdiff.diffusion.process import _graph_inputs
from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise

PARAMETRIZATIONS = ["mollified_eps", "eps", "x0", "v"]


def make_diffusion(parametrization="mollified_eps", sigma=0.1, ndim=2, schedule=None):
    return MollifiedDiffusion(MollifiedNoise(sigma, ndim), schedule, parametrization)


def lattice_batch(shape=(8, 8), num_graphs=3, channels=2, seed=0, keep=None):
    """Graphs on a lattice (optionally a subset of pixels) with smooth mollified data."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.arange(math.prod(shape)) if keep is None else keep
    pos = lattice(shape)[pixels]
    graphs = []
    for _ in range(num_graphs):
        x = MollifiedNoise(0.2, len(shape)).sample(pos, channels=channels, generator=g)
        graphs.append(Data(x=x, pos=pos, pixel=pixels,
                           lattice_shape=torch.tensor([list(shape)])))
    return Batch.from_data_list(graphs)


def test_q_sample_indexes_per_graph_steps():
    diffusion = make_diffusion()
    sizes, t = [5, 9, 3], torch.tensor([0, 500, 999])
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    x0, noise = torch.randn(17, 2), torch.randn(17, 2)
    x_t = diffusion.q_sample(x0, t, noise, batch)
    abar = cosine_schedule().alphas_cumprod
    for n in range(17):
        a = abar[t[batch[n]]].sqrt().item()
        expected = a * x0[n] + math.sqrt(1 - a * a) * noise[n]
        torch.testing.assert_close(x_t[n], expected)
    # Node order does not matter.
    perm = torch.randperm(17)
    torch.testing.assert_close(diffusion.q_sample(x0[perm], t, noise[perm], batch[perm]),
                               x_t[perm])


@pytest.mark.parametrize("draw", ["draw_noise", "training_noise"])
def test_forward_marginals_at_nodes(draw):
    # x_t = a T x0 + s T eps at each node: mean a x0, variance s^2 Var(T eps(u)), with the
    # variance of the field at u from the noise's analytic covariance; for the field read as a
    # function (sampling) and for the training draw on the lattice.
    diffusion = make_diffusion(sigma=0.1)
    shape, reps = (6, 6), 3000
    steps = torch.tensor([20, 400, 900])
    num_graphs = reps * len(steps)
    index = LatticeIndex.full(shape, num_graphs)
    pos = index.pos()
    x0 = torch.sin(2 * math.pi * pos[:, :1]) * torch.cos(math.pi * pos[:, 1:])
    t = steps.repeat(reps)
    noise = getattr(diffusion, draw)(num_graphs, 1, pos, index.batch, index,
                                     torch.Generator().manual_seed(0))
    x_t = diffusion.q_sample(x0, t, noise, index.batch).view(reps, len(steps), -1)
    x0 = x0.view(reps, len(steps), -1)[0, 0]
    u = lattice(shape, dtype=torch.float64)
    field_var = diffusion.noise.covariance(u, u).float()
    for j, step in enumerate(steps.tolist()):
        a = diffusion.schedule.signal_scale[step].item()
        s = diffusion.schedule.noise_scale[step].item()
        mean, var = x_t[:, j].mean(0), x_t[:, j].var(0)
        assert ((mean - a * x0).abs() <= 5 * s * field_var.sqrt() / math.sqrt(reps)).all()
        rel = (var / (s * s * field_var) - 1).abs()
        assert rel.max() < 5 * math.sqrt(2 / reps)


@settings(max_examples=25, deadline=None)
@given(parametrization=st.sampled_from(PARAMETRIZATIONS), step=st.integers(0, 999),
       linear=st.booleans())
def test_conversions_round_trip(parametrization, step, linear):
    schedule = linear_schedule() if linear else None
    diffusion = make_diffusion(parametrization, schedule=schedule)
    x0, noise = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    t = torch.tensor([step])
    x_t = diffusion.q_sample(x0, t, noise)
    output = diffusion.target(x0, noise, t)
    torch.testing.assert_close(diffusion.predict_x0(output, x_t, t), x0)
    torch.testing.assert_close(diffusion.predict_noise(output, x_t, t), noise)


def test_eps_is_an_alias_of_mollified_eps():
    assert make_diffusion("eps").parametrization == "mollified_eps"
    diffusion = make_diffusion()
    assert isinstance(diffusion.mollifier, GaussianMollifier)
    assert diffusion.mollifier.sigma == diffusion.noise.sigma
    assert "mollified_eps" in repr(diffusion)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_perfect_model_has_zero_loss(parametrization):
    diffusion = make_diffusion(parametrization)
    data = lattice_batch()
    noise = torch.randn_like(data.x)
    t = torch.tensor([3, 400, 999])

    def model(x_t, pos, t, batch, edge_index=None, lattice=None):
        return diffusion.target(data.x, noise, t, batch)

    assert diffusion.training_loss(model, data, t, noise).item() == 0.0

    # Without given noise: a model that knows x0 recovers the drawn noise from x_t.
    def knows_x0(x_t, pos, t, batch, edge_index=None, lattice=None):
        a, s = diffusion.coefficients(t, batch, x_t.size(0))
        return diffusion.target(data.x, (x_t - a * data.x) / s, t, batch)

    loss = diffusion.training_loss(knows_x0, data, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8


@settings(max_examples=25, deadline=None)
@given(gamma=st.floats(0.1, 20.0), linear=st.booleans(), seed=st.integers(0, 2**16))
def test_min_snr_weights_one_x0_error_in_every_parametrization(gamma, linear, seed):
    # Oracle: for any model output, the Min-SNR-weighted squared error of each
    # parametrisation is min(SNR_t, gamma) times the squared error of its x0 prediction.
    schedule = linear_schedule() if linear else cosine_schedule()
    abar = schedule.alphas_cumprod
    snr = abar / (1 - abar)
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, schedule.num_steps, (6,), generator=g)
    a, s = abar[t].sqrt().unsqueeze(-1), (1 - abar[t]).sqrt().unsqueeze(-1)
    x0, noise = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(
        6, 3, generator=g, dtype=torch.float64)
    x_t = a * x0 + s * noise
    for parametrization in ["mollified_eps", "x0", "v"]:
        diffusion = make_diffusion(parametrization, schedule=schedule)
        output = torch.randn(6, 3, generator=g, dtype=torch.float64)
        error = (output - diffusion.target(x0, noise, t, torch.arange(6))).pow(2).sum(-1)
        x0_error = (diffusion.predict_x0(output, x_t, t, torch.arange(6)) - x0).pow(2).sum(-1)
        weight = min_snr_weight(snr[t], gamma, parametrization)
        torch.testing.assert_close(weight * error, snr[t].clamp(max=gamma) * x0_error)
    assert (min_snr_weight(snr, gamma, "x0") <= gamma).all()


@pytest.mark.parametrize("parametrization", ["mollified_eps", "x0", "v"])
def test_loss_weight_scales_each_graph(parametrization):
    diffusion = MollifiedDiffusion(MollifiedNoise(0.1, 2), parametrization=parametrization,
                                   snr_gamma=5.0)
    uniform = make_diffusion(parametrization)
    every = torch.arange(diffusion.num_steps)
    weight = diffusion.loss_weight(every)
    assert weight.dtype == torch.float32 and weight.mean().item() == pytest.approx(1.0)
    abar = diffusion.schedule.alphas_cumprod
    raw = min_snr_weight(abar / (1 - abar), 5.0, parametrization)
    torch.testing.assert_close(weight, (raw / raw.mean()).float())
    assert torch.equal(uniform.loss_weight(every), torch.ones(diffusion.num_steps))
    # The loss is the node mean of the per-graph weights times the squared errors.
    data, t = lattice_batch(), torch.tensor([3, 400, 999])
    noise = torch.randn_like(data.x)

    def zero(x_t, pos, t, batch, edge_index=None, lattice=None):
        return torch.zeros_like(x_t)

    weighted = diffusion.training_losses(zero, data, t, noise)
    plain = uniform.training_losses(zero, data, t, noise)
    torch.testing.assert_close(weighted.per_graph, plain.per_graph)
    torch.testing.assert_close(weighted.weights, diffusion.loss_weight(t))
    torch.testing.assert_close(weighted.loss, (weighted.weights * plain.per_graph).mean())
    assert "snr_gamma=5" in repr(diffusion) and "snr_gamma" not in repr(uniform)
    with pytest.raises(ValueError, match="snr_gamma"):
        MollifiedDiffusion(MollifiedNoise(0.1, 2), snr_gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        min_snr_weight(abar, -1.0, "x0")


def test_loss_value_reproducibility_and_model_arguments():
    diffusion = make_diffusion()
    keep = torch.tensor([0, 3, 5, 8, 13, 21, 34, 55, 60])
    data = lattice_batch(keep=keep)
    data.edge_index = torch.tensor([[0, 1], [1, 0]])
    seen = {}

    def zero(x_t, pos, t, batch, edge_index=None, lattice=None):
        seen.update(edge_index=edge_index, lattice=lattice, t=t)
        return torch.zeros_like(x_t)

    noise = torch.randn_like(data.x)
    losses = diffusion.training_losses(zero, data, torch.tensor([1, 2, 3]), noise)
    assert losses.loss.item() == pytest.approx(noise.pow(2).mean().item())
    expected = noise.pow(2).mean(-1).view(3, -1).mean(-1)
    torch.testing.assert_close(losses.per_graph, expected)
    assert seen["edge_index"] is data.edge_index
    assert seen["lattice"].shape == (8, 8) and torch.equal(seen["lattice"].pixel, data.pixel)
    assert torch.equal(seen["t"], torch.tensor([1, 2, 3]))

    first = diffusion.training_loss(zero, data, generator=torch.Generator().manual_seed(5))
    again = diffusion.training_loss(zero, data, generator=torch.Generator().manual_seed(5))
    other = diffusion.training_loss(zero, data, generator=torch.Generator().manual_seed(6))
    assert first.item() == again.item() != other.item()
    assert torch.isfinite(first)

    # Without lattice attributes the noise is evaluated at pos and the model gets lattice=None.
    plain = Batch.from_data_list([Data(x=d.x, pos=d.pos) for d in data.to_data_list()])
    diffusion.training_loss(zero, plain, generator=torch.Generator().manual_seed(5))
    assert seen["lattice"] is None and seen["edge_index"] is None


def test_mixed_resolutions_fall_back_to_points():
    diffusion = make_diffusion()
    graphs = lattice_batch((8, 8), 1).to_data_list() + lattice_batch((4, 4), 1).to_data_list()
    data = Batch.from_data_list(graphs)
    seen = {}

    def zero(x_t, pos, t, batch, edge_index=None, lattice=None):
        seen["lattice"] = lattice
        return torch.zeros_like(x_t)

    loss = diffusion.training_loss(zero, data, generator=torch.Generator().manual_seed(0))
    assert seen["lattice"] is None and torch.isfinite(loss)


def every_third_pixel(num_graphs: int = 2) -> LatticeIndex:
    """Every third pixel of an 8 x 8 lattice, in each of :obj:`num_graphs` graphs."""
    keep = torch.arange(0, 64, 3)
    return LatticeIndex(shape=(8, 8), pixel=keep.repeat(num_graphs),
                        batch=torch.arange(num_graphs).repeat_interleave(keep.numel()),
                        num_graphs=num_graphs)


def test_noise_lattice_path_equals_point_path():
    diffusion = make_diffusion()
    index = every_third_pixel()
    pos = index.pos()
    fast = diffusion.draw_noise(2, 3, pos, index.batch, index, torch.Generator().manual_seed(0))
    slow = diffusion.draw_noise(2, 3, pos, index.batch, None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_training_noise_samples_the_lattice_and_the_loss_draws_it():
    diffusion = make_diffusion()
    index = every_third_pixel()
    pos = index.pos()
    noise = diffusion.training_noise(2, 3, pos, index.batch, index,
                                     torch.Generator().manual_seed(0))
    values = diffusion.noise.sample_lattice((8, 8), 2, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise, index.gather(values))
    # off a lattice it is draw_noise
    points = diffusion.training_noise(2, 3, pos, index.batch, None,
                                      torch.Generator().manual_seed(0))
    torch.testing.assert_close(points, diffusion.draw_noise(2, 3, pos, index.batch, None,
                                                            torch.Generator().manual_seed(0)))
    # training_loss draws the time steps, then this noise, from its generator
    data = lattice_batch(keep=torch.arange(0, 64, 3))
    t = torch.tensor([5, 300, 700])
    drawn = []

    def record(x_t, pos, t, batch, edge_index=None, lattice=None):
        drawn.append(x_t)
        return torch.zeros_like(x_t)

    g = torch.Generator().manual_seed(1)
    diffusion.training_loss(record, data, t=t, generator=g)
    x0, pos, batch, num_graphs, index = _graph_inputs(data)
    a, s = diffusion.coefficients(t, batch, x0.size(0), x0.dtype)
    expected = diffusion.training_noise(num_graphs, x0.size(1), pos, batch, index,
                                        torch.Generator().manual_seed(1))
    torch.testing.assert_close(drawn[0], a * x0 + s * expected)


def test_loss_aware_sampler_is_fed():
    diffusion = make_diffusion()
    data = lattice_batch()
    sampler = LossAwareTimestepSampler(diffusion.num_steps)

    def zero(x_t, pos, t, batch, edge_index=None, lattice=None):
        return torch.zeros_like(x_t)

    losses = diffusion.training_losses(zero, data, generator=torch.Generator().manual_seed(0),
                                       timestep_sampler=sampler)
    assert int(sampler.loss_counts.sum()) == 3
    assert set(losses.t.tolist()) == set(sampler.loss_counts.nonzero().view(-1).tolist())
    assert losses.weights.shape == (3,)


def test_bad_input():
    diffusion = make_diffusion()
    x0 = torch.randn(4, 1)
    batch = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="lie in"):
        diffusion.q_sample(x0, torch.tensor([0, 1000]), x0, batch)
    with pytest.raises(ValueError, match="integer"):
        diffusion.q_sample(x0, torch.tensor([0.0, 1.0]), x0, batch)
    with pytest.raises(ValueError, match="'batch' must have shape"):
        diffusion.q_sample(x0, torch.tensor([0, 1]), x0, batch[:3])
    with pytest.raises(ValueError, match="one per entry"):
        diffusion.q_sample(x0, torch.tensor([0]), x0, batch)
    with pytest.raises(ValueError, match="one per entry"):
        diffusion.q_sample(x0, torch.tensor([0, 1]), x0, -batch)
    with pytest.raises(ValueError, match="one step"):
        diffusion.q_sample(x0, torch.tensor([0, 1]), x0)
    with pytest.raises(ValueError, match="noise"):
        diffusion.q_sample(x0, torch.tensor([0, 1]), torch.randn(4, 2), batch)
    with pytest.raises(ValueError, match="Unknown parametrization"):
        make_diffusion("score")
    with pytest.raises(ValueError, match="sigma"):
        MollifiedNoise(0.0, 2)
    with pytest.raises(ValueError, match="sigma"):
        MollifiedNoise(-0.1, 2)
    data = lattice_batch()

    def wrong(x_t, pos, t, batch, edge_index=None, lattice=None):
        return x_t[:, :1]

    with pytest.raises(ValueError, match="model returned"):
        diffusion.training_loss(wrong, data)
    with pytest.raises(ValueError, match="either"):
        diffusion.training_loss(wrong, data, torch.tensor([0, 1, 2]),
                                timestep_sampler=LossAwareTimestepSampler(1000))
    with pytest.raises(ValueError, match="one step per graph"):
        diffusion.training_loss(wrong, data, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="'noise' must have"):
        diffusion.training_loss(wrong, data, torch.tensor([0, 1, 2]), torch.randn(3, 2))
    outside = Data(x=torch.randn(2, 1), pos=torch.tensor([[0.5, 0.5], [1.5, 0.5]]))
    with pytest.raises(ValueError, match="Coordinates"):
        diffusion.training_loss(wrong, outside)


def test_the_five_argument_model_interface():
    # A model written to the documented interface, model(x_t, pos, t, batch, edge_index=None),
    # trains on lattice batches (where the library has a LatticeIndex to offer) and samples.
    from pyg_infdiff.diffusion import accepts_lattice, call_denoiser, sample

    calls = []

    def plain(x_t, pos, t, batch, edge_index=None):
        calls.append(edge_index)
        return torch.zeros_like(x_t)

    class Wants(torch.nn.Module):
        def forward(self, x_t, pos, t, batch, edge_index=None, lattice=None):
            calls.append(lattice)
            return torch.zeros_like(x_t)

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    assert not accepts_lattice(plain) and not accepts_lattice(Wrapper(torch.nn.Identity()))
    assert accepts_lattice(Wants()) and accepts_lattice(Wrapper(Wants()))
    assert accepts_lattice(lambda *args, **kwargs: None)

    diffusion = make_diffusion()
    data = lattice_batch()
    assert torch.isfinite(diffusion.training_loss(plain, data))
    out = sample(plain, diffusion, shape=(4, 4), num_samples=2, channels=2, steps=3,
                 progress=False)
    assert out.images.shape == (2, 2, 4, 4)
    calls.clear()
    diffusion.training_loss(Wrapper(Wants()), data)
    assert isinstance(calls[-1], LatticeIndex)  # reached through the wrapper
    x = torch.zeros(3, 1)
    index = LatticeIndex.full((3, 1), 1)
    call_denoiser(Wants(), x, index.pos(), torch.zeros(1, dtype=torch.long),
                  torch.zeros(3, dtype=torch.long), lattice=index)
    assert calls[-1] is index
