import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import GaussianFieldOracle, design_matrix, relative_spectrum

from pyg_infdiff.diffusion import (
    MollifiedDiffusion,
    Observation,
    cosine_schedule,
    renoise,
    repaint_levels,
    sample,
)
from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import MollifiedNoise, evaluate_series, evaluate_series_on_lattice


def make_oracle():
    noise = MollifiedNoise(0.05, 1)
    return GaussianFieldOracle(MollifiedDiffusion(noise), relative_spectrum(noise))


def gaussian_conditional(oracle, pos, observed, values):
    """Exact conditional mean and variance of the data at the unobserved nodes."""
    phi = design_matrix(pos, oracle.num_freq)
    cov = phi @ torch.diag(oracle.data_var.reshape(-1)) @ phi.T
    cross = cov[~observed][:, observed]
    solve = torch.linalg.pinv(cov[observed][:, observed], rtol=1e-12)
    mean = cross @ solve @ values[observed]
    var = cov[~observed][:, ~observed].diag() - (cross @ solve * cross).sum(-1)
    return mean[:, 0], var, cov.diag()[~observed]


def conditional_errors(samples, mean, var, prior_var):
    """RMS error of the sample mean and mean sample variance, relative to the prior."""
    scale = prior_var.mean().sqrt()
    error = (samples.mean(0) - mean).pow(2).mean().sqrt() / scale
    return error.item(), (samples.var(0).mean() / prior_var.mean()).item()


@settings(max_examples=30, deadline=None)
@given(num_steps=st.integers(2, 40), jump_length=st.integers(1, 10), resample=st.integers(1, 4))
def test_repaint_levels(num_steps, jump_length, resample):
    if jump_length >= num_steps and resample > 1:
        with pytest.raises(ValueError, match="jump_length"):
            repaint_levels(num_steps, jump_length, resample)
        return
    levels = repaint_levels(num_steps, jump_length, resample)
    assert levels[0] == num_steps and levels[-1] == 0
    assert all(abs(a - b) == 1 for a, b in zip(levels, levels[1:], strict=False))
    assert min(levels) == 0 and max(levels) == num_steps
    down = sum(b < a for a, b in zip(levels, levels[1:], strict=False))
    segments = len(range(0, num_steps - jump_length, jump_length))
    assert down == num_steps + (resample - 1) * jump_length * segments
    if resample == 1:
        assert levels == list(range(num_steps, -1, -1))


def test_renoise_and_noised():
    schedule = cosine_schedule()
    x, noise = torch.randn(5, 2), torch.randn(5, 2)
    ratio = schedule.alpha_cumprod(300) / schedule.alpha_cumprod(100)
    torch.testing.assert_close(renoise(x, schedule, 100, 300, noise),
                               math.sqrt(ratio) * x + math.sqrt(1 - ratio) * noise)
    with pytest.raises(ValueError, match="larger"):
        renoise(x, schedule, 300, 100, noise)
    observation = Observation(torch.tensor([True, False, True, False, False]), x)
    assert observation.noised(schedule, -1, None) is x
    abar = schedule.alpha_cumprod(40)
    torch.testing.assert_close(observation.noised(schedule, 40, noise),
                               math.sqrt(abar) * x + math.sqrt(1 - abar) * noise)
    with pytest.raises(ValueError, match="needs 'noise'"):
        observation.noised(schedule, 40, None)
    assert repr(observation) == "Observation(num_nodes=5, observed=2, channels=2)"
    replaced = observation.replace(torch.zeros(5, 2), x)
    torch.testing.assert_close(replaced[observation.mask], x[observation.mask])
    assert (replaced[~observation.mask] == 0).all()


def test_observation_constructors():
    images = torch.randn(2, 3, 4, 5)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 2] = True
    observation = Observation.from_images(images, mask)
    assert observation.mask.shape == (40,) and observation.channels == 3
    index = LatticeIndex.full((4, 5), 2)
    torch.testing.assert_close(observation.values, index.gather(images))
    assert observation.mask.nonzero().view(-1).tolist() == [7, 27]

    coarse = torch.randn(2, 1, 2, 3)
    fine = Observation.from_coarse_images(coarse, (6, 9))  # factors 3 and 3
    grid = LatticeIndex.full((6, 9), 2)
    assert int(fine.mask.sum()) == 12
    pos = grid.pos()[fine.mask]
    torch.testing.assert_close(pos[:6], lattice((2, 3)))  # coarse centres are fine centres
    torch.testing.assert_close(fine.values[fine.mask], coarse.reshape(2, 1, 6).transpose(1, 2)
                               .reshape(12, 1))
    with pytest.raises(ValueError, match="odd multiple"):
        Observation.from_coarse_images(coarse, (4, 9))
    with pytest.raises(ValueError, match="mask"):
        Observation.from_images(images, mask.float())
    with pytest.raises(ValueError, match="1-D bool"):
        Observation(torch.ones(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="like 'mask'"):
        Observation(torch.ones(3, dtype=torch.bool), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="finite"):
        Observation(torch.ones(1, dtype=torch.bool), torch.full((1, 1), float("nan")))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_inpainting_with_the_oracle(sampler):
    oracle = make_oracle()
    n, num = 32, 400
    pos = lattice((n,), dtype=torch.float64)
    truth = evaluate_series_on_lattice(
        oracle.draw_data(1, 1, torch.Generator().manual_seed(1)), (n,)).reshape(n, 1)
    observed = torch.zeros(n, dtype=torch.bool)
    observed[1::3] = True
    mean, var, prior_var = gaussian_conditional(oracle, pos, observed, truth)
    observation = Observation(observed.repeat(num), truth.repeat(num, 1))
    results = []
    for resample in (1, 5):
        out = sample(oracle, oracle.diffusion, shape=(n,), num_samples=num, steps=50,
                     sampler=sampler, clip_x0=None, observation=observation,
                     resample=resample, progress=False, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(2))
        samples = out.values.view(num, n)
        assert torch.equal(samples[:, observed], truth[observed, 0].expand(num, -1))
        results.append(conditional_errors(samples[:, ~observed], mean, var, prior_var))
    (plain_error, plain_var), (repaint_error, repaint_var) = results
    # Replacement is approximate: it approaches the Gaussian conditional (prior error of the
    # mean ~0.57, conditional variance 0.004 of the prior), RePaint resampling more closely.
    assert mean.pow(2).mean().sqrt().item() / prior_var.mean().sqrt().item() > 0.5
    assert plain_error < 0.4 and plain_var < 0.3
    assert repaint_error < 0.75 * plain_error and repaint_var < 0.75 * plain_var
    assert repaint_error < 0.2 and repaint_var < 0.15
    # Guidance through the denoiser's gradient (DPS) brings the observations to every node
    # within each step: measured 0.04 / 0.03 of the prior (error of the mean / variance) for
    # both samplers, against 0.26-0.36 / 0.17-0.26 for replacement alone.
    out = sample(oracle, oracle.diffusion, shape=(n,), num_samples=num, steps=50,
                 sampler=sampler, clip_x0=None, observation=observation, guidance=1.0,
                 progress=False, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    samples = out.values.view(num, n)
    assert torch.equal(samples[:, observed], truth[observed, 0].expand(num, -1))
    guided_error, guided_var = conditional_errors(samples[:, ~observed], mean, var, prior_var)
    assert guided_error < 0.1 and guided_var < 0.1
    assert guided_error < 0.5 * repaint_error and guided_var < repaint_var


def test_guidance_residual_and_errors():
    observation = Observation(torch.tensor([True, False, True, True]),
                              torch.tensor([[1.0], [9.0], [-1.0], [2.0]]))
    x0 = torch.tensor([[0.0], [0.0], [1.0], [2.0]], requires_grad=True)
    batch = torch.tensor([0, 0, 1, 1])
    residual = observation.residual(x0, batch, 2)
    torch.testing.assert_close(residual, torch.tensor([1.0, 2.0]))  # node 1 is not observed
    (grad,) = torch.autograd.grad(residual.sum(), x0)
    torch.testing.assert_close(grad, torch.tensor([[-1.0], [0.0], [1.0], [0.0]]))
    with pytest.raises(ValueError, match="does not match"):
        observation.residual(x0[:3], batch[:3], 2)
    oracle = make_oracle()
    with pytest.raises(ValueError, match="needs an observation"):
        sample(oracle, oracle.diffusion, shape=(4,), num_samples=1, channels=1, steps=2,
               guidance=1.0, progress=False)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="'guidance'"):
            sample(oracle, oracle.diffusion, shape=(4,), num_samples=1, steps=2,
                   observation=observation, guidance=bad, progress=False)


def test_super_resolution_as_inpainting():
    # Coarse 11-pixel observations placed on a 33-pixel lattice (factor 3), and on a graph
    # that joins the coarse nodes with 40 random fine points. "baseline" is the error of the
    # prior mean, which ignores the observations.
    oracle = make_oracle()
    num = 300
    coeffs = oracle.draw_data(1, 1, torch.Generator().manual_seed(5))
    coarse = evaluate_series_on_lattice(coeffs, (11,))
    observation = Observation.from_coarse_images(coarse.repeat(num, 1, 1), (33,))
    out = sample(oracle, oracle.diffusion, shape=(33,), num_samples=num, steps=50,
                 sampler="ddpm", clip_x0=None, observation=observation, resample=3,
                 progress=False, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    mask = observation.mask.view(num, 33)[0]
    samples = out.images[:, 0]
    torch.testing.assert_close(samples[:, mask], coarse[0].expand(num, -1))
    truth = evaluate_series_on_lattice(coeffs, (33,)).reshape(33, 1)
    mean, var, prior_var = gaussian_conditional(oracle, lattice((33,), dtype=torch.float64),
                                                mask, truth)
    error, spread = conditional_errors(samples[:, ~mask], mean, var, prior_var)

    baseline = mean.pow(2).mean().sqrt().item() / prior_var.mean().sqrt().item()
    assert error < 0.2 < 0.5 * baseline and spread < 0.15

    num = 100
    fine = torch.rand(40, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    pos = torch.cat([lattice((11,), dtype=torch.float64), fine])
    values = evaluate_series(coeffs, pos)
    observed = torch.arange(51) < 11
    graph = Observation(observed.repeat(num), values.repeat(num, 1))
    batch = torch.arange(num).repeat_interleave(51)
    out = sample(oracle, oracle.diffusion, pos=pos.repeat(num, 1), batch=batch, steps=50,
                 sampler="ddpm", clip_x0=None, observation=graph, progress=False,
                 generator=torch.Generator().manual_seed(6))
    samples = out.values.view(num, 51)
    torch.testing.assert_close(samples[:, observed], values[:11, 0].expand(num, -1))
    mean, var, prior_var = gaussian_conditional(oracle, pos, observed, values)
    error, spread = conditional_errors(samples[:, ~observed], mean, var, prior_var)
    baseline = mean.pow(2).mean().sqrt().item() / prior_var.mean().sqrt().item()
    assert error < 0.4 < 0.7 * baseline and spread < 0.4
