import math

import pytest
import torch
import torch.nn.functional as F
from oracle import GaussianFieldOracle, relative_spectrum

from pyg_infdiff.diffusion import (
    DDIMSampler,
    DDPMSampler,
    MollifiedDiffusion,
    Observation,
    sample,
)
from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import MollifiedNoise, dct, evaluate_series, evaluate_series_on_lattice


def make_oracle(sigma, ndim, parametrization="mollified_eps"):
    noise = MollifiedNoise(sigma, ndim)
    diffusion = MollifiedDiffusion(noise, parametrization=parametrization)
    return GaussianFieldOracle(diffusion, relative_spectrum(noise))


def psnr(a, b):
    peak = b.max() - b.min()
    return (20 * torch.log10(peak / (a - b).pow(2).mean().sqrt())).item()


@pytest.mark.parametrize("sampler,steps,parametrization", [
    ("ddim", 10, "mollified_eps"),
    ("ddim", 250, "v"),
    ("ddpm", 50, "x0"),
    ("ddpm", 250, "mollified_eps"),
])
def test_oracle_samples_have_the_chain_covariance(sampler, steps, parametrization):
    # Node-level sampling with whole noise fields reproduces, coefficient by coefficient, the
    # exact variance of the sampler chain; with many steps that is the data covariance.
    oracle = make_oracle(0.05, 1, parametrization)
    num = 1000
    out = sample(oracle, oracle.diffusion, shape=(32,), num_samples=num, channels=1,
                 steps=steps, sampler=sampler, clip_x0=None, progress=False,
                 generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    coeffs = dct(out.images, 1, oracle.num_freq)[:, 0]  # [num, K], exact for K <= 32
    solver = (DDIMSampler if sampler == "ddim" else DDPMSampler)(oracle.diffusion.schedule,
                                                                 parametrization)
    expected = oracle.chain_variance(solver, steps)
    ratio = coeffs.var(0) / expected
    sd = math.sqrt(2 / num)  # relative standard deviation of a variance estimate
    assert (ratio - 1).abs().max() < 5 * sd, ratio
    assert abs(ratio.mean() - 1) < 4 * sd / math.sqrt(ratio.numel()), ratio.mean()
    assert (coeffs.mean(0).abs() < 5 * expected.sqrt() / math.sqrt(num)).all()
    corr = torch.corrcoef(coeffs.T) - torch.eye(coeffs.size(1), dtype=torch.float64)
    assert corr.abs().max() < 5 / math.sqrt(num)
    if steps >= 250:  # many steps: the data covariance itself, up to the chain's bias
        bias = (expected / oracle.data_var - 1).abs().max()
        assert bias < 0.15
        assert ((coeffs.var(0) / oracle.data_var - 1).abs() < bias + 5 * sd).all()


def test_few_steps_undershoot_the_data_variance():
    # Even with the exact denoiser, a chain of few steps samples less variance than the data
    # has (the posterior mean ignores the spread of x0 given x_t); the shortfall shrinks
    # monotonically with the steps, for the total and for the worst coefficient. The table in
    # docs/concepts.md ("How many steps") is printed by this test (pytest -s).
    oracle = make_oracle(0.05, 1)
    steps = (5, 10, 25, 50, 100, 250, 1000)
    for name, solver in (("ddim", DDIMSampler), ("ddpm", DDPMSampler)):
        total, worst = [], []
        for n in steps:
            ratio = oracle.chain_variance(solver(oracle.diffusion.schedule), n) / oracle.data_var
            total.append((ratio * oracle.data_var).sum().item() / oracle.data_var.sum().item())
            worst.append(ratio.min().item())
        print(f"{name}: " + ", ".join(f"{n}: {t:.2f} (worst {w:.2f})"
                                      for n, t, w in zip(steps, total, worst, strict=True)))
        assert all(a < b for a, b in zip(total, total[1:], strict=False))
        assert all(a < b for a, b in zip(worst, worst[1:], strict=False))
        assert total[1] < 0.8 and total[-1] > 0.99 and worst[-1] > 0.95


def test_resolution_consistency_ddim():
    # DDIM (eta=0) from the same generator at 32^2 and 64^2 gives the same function.
    oracle = make_oracle(0.1, 2)
    runs = {}
    for n in (32, 64):
        runs[n] = sample(oracle, oracle.diffusion, shape=(n, n), num_samples=2, channels=2,
                         steps=20, clip_x0=None, progress=False,
                         generator=torch.Generator().manual_seed(3)).images
    coarse, fine = runs[32], runs[64]
    assert psnr(F.avg_pool2d(fine, 2), coarse) >= 30
    # The fine sample is a band-limited function: read at the coarse pixel centres it matches.
    coeffs = dct(fine.double(), 2, oracle.num_freq)
    assert psnr(evaluate_series_on_lattice(coeffs, (32, 32)).float(), coarse) >= 100
    # Irregular points with the same generator read the same function too.
    pos = torch.rand(300, 2, generator=torch.Generator().manual_seed(4))
    points = sample(oracle, oracle.diffusion, pos=pos, num_samples=2, channels=2, steps=20,
                    clip_x0=None, progress=False, generator=torch.Generator().manual_seed(3))
    reference = evaluate_series(coeffs, points.pos.double(), points.batch).float()
    assert psnr(points.values, reference) >= 100
    other = sample(oracle, oracle.diffusion, shape=(32, 32), num_samples=2, channels=2,
                   steps=20, clip_x0=None, progress=False,
                   generator=torch.Generator().manual_seed(4)).images
    assert psnr(other, coarse) < 20  # another seed is another function


def test_layouts_arguments_and_reproducibility():
    calls = []

    def model(x_t, pos, t, batch, edge_index=None, lattice=None):
        calls.append((x_t.shape, t.clone(), edge_index, lattice))
        return 0.1 * x_t

    diffusion = MollifiedDiffusion(MollifiedNoise(0.1, 2))
    out = sample(model, diffusion, shape=(4, 6), num_samples=3, channels=2, steps=5,
                 progress=False, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (3, 2, 4, 6) and out.values.shape == (72, 2)
    index = LatticeIndex.full((4, 6), 3)
    torch.testing.assert_close(index.gather(out.images), out.values)
    torch.testing.assert_close(out.pos, index.pos())
    assert len(calls) == 5 and calls[0][1].tolist() == [999] * 3
    assert isinstance(calls[0][3], LatticeIndex) and calls[0][2] is None
    again = sample(model, diffusion, shape=(4, 6), num_samples=3, channels=2, steps=5,
                   progress=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.values, again.values)

    # One point set shared by every sample, with a graph built once by edge_fn.
    pos = lattice((5, 5))[::2]
    built = []

    def edge_fn(pos, batch):
        built.append(batch.clone())
        return torch.zeros(2, 0, dtype=torch.long)

    calls.clear()
    shared = sample(model, diffusion, pos=pos, num_samples=2, channels=1, steps=3,
                    sampler="ddpm", edge_fn=edge_fn, progress=False,
                    generator=torch.Generator().manual_seed(0))
    assert shared.images is None and shared.values.shape == (26, 1)
    assert torch.equal(shared.batch, torch.arange(2).repeat_interleave(13))
    assert len(built) == 1 and calls[0][2].shape == (2, 0) and calls[0][3] is None
    assert (shared.values.abs() <= 10).all()

    # Explicit pos + batch (ragged graphs).
    batch = torch.tensor([0, 0, 0, 1, 1])
    ragged = sample(model, diffusion, pos=torch.rand(5, 2), batch=batch, channels=3, steps=2,
                    progress=False, dtype=torch.float64)
    assert ragged.values.shape == (5, 3) and ragged.values.dtype == torch.float64


def test_clipping_bounds_the_prediction():
    def wild(x_t, pos, t, batch, edge_index=None, lattice=None):
        return torch.full_like(x_t, 5.0)

    diffusion = MollifiedDiffusion(MollifiedNoise(0.1, 1), parametrization="x0")
    out = sample(wild, diffusion, shape=(8,), channels=1, steps=4, progress=False,
                 clip_x0=True)
    torch.testing.assert_close(out.values, torch.ones(8, 1))
    free = sample(wild, diffusion, shape=(8,), channels=1, steps=4, progress=False,
                  clip_x0=None)
    torch.testing.assert_close(free.values, torch.full((8, 1), 5.0))


def test_bad_input():
    diffusion = MollifiedDiffusion(MollifiedNoise(0.1, 2))

    def model(x_t, pos, t, batch, edge_index=None, lattice=None):
        return x_t

    def run(**kwargs):
        base = dict(shape=(4, 4), channels=1, steps=3, progress=False)
        base.update(kwargs)
        return sample(model, diffusion, **base)

    with pytest.raises(ValueError, match="num_inference_steps"):
        run(steps=1001)
    with pytest.raises(ValueError, match="exactly one"):
        run(pos=torch.rand(3, 2))
    with pytest.raises(ValueError, match="exactly one"):
        run(shape=None)
    with pytest.raises(ValueError, match="lie in"):
        run(shape=None, pos=torch.tensor([[0.5, 1.2]]))
    with pytest.raises(ValueError, match="'batch' must be"):
        run(shape=None, pos=torch.rand(3, 2), batch=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="number the samples"):
        run(shape=None, pos=torch.rand(3, 2), batch=torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="disagrees"):
        run(shape=None, pos=torch.rand(3, 2), batch=torch.tensor([0, 1, 1]), num_samples=3)
    with pytest.raises(ValueError, match="channels"):
        run(channels=None)
    with pytest.raises(ValueError, match="Unknown sampler"):
        run(sampler="euler")
    with pytest.raises(ValueError, match="needs an observation"):
        run(resample=2)
    with pytest.raises(ValueError, match="covers"):
        run(observation=Observation(torch.ones(3, dtype=torch.bool), torch.zeros(3, 1)))
    with pytest.raises(ValueError, match="'batch' goes with 'pos'"):
        run(batch=torch.zeros(16, dtype=torch.long))
