"""The latent diffusion of the two-stage model (issue 15): the constant schedule, the L1 loss, the
samplers against the exact posterior-mean denoiser of Gaussian latents, the statistics, training
through the Trainer (loss falls, exact resume, DDP) and the two-stage sample."""
from __future__ import annotations

import gc
import math
import os
import socket
import sys
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyg_infdiff.diffusion import (
    DDIMSampler,
    LatentDiffusion,
    LatentStats,
    MollifiedDiffusion,
    NoiseSchedule,
    constant_schedule,
    cosine_schedule,
    decode_latents,
    sample,
    sample_latents,
    sample_two_stage,
)
from pyg_infdiff.models import LatentMLP, LatentMLPConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import (
    Trainer,
    TrainerConfig,
    barrier,
    cleanup_distributed,
    distributed_sampler,
    init_distributed,
)


# ---------------------------------------------------------------------------- the schedule
@given(num_steps=st.integers(8, 3000), beta=st.floats(1e-4, 0.008))
@settings(max_examples=20)
def test_constant_schedule_closed_form(num_steps, beta):
    schedule = constant_schedule(num_steps, beta)
    value = beta * 1000 / num_steps  # the official rescaling "const0.008": 0.008 * 1000 / T
    assert schedule.name == "constant" and schedule.num_steps == num_steps
    torch.testing.assert_close(schedule.betas, torch.full((num_steps,), value,
                                                          dtype=torch.float64))
    t = torch.arange(num_steps, dtype=torch.float64)
    torch.testing.assert_close(schedule.alphas_cumprod, (1 - value) ** (t + 1), rtol=1e-10,
                               atol=1e-300)
    # whatever T, the last step keeps about exp(-1000 beta) of the signal variance
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(math.exp(-1000 * beta),
                                                               rel=0.05 + 8 * value)


def test_constant_schedule_official_values_and_errors():
    schedule = constant_schedule()
    assert schedule.betas.unique().tolist() == [0.008]
    assert schedule.alpha_cumprod(999) == pytest.approx(0.992**1000, rel=1e-12)
    assert constant_schedule(500).betas[0].item() == pytest.approx(0.016)
    assert constant_schedule(500, 0.3, reference_steps=None).betas[0].item() == 0.3
    with pytest.raises(ValueError, match="beta"):
        constant_schedule(4)  # 0.008 * 1000 / 4 = 2 > 1
    with pytest.raises(ValueError, match="num_steps"):
        constant_schedule(0)


# ---------------------------------------------------------------------------- the statistics
@given(rows=st.integers(2, 40), dim=st.integers(1, 9), seed=st.integers(0, 2**16),
       scale=st.floats(0.01, 100.0))
@settings(max_examples=25)
def test_latent_stats_standardise_and_round_trip(rows, dim, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(rows, dim, generator=gen) + torch.randn(dim, generator=gen)
    stats = LatentStats.from_latents(z)
    zn = stats.normalize(z).double()
    torch.testing.assert_close(zn.mean(0), torch.zeros(dim, dtype=torch.float64), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(zn.std(0), torch.ones(dim, dtype=torch.float64), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(stats.denormalize(stats.normalize(z)), z, rtol=1e-5,
                               atol=1e-5 * scale)
    again = LatentStats.from_dict(stats.to_dict())
    assert torch.equal(again.mean, stats.mean) and torch.equal(again.std, stats.std)
    official = LatentStats.from_latents(z, center=False)  # the official code zeroes the mean
    assert torch.equal(official.mean, torch.zeros(dim)) and torch.equal(official.std, stats.std)


def test_latent_stats_errors():
    with pytest.raises(ValueError, match="two latents"):
        LatentStats.from_latents(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="positive"):
        LatentStats(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="one size"):
        LatentStats(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="keys"):
        LatentStats.from_dict({"mean": [0.0]})
    constant = LatentStats.from_latents(torch.ones(5, 2))  # constant dimensions: floored std
    assert bool((constant.std == 1e-6).all()) and repr(constant) == "LatentStats(dim=2)"


# ---------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("parametrization", ["eps", "x0", "v"])
@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_training_loss_by_hand(parametrization, loss):
    diffusion = LatentDiffusion(parametrization=parametrization, loss=loss)
    gen = torch.Generator().manual_seed(3)
    z, noise = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    abar = 0.992 ** (t.double() + 1)
    a, s = abar.sqrt().float()[:, None], (1 - abar).sqrt().float()[:, None]
    torch.testing.assert_close(diffusion.q_sample(z, t, noise), a * z + s * noise)
    target = {"eps": noise, "x0": z, "v": a * noise - s * z}[parametrization]
    seen = []

    def model(z_t, t_in):
        seen.append((z_t, t_in))
        return torch.zeros_like(z_t) + 0.25

    out = diffusion.training_losses(model, z, t, noise)
    torch.testing.assert_close(seen[0][0], a * z + s * noise)
    assert torch.equal(seen[0][1], t)
    error = 0.25 - target
    expected = (error.abs() if loss == "l1" else error.square()).mean(-1)
    torch.testing.assert_close(out.per_sample, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    assert torch.equal(out.weights, torch.ones(6))
    # the exact target gives zero loss; the conversions of the process agree with it
    exact = diffusion.training_loss(lambda z_t, t_in: target, z, t, noise)
    assert exact.item() == 0.0
    z_t = diffusion.q_sample(z, t, noise)
    torch.testing.assert_close(diffusion.predict_x0(target, z_t, t), z, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(diffusion.predict_noise(target, z_t, t), noise, rtol=1e-3,
                               atol=1e-3)


def test_training_loss_draws_t_then_noise_from_the_generator():
    diffusion = LatentDiffusion()
    z = torch.randn(7, 3)
    model = LatentMLP(LatentMLPConfig(3, 16, 3))
    got = diffusion.training_losses(model, z, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (7,), generator=gen)
    noise = torch.randn(7, 3, generator=gen)
    assert torch.equal(got.t, t)
    torch.testing.assert_close(got.loss, diffusion.training_loss(model, z, t, noise))


def test_training_loss_errors_and_round_trip():
    diffusion = LatentDiffusion()
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        diffusion.training_loss(lambda z_t, t: z_t, z, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="one step per row"):
        diffusion.training_loss(lambda z_t, t: z_t, z, torch.tensor([0]))
    with pytest.raises(ValueError, match="returned"):
        diffusion.training_loss(lambda z_t, t: z_t[:, :2], z)
    with pytest.raises(ValueError, match="parametrization"):
        LatentDiffusion(parametrization="mollified_eps")
    with pytest.raises(ValueError, match="loss"):
        LatentDiffusion(loss="huber")
    assert diffusion.to_dict() == {"schedule": "constant", "num_steps": 1000,
                                   "parametrization": "eps", "loss": "l1", "beta": 0.008}
    for process in (diffusion, LatentDiffusion(cosine_schedule(50), "v", "l2")):
        again = LatentDiffusion.from_dict(process.to_dict())
        assert torch.equal(again.schedule.betas, process.schedule.betas)
        assert again.to_dict() == process.to_dict() and repr(again) == repr(process)
    with pytest.raises(ValueError, match="beta"):
        LatentDiffusion.from_dict({"num_steps": 3})


# ---------------------------------------------------------------------------- the samplers
class GaussianOracle:
    r"""The exact denoiser of latents :math:`z_0 \sim \mathcal{N}(\mu, \mathrm{diag}(s^2))`:
    :math:`\mathbb{E}[z_0 \mid z_t] = \mu + g (z_t - a \mu)`, :math:`g = a s^2 / (a^2 s^2 +
    \sigma^2)`, returned in the output of the parametrisation."""

    def __init__(self, diffusion: LatentDiffusion, mu: torch.Tensor, s: torch.Tensor) -> None:
        self.diffusion, self.mu, self.s = diffusion, mu.double(), s.double()

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.diffusion.schedule.alphas_cumprod[t][:, None]
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        gain = a * self.s**2 / (a**2 * self.s**2 + sigma**2)
        x0 = self.mu + gain * (z_t.double() - a * self.mu)
        eps = (z_t.double() - a * x0) / sigma
        out = {"eps": eps, "x0": x0, "v": a * eps - sigma * x0}[self.diffusion.parametrization]
        return out.to(z_t.dtype)


def chain_moments(schedule: NoiseSchedule, timesteps: list[int], kind: str, mu: float,
                  s: float) -> tuple[float, float]:
    r"""Mean and standard deviation after running a sampler with the exact denoiser from
    :math:`\mathcal{N}(0, 1)`, by propagating them through the affine steps (written out here
    from the DDPM and DDIM papers, not taken from the samplers)."""
    def abar(t: int) -> float:
        return 1.0 if t < 0 else schedule.alpha_cumprod(t)

    m, v = 0.0, 1.0
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        ab, ab_prev = abar(t), abar(t_prev)
        a, sigma2, alpha = math.sqrt(ab), 1 - ab, ab / ab_prev
        gain = a * s * s / (a * a * s * s + sigma2)  # x0_hat = gain * x + (mu - gain a mu)
        offset = mu - gain * a * mu
        if kind == "ddim":  # x' = sqrt(ab') x0_hat + sqrt(1 - ab') (x - a x0_hat) / sigma
            k = math.sqrt((1 - ab_prev) / sigma2)
            slope = math.sqrt(ab_prev) * gain + k * (1 - a * gain)
            shift = (math.sqrt(ab_prev) - k * a) * offset
            var = 0.0
        else:
            c0 = math.sqrt(ab_prev) * (1 - alpha) / (1 - ab)
            ct = math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)
            slope, shift = c0 * gain + ct, c0 * offset
            small = (1 - ab_prev) / (1 - ab) * (1 - alpha)
            var = 0.0 if t_prev < 0 else (1 - alpha if kind == "large" else small)
        m, v = slope * m + shift, slope * slope * v + var
    return m, math.sqrt(v)


_KINDS = [("ddpm", "large", None), ("ddpm", "small", None), ("ddpm", "large", 100),
          ("ddim", "large", 50), ("ddim", "large", 1000)]


# Narrow latents (s = 0.1) tell the variances apart: their chains end at a spread of 0.083
# ("large") and 0.070 ("small"), 17% apart, where the test resolves 6%.
@example(mu=[0.0, 1.0, -1.0], s=[0.1, 0.1, 0.1], parametrization="eps", kind=_KINDS[0], seed=0)
@example(mu=[0.0, 1.0, -1.0], s=[0.1, 0.1, 0.1], parametrization="eps", kind=_KINDS[1], seed=0)
@example(mu=[0.0, 1.0, -1.0], s=[0.1, 0.1, 0.1], parametrization="v", kind=_KINDS[3], seed=0)
@given(mu=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
       s=st.lists(st.floats(0.05, 2.0), min_size=3, max_size=3),
       parametrization=st.sampled_from(["eps", "x0", "v"]),
       kind=st.sampled_from(_KINDS),
       seed=st.integers(0, 2**16))
@settings(max_examples=12)
def test_samplers_reproduce_gaussian_latents(mu, s, parametrization, kind, seed):
    sampler, variance, steps = kind
    diffusion = LatentDiffusion(parametrization=parametrization)
    mu_t, s_t = torch.tensor(mu), torch.tensor(s)
    oracle = GaussianOracle(diffusion, mu_t, s_t)
    num = 4000
    z = sample_latents(oracle, diffusion, num, 3, sampler=sampler, variance=variance,
                       steps=steps, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
    assert z.shape == (num, 3) and z.dtype == torch.float64
    solver = DDIMSampler(diffusion.schedule)
    solver.set_timesteps(steps or 1000)
    timesteps = solver.timesteps.tolist()
    chain = "ddim" if sampler == "ddim" else variance
    for d in range(3):
        mean, std = chain_moments(diffusion.schedule, timesteps, chain, mu[d], s[d])
        # the samples have the chain's moments, within 5 standard errors of B = 4000 draws
        assert abs(z[:, d].mean().item() - mean) < 5 * std / math.sqrt(num), (d, mean, std)
        assert abs(z[:, d].std().item() - std) < 5 * std / math.sqrt(2 * num), (d, mean, std)
        if (sampler, variance, steps) == ("ddpm", "large", None) and s[d] >= 0.5:
            # the official sampler (1000 ancestral steps, variance beta_t) gives the data
            # distribution up to its discretisation: within 0.2% of |mu| in the mean and 1.5%
            # in the spread for s >= 0.5 (standardised latents have s = 1)
            assert abs(mean - mu[d]) <= 2e-3 * abs(mu[d]) and abs(std / s[d] - 1) < 0.015


def test_sample_latents_generator_stats_and_errors():
    diffusion = LatentDiffusion(constant_schedule(20))
    model = LatentMLP(LatentMLPConfig(4, 16, 3)).eval()
    stats = LatentStats(torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([2.0, 1.0, 0.5, 4.0]))
    first = sample_latents(model, diffusion, 5, 4, generator=torch.Generator().manual_seed(1))
    again = sample_latents(model, diffusion, 5, 4, stats=stats,
                           generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, stats.denormalize(first))
    # draws: z_T first, then one xi per stochastic step (19 of 20: none at the last)
    gen = torch.Generator().manual_seed(1)
    z_T = torch.randn(5, 4, generator=gen)
    given_noise = sample_latents(model, diffusion, 5, 4, noise=z_T,
                                 generator=torch.Generator().manual_seed(1).set_state(
                                     gen.get_state()))
    torch.testing.assert_close(given_noise, first)
    ddim = sample_latents(model, diffusion, 5, 4, sampler="ddim", steps=5, noise=z_T)
    assert ddim.shape == (5, 4)
    torch.testing.assert_close(sample_latents(model, diffusion, 5, 4, sampler="ddim", steps=5,
                                              noise=z_T), ddim)  # eta = 0: deterministic
    with pytest.raises(ValueError, match="sampler"):
        sample_latents(model, diffusion, 5, 4, sampler="euler")
    with pytest.raises(ValueError, match="variance"):
        sample_latents(model, diffusion, 5, 4, variance="learned")
    with pytest.raises(ValueError, match="statistics"):
        sample_latents(model, diffusion, 5, 3, stats=stats)
    with pytest.raises(ValueError, match="noise"):
        sample_latents(model, diffusion, 5, 4, noise=torch.zeros(5, 3))


# ---------------------------------------------------------------------------- training
def _mixture(num: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.5]])
    pick = torch.randint(0, 3, (num,), generator=gen)
    return centres[pick] + 0.2 * torch.randn(num, 2, generator=gen)


def _trainer(out, model_seed: int, max_steps: int, **kwargs) -> Trainer:
    torch.manual_seed(model_seed)
    model = LatentMLP(LatentMLPConfig(2, hidden_channels=32, num_layers=3))
    config = TrainerConfig(lr=2e-3, warmup_steps=10, max_steps=max_steps, ema_decay=0.99,
                           log_every=25, sample_every=None, out_dir=str(out), device="cpu",
                           progress=False, verbose=False, plot_loss=False, **kwargs)
    return Trainer(model, LatentDiffusion().training_loss, config, pass_generator=True,
                   model_config={"latent": model.config.to_dict()})


def _loader(z: torch.Tensor, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(z, batch_size=batch_size, shuffle=True, drop_last=True,
                                       generator=torch.Generator())


def test_trainer_learns_a_gaussian_mixture(tmp_path):
    data = _mixture(2048, 0)
    stats = LatentStats.from_latents(data)
    diffusion = LatentDiffusion()
    gen = torch.Generator().manual_seed(9)  # one fixed evaluation: same t and noise
    held_out = stats.normalize(_mixture(1024, 1))
    t = torch.randint(0, 1000, (1024,), generator=gen)
    noise = torch.randn(1024, 2, generator=gen)
    trainer = _trainer(tmp_path, 0, 600, checkpoint_every=None)

    def evaluate(model):
        with torch.no_grad():
            return diffusion.training_loss(model.eval(), held_out, t, noise).item()

    before = evaluate(trainer.model)
    result = trainer.fit(_loader(stats.normalize(data), 128))
    after, ema = evaluate(trainer.model), evaluate(trainer.ema.module)
    assert result.step == 600 and result.bad_steps == 0
    # an untrained model's L1 loss is about E|eps| = 0.8; the trained one predicts the noise
    assert before > 0.6 and after < 0.75 * before and ema < 0.75 * before, (before, after, ema)
    # Its samples (the official sampler, mapped back through the statistics) sit on the three
    # modes, in about equal shares: within 3 standard deviations (0.6) of a centre for 99% of
    # the data and 17% of a Gaussian with the data's mean and spread.
    z = sample_latents(trainer.ema.module, diffusion, 1000, 2, stats=stats,
                       generator=torch.Generator().manual_seed(0))
    centres = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.5]])
    nearest = torch.cdist(z, centres).min(dim=1)
    assert (nearest.values < 0.6).float().mean() > 0.6
    assert torch.bincount(nearest.indices, minlength=3).min() > 200


def test_resume_matches_uninterrupted_latent_training(tmp_path):
    z = _mixture(96, 2)
    straight = _trainer(tmp_path / "a", 0, 10, checkpoint_every=4)
    straight.fit(_loader(z, 16))
    first = _trainer(tmp_path / "b", 0, 5, checkpoint_every=4, keep_last=None)
    first.fit(_loader(z, 16))  # 6 batches per epoch: stops inside epoch 0
    # other initial weights: only the checkpoint can make the runs agree
    resumed = _trainer(tmp_path / "b", 1, 10, checkpoint_every=4, keep_last=None)
    resumed.fit(_loader(z, 16), resume="latest")
    from_four = _trainer(tmp_path / "c", 2, 10, checkpoint_every=4)
    from_four.fit(_loader(z, 16), resume=tmp_path / "b" / "checkpoints" / "ckpt_00000004.pt")
    for other in (resumed, from_four):
        assert other.step == straight.step == 10 and other.cursor.epoch == 1
        for mine, theirs in ((other.model, straight.model), (other.ema, straight.ema)):
            for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(),
                            strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------- two stages
class _Decoder(torch.nn.Module):
    r"""A conditioned denoiser that predicts the clean value ``z[batch, 0]`` at every node."""

    def forward(self, x_t, pos, t, batch, edge_index=None, cond=None):
        return cond[batch, :1].expand_as(x_t).to(x_t.dtype)


def test_two_stage_sample_decodes_the_sampled_latents_at_any_resolution():
    latent_diffusion = LatentDiffusion(constant_schedule(10))
    diffusion = MollifiedDiffusion(MollifiedNoise(0.05, 2), cosine_schedule(100),
                                   parametrization="x0")
    latent = LatentMLP(LatentMLPConfig(3, 16, 3)).eval()
    stats = LatentStats(torch.tensor([0.3, 0.0, 0.0]), torch.tensor([0.2, 1.0, 1.0]))
    z = sample_latents(latent, latent_diffusion, 2, 3, stats=stats,
                       generator=torch.Generator().manual_seed(4))
    for n in (8, 16):
        out = sample_two_stage(latent, latent_diffusion, _Decoder(), diffusion, 2, latent_dim=3,
                               channels=1, stats=stats, shape=(n, n), latent_steps=None,
                               steps=3, generator=torch.Generator().manual_seed(4),
                               clip_x0=None, progress=False)
        assert out.images.shape == (2, 1, n, n)
        # DDIM with an x0 model ends at its prediction: the first entry of each latent
        torch.testing.assert_close(out.images, z[:, :1, None, None].expand(2, 1, n, n))
    query = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    points = decode_latents(_Decoder(), diffusion, z, channels=1, query_pos=query, steps=3,
                            clip_x0=None, progress=False)
    torch.testing.assert_close(points.values, z[:, :1].repeat_interleave(50, 0))
    direct = sample(_Decoder(), diffusion, shape=(8, 8), num_samples=2, channels=1, steps=3,
                    clip_x0=None, progress=False, model_kwargs={"cond": z},
                    generator=torch.Generator().manual_seed(0))
    via = decode_latents(_Decoder(), diffusion, z, channels=1, shape=(8, 8), steps=3,
                         clip_x0=None, progress=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(via.values, direct.values)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        decode_latents(_Decoder(), diffusion, z[0], channels=1, shape=(8, 8))


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    if sys.platform == "linux":
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    init_distributed("gloo", timeout=timedelta(seconds=120))  # fail, never hang
    z = _mixture(64, 3)
    loader = torch.utils.data.DataLoader(
        z, batch_size=8, sampler=distributed_sampler(z, seed=1, drop_last=True), drop_last=True)
    trainer = _trainer(out_dir, 0, 6, checkpoint_every=3)
    assert isinstance(trainer.ddp_model, torch.nn.parallel.DistributedDataParallel)
    result = trainer.fit(loader)
    assert result.step == 6 and (result.checkpoint is not None) == (rank == 0)
    # Each process drew its own shard, time steps and noise (the trainer's generator is seeded
    # with seed + rank): only the all-reduce of the gradients keeps the weights equal.
    for param in trainer.model.parameters():
        gathered = [torch.zeros_like(param) for _ in range(world_size)]
        torch.distributed.all_gather(gathered, param.detach().contiguous())
        assert all(torch.equal(gathered[0], other) for other in gathered[1:])
    del trainer
    gc.collect()
    barrier()
    cleanup_distributed()


def test_latent_training_under_ddp(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    state = torch.load(tmp_path / "checkpoints" / "ckpt_00000006.pt", weights_only=True)
    assert state["world_size"] == 2 and state["model_config"]["latent"]["latent_dim"] == 2
