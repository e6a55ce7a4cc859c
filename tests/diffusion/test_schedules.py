import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.diffusion import NoiseSchedule, cosine_schedule, linear_schedule


def test_cosine_matches_closed_form():
    schedule = cosine_schedule(1000)
    t = torch.arange(1000, dtype=torch.float64)
    f = torch.cos(((t + 1) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    unclipped = schedule.betas < 0.999
    assert unclipped[:-1].all()  # clipping touches the last step only
    torch.testing.assert_close(schedule.alphas_cumprod[unclipped], (f / f0)[unclipped],
                               rtol=1e-10, atol=1e-12)
    assert schedule.betas[-1] == 0.999


def test_cosine_endpoints_and_monotone():
    schedule = cosine_schedule()
    assert schedule.num_steps == 1000
    assert schedule.betas.dtype == torch.float64
    assert 1 - schedule.alphas_cumprod[0] < 1e-4
    assert schedule.alphas_cumprod[-1] < 1e-8
    assert (schedule.betas.diff() > 0).all()
    assert (schedule.alphas_cumprod.diff() < 0).all()
    torch.testing.assert_close(schedule.signal_scale**2 + schedule.noise_scale**2,
                               torch.ones(1000, dtype=torch.float64))


def test_linear_schedule():
    schedule = linear_schedule(1000, 1e-4, 0.02)
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(schedule.betas.diff(),
                               torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    torch.testing.assert_close(schedule.alphas_cumprod, torch.cumprod(1 - schedule.betas, 0))
    assert (schedule.alphas_cumprod.diff() < 0).all()


@settings(max_examples=20, deadline=None)
@given(num_steps=st.integers(1, 2000))
def test_any_length_is_monotone(num_steps):
    for schedule in (cosine_schedule(num_steps), linear_schedule(num_steps)):
        assert schedule.num_steps == num_steps
        assert ((schedule.betas > 0) & (schedule.betas <= 1)).all()
        assert (schedule.alphas_cumprod.diff() <= 0).all()


def test_alpha_cumprod_convention_and_device():
    schedule = cosine_schedule(10)
    assert schedule.alpha_cumprod(-1) == 1.0
    assert schedule.alpha_cumprod(3) == schedule.alphas_cumprod[3].item()
    moved = schedule.to("cpu")
    torch.testing.assert_close(moved.alphas_cumprod, schedule.alphas_cumprod)
    assert moved.alphas_cumprod.dtype == torch.float64
    assert "cosine" in repr(schedule)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.betas = torch.ones(3)
    for bad in (-2, 10):
        with pytest.raises(ValueError, match="Time step"):
            schedule.alpha_cumprod(bad)


def test_bad_input():
    with pytest.raises(ValueError, match="num_steps"):
        cosine_schedule(0)
    with pytest.raises(ValueError, match="offset"):
        cosine_schedule(10, s=0.0)
    with pytest.raises(ValueError, match="max_beta"):
        cosine_schedule(10, max_beta=1.5)
    with pytest.raises(ValueError, match="beta_start"):
        linear_schedule(10, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(torch.ones(2, 2) * 0.1)
