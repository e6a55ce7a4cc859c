import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import GaussianFieldOracle, relative_spectrum

from pyg_infdiff.diffusion import (
    DDIMSampler,
    DDPMSampler,
    MollifiedDiffusion,
    SamplerOutput,
    cosine_schedule,
    training_target,
)
from pyg_infdiff.noise import MollifiedNoise

PARAMETRIZATIONS = ["mollified_eps", "x0", "v"]



@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 1000))
def test_trailing_timesteps(n):
    sampler = DDIMSampler(cosine_schedule())
    sampler.set_timesteps(n)
    steps = sampler.timesteps
    assert steps.dtype == torch.long and steps.numel() == n
    assert steps[0] == 999 and int(steps[-1]) >= 0
    assert (steps.diff() < 0).all()
    gaps = -steps.diff()
    assert n == 1 or int(gaps.max() - gaps.min()) <= 1  # evenly spaced
    chain, t = [], int(steps[0])
    while t >= 0:
        chain.append(t)
        t = sampler.previous_timestep(t)
    assert chain == steps.tolist()


def test_full_schedule_and_bad_steps():
    sampler = DDPMSampler(cosine_schedule(100))
    assert sampler.timesteps.tolist() == list(range(99, -1, -1))
    sampler.set_timesteps(100)
    assert sampler.timesteps.tolist() == list(range(99, -1, -1))
    for bad in (0, 101, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            sampler.set_timesteps(bad)
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of"):
        sampler.previous_timestep(50)


@settings(max_examples=20, deadline=None)
@given(parametrization=st.sampled_from(PARAMETRIZATIONS), n=st.integers(1, 60),
       index=st.integers(0, 59))
def test_exact_prediction_gives_forward_marginal(parametrization, n, index):
    # With x_t = a x0 + s eps and the exact output, a deterministic DDIM step lands on
    # sqrt(abar') x0 + sqrt(1 - abar') eps, whatever the parametrisation.
    schedule = cosine_schedule()
    sampler = DDIMSampler(schedule, parametrization)
    sampler.set_timesteps(n)
    t = int(sampler.timesteps[index % n])
    x0, eps = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    a, s = math.sqrt(schedule.alpha_cumprod(t)), math.sqrt(1 - schedule.alpha_cumprod(t))
    output = training_target(x0, eps, a, s, parametrization)
    out = sampler.step(output, t, a * x0 + s * eps)
    assert isinstance(out, SamplerOutput)
    abar = schedule.alpha_cumprod(sampler.previous_timestep(t))
    torch.testing.assert_close(out.prev_sample, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps)
    torch.testing.assert_close(out.pred_original_sample, x0)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_ddim_eta_one_is_ddpm(parametrization):
    schedule = cosine_schedule()
    ddim, ddpm = DDIMSampler(schedule, parametrization, eta=1.0), DDPMSampler(schedule,
                                                                                parametrization)
    for sampler in (ddim, ddpm):
        sampler.set_timesteps(25)
    g = torch.Generator().manual_seed(0)
    for t in ddim.timesteps.tolist():
        x, output, noise = (torch.randn(9, 3, generator=g, dtype=torch.float64) for _ in range(3))
        assert ddim.needs_noise(t) == ddpm.needs_noise(t) == (t != ddim.timesteps[-1])
        kwargs = {"noise": noise} if ddpm.needs_noise(t) else {}
        a, b = ddim.step(output, t, x, **kwargs), ddpm.step(output, t, x, **kwargs)
        torch.testing.assert_close(a.prev_sample, b.prev_sample)
        torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample)


def test_noise_is_required_for_stochastic_steps_only():
    schedule = cosine_schedule()
    x = torch.randn(5, 1)
    ddim = DDIMSampler(schedule, eta=0.0)
    ddim.set_timesteps(10)
    assert not any(ddim.needs_noise(t) for t in ddim.timesteps.tolist())
    ddim.step(x, 999, x)
    ddpm = DDPMSampler(schedule)
    ddpm.set_timesteps(10)
    with pytest.raises(ValueError, match="stochastic"):
        ddpm.step(x, 999, x)
    with pytest.raises(ValueError, match="'noise' must have shape"):
        ddpm.step(x, 999, x, noise=torch.randn(4, 1))
    ddpm.step(x, int(ddpm.timesteps[-1]), x)  # the last step adds no noise
    noisy = DDIMSampler(schedule, eta=0.5)
    noisy.set_timesteps(10)
    with pytest.raises(ValueError, match="stochastic"):
        noisy.step(x, 999, x)
    with pytest.raises(ValueError, match="same shape"):
        ddim.step(x[:2], 999, x)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, eta=-1.0)
    with pytest.raises(ValueError, match="clip_x0"):
        DDPMSampler(schedule, clip_x0=0.0)
    assert "eta=0.5" in repr(noisy)


def test_clipping():
    schedule = cosine_schedule()
    sampler = DDIMSampler(schedule, "x0", clip_x0=1.0)
    sampler.set_timesteps(10)
    x = torch.randn(6, 2)
    out = sampler.step(torch.full((6, 2), 3.0), 999, x)
    assert (out.pred_original_sample == 1.0).all()


def make_oracle(sigma=0.05, ndim=1, parametrization="mollified_eps"):
    noise = MollifiedNoise(sigma, ndim)
    diffusion = MollifiedDiffusion(noise, parametrization=parametrization)
    return GaussianFieldOracle(diffusion, relative_spectrum(noise))


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_oracle_chain_converges_to_data_covariance(parametrization):
    # The exact variance of each cosine coefficient after the sampler chain (computed with
    # the sampler's own step) tends to the data variance as the number of steps grows.
    oracle = make_oracle(parametrization=parametrization)
    data_var = oracle.data_var
    for sampler, counts in ((DDIMSampler, (10, 50, 250, 1000)), (DDPMSampler, (50, 250, 1000))):
        solver = sampler(oracle.diffusion.schedule, parametrization)
        errors = []
        for n in counts:
            var = oracle.chain_variance(solver, n)
            errors.append((var / data_var - 1).abs().max().item())
        assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
        assert errors[-1] < 0.05, errors
        total = var.sum() / data_var.sum()  # the 1000-step chain
        assert abs(total.item() - 1) < 0.01


@pytest.mark.parametrize("make", [lambda s: DDPMSampler(s), lambda s: DDIMSampler(s, eta=0.5),
                                  lambda s: DDIMSampler(s)])
def test_noise_function_draws_with_the_generator_only_when_stochastic(make):
    sampler = make(cosine_schedule())
    sampler.set_timesteps(4)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    drawn = []

    def draw(generator):
        drawn.append(generator)
        return torch.randn(5, 2, generator=generator)

    for t in sampler.timesteps.tolist():
        drawn.clear()
        out = sampler.step(0.5 * x, t, x, noise=draw, generator=torch.Generator().manual_seed(t))
        assert len(drawn) == int(sampler.needs_noise(t))
        if drawn:
            assert isinstance(drawn[0], torch.Generator)
            given_noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(t))
            same = sampler.step(0.5 * x, t, x, noise=given_noise)
            torch.testing.assert_close(out.prev_sample, same.prev_sample, rtol=0, atol=0)
    with pytest.raises(ValueError, match="generator"):
        sampler.step(0.5 * x, int(sampler.timesteps[0]), x, noise=torch.zeros(5, 2),
                     generator=torch.Generator())


def test_config_round_trip():
    schedule = cosine_schedule(100)
    for sampler in (DDPMSampler(schedule, "x0", clip_x0=1.0),
                    DDIMSampler(schedule, "v", eta=0.3, clip_x0=None)):
        again = type(sampler).from_config(schedule, sampler.config)
        assert again.config == sampler.config and repr(again) == repr(sampler)
    assert DDIMSampler(schedule, "eps").config["parametrization"] == "mollified_eps"
    with pytest.raises(TypeError):
        DDPMSampler.from_config(schedule, {"eta": 0.5})  # DDPM has no eta
