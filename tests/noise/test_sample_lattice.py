"""``MollifiedNoise.sample_lattice``: the fields' distribution on one lattice from
:math:`\\prod_j \\min(K, n_j)` standard normals (training noise), checked against the analytic
covariance exactly (its separable factor) and by Monte Carlo through the public call."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import lattice
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.noise.field import _lattice_factor


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@settings(max_examples=25, deadline=None)
@given(ndim=st.integers(1, 3), sigma=st.floats(0.01, 0.3), data=st.data())
def test_covariance_is_the_fields_exactly(ndim, sigma, data):
    # The values are B_1 x ... x B_d applied to standard normals: their covariance is the
    # Kronecker product of B_j^T B_j, which must be the field's covariance at the pixel centres
    # whether the axis has fewer pixels than frequencies (the triangular factor) or more.
    noise = MollifiedNoise(sigma, ndim)
    sizes = st.integers(1, 12 if ndim < 3 else 5)
    shape = tuple(data.draw(st.lists(sizes, min_size=ndim, max_size=ndim)))
    gains = noise._gain_values
    cov = torch.ones(1, 1, dtype=torch.float64)
    for n in shape:
        factor = _lattice_factor(n, gains, torch.device("cpu"), torch.float64)
        assert factor.shape == (min(noise.num_freq, n), n)
        cov = torch.kron(cov, factor.t() @ factor)
    pos = lattice(shape, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(len(pos)), torch.arange(len(pos)), indexing="ij")
    expected = noise.covariance(pos[i.flatten()], pos[j.flatten()]).view(len(pos), len(pos))
    torch.testing.assert_close(cov, expected, rtol=1e-9, atol=1e-11)


def test_monte_carlo_covariance_through_the_public_call():
    noise = MollifiedNoise(0.5 / 12, 2)  # K = 29 frequencies for 12 pixels per axis
    assert noise.num_freq > 12
    num = 4000
    values = noise.sample_lattice((12, 12), num, 1, gen(0), dtype=torch.float64)
    assert values.shape == (num, 1, 12, 12) and values.dtype == torch.float64
    flat = values.view(num, -1)
    pos = lattice((12, 12), dtype=torch.float64)
    pairs = torch.tensor([[0, 0], [0, 1], [13, 14], [13, 26], [77, 78], [143, 143], [5, 100]])
    u, v = pos[pairs[:, 0]], pos[pairs[:, 1]]
    cov, var_u, var_v = noise.covariance(u, v), noise.covariance(u, u), noise.covariance(v, v)
    stderr = ((var_u * var_v + cov**2) / num).sqrt()  # Isserlis, as for draw()
    empirical = (flat[:, pairs[:, 0]] * flat[:, pairs[:, 1]]).mean(0)
    assert ((empirical - cov).abs() < 5 * stderr).all(), (empirical, cov)
    assert (flat.mean(0).abs() < 5 * (noise.covariance(pos, pos) / num).sqrt()).all()


def test_draws_fewer_normals_and_is_reproducible():
    noise = MollifiedNoise(0.5 / 32, 2)  # K = 76 > 32
    g, reference = gen(3), gen(3)
    first = noise.sample_lattice((32, 20), 2, 3, g)
    torch.randn(2, 3, 32, 20, generator=reference)  # min(K, n) normals per axis, no more
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=reference))
    torch.testing.assert_close(noise.sample_lattice((32, 20), 2, 3, gen(3)), first)
    assert first.shape == (2, 3, 32, 20) and first.dtype == torch.float32
    coarse = MollifiedNoise(0.2, 1)  # K = 9 < 40 pixels: K normals
    g, reference = gen(4), gen(4)
    coarse.sample_lattice((40,), 1, 1, g)
    torch.randn(1, 1, coarse.num_freq, generator=reference)
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=reference))


def test_errors():
    noise = MollifiedNoise(0.1, 2)
    with pytest.raises(ValueError, match="2 positive sizes"):
        noise.sample_lattice((4, 4, 4))
    with pytest.raises(ValueError, match="2 positive sizes"):
        noise.sample_lattice((4, 0))
    with pytest.raises(ValueError, match="num_graphs"):
        noise.sample_lattice((4, 4), num_graphs=0)
