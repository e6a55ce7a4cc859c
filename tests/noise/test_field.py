import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import MollifiedNoise, NoiseField


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def to_nodes(grid: torch.Tensor) -> torch.Tensor:
    return grid.reshape(grid.size(0), grid.size(1), -1).transpose(1, 2).reshape(-1, grid.size(1))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_empirical_covariance_matches_analytic(ndim):
    noise = MollifiedNoise(0.1 if ndim < 3 else 0.15, ndim)
    u = torch.rand(6, ndim, generator=gen(1), dtype=torch.float64)
    v = (u + 0.15 * torch.randn(6, ndim, generator=gen(2), dtype=torch.float64)).clamp(0, 1)
    u[0], v[0] = 0.0, 0.02  # near a corner, where the variance is largest
    num = 4000
    field = noise.draw(num, 1, gen(3), dtype=torch.float64)
    batch = torch.arange(num).repeat_interleave(6)
    fu = field.evaluate(u.repeat(num, 1), batch).view(num, 6)
    fv = field.evaluate(v.repeat(num, 1), batch).view(num, 6)
    cov = noise.covariance(u, v)
    var_u, var_v = noise.covariance(u, u), noise.covariance(v, v)
    # Isserlis: Var(f(u) f(v)) = C_uu C_vv + C_uv^2 for a centred Gaussian pair
    stderr = ((var_u * var_v + cov**2) / num).sqrt()
    assert (((fu * fv).mean(0) - cov).abs() < 5 * stderr).all()
    assert (((fu * fu).mean(0) - var_u).abs() < 5 * (2 * var_u**2 / num).sqrt()).all()


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_unit_average_marginal_variance(ndim):
    noise = MollifiedNoise(0.05, ndim)
    n = 32 if ndim < 3 else 26  # a lattice finer than K averages phi_k^2 exactly to 1
    assert n > noise.num_freq
    pos = lattice([n] * ndim, dtype=torch.float64)
    var = noise.covariance(pos, pos)
    assert abs(var.mean().item() - 1.0) < 1e-10
    # the mirror images raise the variance within a few sigma of the faces, so the interior
    # sits slightly below 1: 1 - 1/(2S) per axis, S = sum_k g_k^2 (Poisson summation)
    s = MollifiedNoise(0.05, 1).amplitudes(dtype=torch.float64).square().sum().item()
    s = s / MollifiedNoise(0.05, 1).amplitudes(dtype=torch.float64)[0].item() ** 2
    interior = ((pos > 0.25) & (pos < 0.75)).all(-1)
    expected = (1 - 0.5 / s) ** ndim
    assert (var[interior] - expected).abs().max() < 1e-6
    assert abs(expected - 1.0) < 1.1 * ndim * math.sqrt(math.pi) * 0.05
    face = torch.full((1, ndim), 0.5, dtype=torch.float64)
    face[0, 0] = 0.0  # centre of a face: about twice the variance along the normal axis
    expected_face = (2 - 1 / s) * (1 - 0.5 / s) ** (ndim - 1)
    assert abs(noise.covariance(face, face).item() - expected_face) < 1e-6
    # empirically, averaged over the domain
    num = 200 if ndim < 3 else 40
    vals = noise.draw(num, 1, gen(ndim)).on_lattice([n] * ndim)
    stderr = math.sqrt(2.0 / num) * 2  # std of a domain-mean of squares is <= that of a point
    assert abs(vals.square().mean().item() - 1.0) < 3 * stderr


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_on_lattice_matches_evaluate(ndim):
    noise = MollifiedNoise(0.08, ndim)
    field = noise.draw(2, 3, gen(ndim))
    shape = [9, 14, 5][:ndim]
    grid = field.on_lattice(shape)
    assert grid.shape == (2, 3, *shape)
    pos = lattice(shape).repeat(2, 1)
    batch = torch.arange(2).repeat_interleave(math.prod(shape))
    torch.testing.assert_close(field.evaluate(pos, batch), to_nodes(grid), atol=1e-5, rtol=0)


def test_subset_superset_consistency():
    noise = MollifiedNoise(0.02, 2)
    seed = 7
    g32 = to_nodes(noise.draw(1, 2, gen(seed)).on_lattice((32, 32)))
    g96 = noise.draw(1, 2, gen(seed)).on_lattice((96, 96))
    # pixel centres of 32 are those of 96 with index 3i + 1
    torch.testing.assert_close(to_nodes(g96[..., 1::3, 1::3]), g32, atol=1e-5, rtol=0)
    g128 = to_nodes(noise.draw(1, 2, gen(seed)).on_lattice((128, 128)))
    # random points that include both lattices, evaluated through sample()
    extra = torch.rand(300, 2, generator=gen(0))
    pos = torch.cat([extra, lattice((32, 32)), lattice((128, 128))])
    vals = noise.sample(pos, channels=2, generator=gen(seed))
    torch.testing.assert_close(vals[300:300 + 1024], g32, atol=1e-5, rtol=0)
    torch.testing.assert_close(vals[300 + 1024:], g128, atol=1e-5, rtol=0)
    # a subset of the points, in another order, gets the same values
    perm = torch.randperm(300, generator=gen(1))[:50]
    sub = noise.sample(extra[perm], channels=2, generator=gen(seed))
    torch.testing.assert_close(sub, vals[perm], atol=1e-5, rtol=0)
    # a float64 draw from the same generator state is the same function
    vals64 = noise.sample(pos.double(), channels=2, generator=gen(seed))
    assert vals64.dtype == torch.float64
    torch.testing.assert_close(vals64.float(), vals, atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(ndim=st.integers(1, 3), sigma=st.floats(0.05, 0.5), seed=st.integers(0, 2**16))
def test_same_generator_state_same_function(ndim, sigma, seed):
    noise = MollifiedNoise(sigma, ndim)
    pos = torch.rand(20, ndim, generator=gen(seed + 1))
    a = noise.sample(pos[:12], generator=gen(seed))
    b = noise.sample(pos, generator=gen(seed))
    torch.testing.assert_close(a, b[:12], atol=1e-5, rtol=0)
    assert not torch.allclose(noise.sample(pos, generator=gen(seed + 1)), b)


def test_at_uses_fast_path_and_matches_evaluate():
    noise = MollifiedNoise(0.05, 2)
    field = noise.draw(2, 3, gen(0))
    full = LatticeIndex.full((24, 20), num_graphs=2)
    sub = torch.randperm(2 * 480, generator=gen(1))[:300].sort().values
    partial = LatticeIndex((24, 20), full.pixel[sub], full.batch[sub], 2)
    sparse = LatticeIndex((24, 20), full.pixel[sub[::60]], full.batch[sub[::60]], 2)
    for index, dense in [(full, True), (partial, True), (sparse, False)]:
        with mock.patch.object(NoiseField, "on_lattice", autospec=True,
                               side_effect=NoiseField.on_lattice) as spy:
            vals = field.at(index)
        assert spy.called == dense
        ref = field.evaluate(index.pos(torch.float64), index.batch)
        torch.testing.assert_close(vals, ref, atol=1e-5, rtol=0)


def test_one_field_per_graph():
    noise = MollifiedNoise(0.1, 2)
    field = noise.draw(3, 2, gen(0))
    pos = torch.rand(10, 2, generator=gen(1))
    per_graph = [field.evaluate(pos.repeat(2, 1), torch.full((20,), b)) for b in range(3)]
    for b in range(3):
        torch.testing.assert_close(per_graph[b][:10], per_graph[b][10:])  # same graph: same
        for c in range(b):
            assert (per_graph[b] - per_graph[c]).abs().max() > 1e-2  # other graph: other field
    assert (per_graph[0][:, 0] - per_graph[0][:, 1]).abs().max() > 1e-2  # channels differ
    mixed = field.evaluate(pos.repeat(3, 1),
                           torch.arange(3).repeat_interleave(10))
    torch.testing.assert_close(mixed, torch.cat([p[:10] for p in per_graph]))
    assert field.num_graphs == 3 and field.channels == 2 and field.ndim == 2


def test_truncation_and_repr():
    noise = MollifiedNoise(1 / 128, 2)
    k = noise.num_freq
    assert math.exp(-0.5 * (math.pi * (k - 1) / 128) ** 2) >= 1e-3
    assert math.exp(-0.5 * (math.pi * k / 128) ** 2) < 1e-3
    assert repr(noise) == f"MollifiedNoise(sigma=0.0078125, ndim=2, cutoff=0.001, num_freq={k})"
    assert MollifiedNoise(1 / 128, 2, max_freq=10).num_freq == 10
    amp = noise.amplitudes(dtype=torch.float64)
    assert amp.shape == (k, k) and abs(amp.square().sum().item() - 1.0) < 1e-12
    field = noise.draw(1, 1, gen(0), dtype=torch.float64)
    assert field.coeffs.shape == (1, 1, k, k) and field.coeffs.dtype == torch.float64
    assert repr(field) == f"NoiseField(num_graphs=1, channels=1, ndim=2, num_freq={(k, k)})"


def test_errors():
    for sigma in [0.0, -1.0, float("nan")]:
        with pytest.raises(ValueError, match="sigma"):
            MollifiedNoise(sigma, 2)
    with pytest.raises(ValueError, match="ndim"):
        MollifiedNoise(0.1, 0)
    with pytest.raises(ValueError, match="cutoff"):
        MollifiedNoise(0.1, 2, cutoff=0.0)
    with pytest.raises(ValueError, match="max_freq"):
        MollifiedNoise(0.1, 2, max_freq=0)
    with pytest.raises(ValueError, match="max_coefficients"):
        MollifiedNoise(1 / 512, 3)
    noise = MollifiedNoise(0.1, 2)
    pos = torch.rand(5, 2)
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        noise.sample(pos + 1.0)
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        noise.sample(torch.cat([pos, torch.tensor([[0.5, -1e-4]])]))
    with pytest.raises(ValueError, match="shape \\[5\\]"):
        noise.sample(pos, batch=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="2 graphs"):
        noise.sample(pos, batch=torch.tensor([0, 0, 1, 2, 2]), num_graphs=2)
    with pytest.raises(ValueError, match="shape \\[N, 2\\]"):
        noise.sample(torch.rand(5, 3))
    with pytest.raises(ValueError, match="num_graphs"):
        noise.draw(0, 1)
    field = noise.draw(2, 1, gen(0))
    with pytest.raises(ValueError, match="'batch' is required"):
        field.evaluate(pos)
    with pytest.raises(ValueError, match="does not match"):
        field.at(LatticeIndex.full((4, 4), num_graphs=3))
    with pytest.raises(ValueError, match="2 entries"):
        field.on_lattice((4, 4, 4))
    with pytest.raises(ValueError, match="equal shapes"):
        noise.covariance(pos, pos[:3])
