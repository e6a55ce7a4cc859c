import pytest
import torch

from pyg_infdiff.diffusion import LossAwareTimestepSampler, UniformTimestepSampler


def test_uniform_sampler():
    sampler = UniformTimestepSampler(50)
    t, w = sampler.sample(20000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (20000,)
    assert int(t.min()) >= 0 and int(t.max()) < 50
    assert (w == 1).all()
    counts = torch.bincount(t, minlength=50).double()
    chi2 = ((counts - 400) ** 2 / 400).sum()
    assert chi2 < 49 + 6 * 7  # mean 49, sd ~10 for 49 degrees of freedom
    t2, _ = sampler.sample(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)
    sampler.update(t[:3], torch.ones(3))  # a no-op


def test_loss_aware_is_uniform_until_warm():
    sampler = LossAwareTimestepSampler(4, history_per_term=2)
    assert not sampler.warmed_up()
    sampler.update(torch.tensor([0, 1, 2, 3, 0, 1, 2]), torch.ones(7))
    assert not sampler.warmed_up()
    torch.testing.assert_close(sampler.weights(), torch.ones(4, dtype=torch.float64))
    sampler.update(torch.tensor([3]), torch.ones(1))
    assert sampler.warmed_up()


def test_loss_aware_weights_and_unbiasedness():
    num_steps = 8
    sampler = LossAwareTimestepSampler(num_steps, history_per_term=3, uniform_prob=0.1)
    losses = torch.arange(1, num_steps + 1, dtype=torch.float64)
    for _ in range(4):  # the oldest entries roll out
        sampler.update(torch.arange(num_steps), losses)
    assert (sampler.loss_counts == 3).all()
    expected = losses / losses.sum() * 0.9 + 0.1 / num_steps
    torch.testing.assert_close(sampler.weights(), expected)

    t, w = sampler.sample(100000, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(t, minlength=num_steps).double() / t.numel()
    torch.testing.assert_close(freq, expected, atol=0.005, rtol=0)
    torch.testing.assert_close(w.double(), 1 / (num_steps * expected[t]))
    # Importance weights keep the uniform-in-t objective: E_p[w f(t)] = mean_t f(t).
    f = torch.linspace(0.5, 3.0, num_steps, dtype=torch.float64)
    estimate = (w.double() * f[t]).mean()
    assert estimate.item() == pytest.approx(f.mean().item(), rel=0.01)


def test_loss_aware_rolls_history_and_state_dict():
    sampler = LossAwareTimestepSampler(2, history_per_term=2)
    sampler.update(torch.tensor([0, 0, 0]), torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(sampler.loss_history[0], torch.tensor([2.0, 3.0]).double())
    other = LossAwareTimestepSampler(2, history_per_term=2)
    other.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(other.loss_history, sampler.loss_history)
    assert torch.equal(other.loss_counts, sampler.loss_counts)
    with pytest.raises(ValueError, match="does not fit"):
        LossAwareTimestepSampler(3, history_per_term=2).load_state_dict(sampler.state_dict())


def test_bad_input():
    with pytest.raises(ValueError, match="num_steps"):
        UniformTimestepSampler(0)
    with pytest.raises(ValueError, match="history_per_term"):
        LossAwareTimestepSampler(4, history_per_term=0)
    with pytest.raises(ValueError, match="uniform_prob"):
        LossAwareTimestepSampler(4, uniform_prob=2.0)
    sampler = LossAwareTimestepSampler(4)
    with pytest.raises(ValueError, match="equal length"):
        sampler.update(torch.tensor([0, 1]), torch.ones(3))
    with pytest.raises(ValueError, match="outside"):
        sampler.update(torch.tensor([4]), torch.ones(1))
    with pytest.raises(ValueError, match="num_graphs"):
        sampler.sample(-1)
