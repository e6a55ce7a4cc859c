import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import lattice
from pyg_infdiff.noise import GaussianMollifier, idct


def mirror_convolve(x: torch.Tensor, sigma: float, ndim: int) -> torch.Tensor:
    r"""Reference: along each of the last ``ndim`` axes, extend the data by mirroring at both
    faces (period 2n, as many images as the kernel needs) and convolve with a Gaussian of
    standard deviation ``sigma`` in domain units, sampled at the pixel spacing."""
    for axis in range(x.dim() - ndim, x.dim()):
        n = x.size(axis)
        half = math.ceil(10 * sigma * n)  # taps beyond 10 sigma are below 1e-21
        offsets = torch.arange(-half, half + 1, dtype=torch.float64) / n
        taps = torch.exp(-0.5 * (offsets / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma * n)
        idx = torch.arange(-half, n + half) % (2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)  # mirror images of the pixels
        ext = x.index_select(axis, idx).movedim(axis, -1)
        x = (ext.unfold(-1, 2 * half + 1, 1) @ taps.to(x.dtype)).movedim(-1, axis)
    return x


def bumps(pos: torch.Tensor) -> torch.Tensor:
    # smooth, with (numerically) zero normal derivative at the faces: [N, d] -> [N, 2]
    centre = torch.full((pos.size(1),), 0.45, dtype=pos.dtype)
    r2 = ((pos - centre) ** 2).sum(-1)
    r2b = ((pos - 0.6) ** 2).sum(-1)
    second = torch.exp(-r2b / 0.02) - 0.5 * torch.exp(-r2 / 0.03)
    return torch.stack([torch.exp(-r2 / 0.01), second], dim=-1)


def on_grid(fn, shape, dtype=torch.float64):
    pos = lattice(shape, dtype=dtype)
    return fn(pos).T.reshape(1, -1, *shape)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), ndim=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_matches_mirror_extended_gaussian_convolution(data, ndim, seed):
    high = {1: 96, 2: 40, 3: 16}[ndim]
    shape = data.draw(st.lists(st.integers(6, high), min_size=ndim, max_size=ndim))
    # the sampled kernel matches the continuous one when sigma spans >= 2.5 pixels
    sigma = data.draw(st.floats(2.5 / min(shape), 0.6))
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    ref = mirror_convolve(x, sigma, ndim)
    exact = GaussianMollifier(sigma, cutoff=1e-15).apply(x, ndim)
    torch.testing.assert_close(exact, ref, atol=1e-10, rtol=0)
    default = GaussianMollifier(sigma).apply(x, ndim)  # truncated at gains below 1e-8
    torch.testing.assert_close(default, ref, atol=1e-7, rtol=0)
    torch.testing.assert_close(GaussianMollifier(sigma).apply(x.float(), ndim).double(), ref,
                               atol=2e-5, rtol=0)


@pytest.mark.parametrize("sigma", [0.02, 0.3])  # fused n x n filter / two thin factors
def test_apply_and_evaluate_at_pixel_centres_agree(sigma):
    moll = GaussianMollifier(sigma)
    x = torch.randn(2, 3, 40, 24, dtype=torch.float64)
    grid = moll.apply(x, 2)
    pos = lattice((40, 24), dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(pos.size(0))
    vals = moll.evaluate(x, pos.repeat(2, 1), batch)
    torch.testing.assert_close(vals, grid.reshape(2, 3, -1).transpose(1, 2).reshape(-1, 3),
                               atol=1e-12, rtol=0)
    c = moll.coefficients(x, 2)
    assert c.shape == (2, 3, moll.num_freq(40), moll.num_freq(24))
    torch.testing.assert_close(idct(c, 2, (40, 24)), grid, atol=1e-12, rtol=0)
    torch.testing.assert_close(grid.mean((-1, -2)), x.mean((-1, -2)))  # g_0 = 1


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_undo_recovers_band_limited_input(ndim):
    gen = torch.Generator().manual_seed(ndim)
    c = torch.zeros(2, *([16] * ndim), dtype=torch.float64)
    c[(slice(None),) + (slice(0, 6),) * ndim] = torch.randn(2, *([6] * ndim), generator=gen,
                                                            dtype=torch.float64)
    x = idct(c, ndim, [16] * ndim)
    moll = GaussianMollifier(0.02)
    blurred = moll.apply(x, ndim)
    assert (blurred - x).abs().max() > 1e-2
    torch.testing.assert_close(moll.undo(blurred, ndim, inv_snr=1e-4), x,
                               atol=1e-6 * x.abs().max().item(), rtol=0)
    # the default (inv_snr=0.05) still improves on the blurred data
    assert (moll.undo(blurred, ndim) - x).abs().max() < 0.5 * (blurred - x).abs().max()


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 48), min_size=1, max_size=2),
       pixels=st.floats(0.3, 1.0), seed=st.integers(0, 2**16))
def test_undo_at_any_lattice_resolution(shape, pixels, seed):
    # Wiener deblurring inverts the blur at every lattice size, odd, even or tiny: data whose
    # cosine coefficients live below half the lattice's frequencies, blurred by a mollifier
    # :obj:`pixels` pixels wide, comes back (inv_snr small against the smallest gain there).
    ndim = len(shape)
    gen = torch.Generator().manual_seed(seed)
    c = torch.zeros(1, *shape, dtype=torch.float64)
    band = tuple(slice(0, max(1, n // 2)) for n in shape)
    c[(slice(None), *band)] = torch.randn(1, *[max(1, n // 2) for n in shape], generator=gen,
                                          dtype=torch.float64)
    x = idct(c, ndim, shape)
    moll = GaussianMollifier(pixels / max(shape))
    torch.testing.assert_close(moll.undo(moll.apply(x, ndim), ndim, inv_snr=1e-6), x,
                               atol=1e-6 * max(1.0, x.abs().max().item()), rtol=0)


def test_band_limited_undo():
    from pyg_infdiff.noise.mollifier import wiener_gains

    moll = GaussianMollifier(1 / 64)  # half a pixel of a 32² training lattice
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    blurred = moll.apply(x, 2)
    # No band, or a band as wide as the lattice: the plain Wiener filter.
    torch.testing.assert_close(moll.undo(blurred, 2, band=128), moll.undo(blurred, 2))
    torch.testing.assert_close(moll.undo(blurred, 2, band=(200, 128)), moll.undo(blurred, 2))
    # Below the band the gains are Wiener's; above, the restored spectrum g w continues from
    # the edge with the decay g^2 / g_edge^2: continuous, monotone, no amplification.
    g = moll.gains(128)
    w, plain = wiener_gains(g, 0.05, band=32), wiener_gains(g, 0.05)
    torch.testing.assert_close(w[:32], plain[:32])
    restored = g * w
    torch.testing.assert_close(restored[32:], restored[31] * (g[32:] / g[31]) ** 2)
    assert (restored[32:].diff() <= 0).all() and (w[32:] <= w[31]).all()
    # A band-limited signal (frequencies below the band) comes back exactly as with no band.
    c = torch.zeros(1, 128, 128, dtype=torch.float64)
    c[:, :16, :16] = torch.randn(16, 16, generator=torch.Generator().manual_seed(1),
                                 dtype=torch.float64)
    smooth = idct(c, 2, (128, 128))
    torch.testing.assert_close(moll.undo(moll.apply(smooth, 2), 2, inv_snr=1e-6, band=32),
                               smooth, atol=1e-8, rtol=0)
    # Model error above the training band (white noise added to a mollified edge) is boosted
    # up to 1 / (2 lambda) by the plain filter and damped with the band.
    edge = (torch.arange(128, dtype=torch.float64) >= 64).double().expand(128, 128)[None]
    noisy = moll.apply(edge, 2) + 0.01 * torch.randn(1, 128, 128, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(2))
    error_plain = (moll.undo(noisy, 2) - edge).abs().mean()
    error_band = (moll.undo(noisy, 2, band=32) - edge).abs().mean()
    assert error_band < 0.5 * error_plain
    with pytest.raises(ValueError, match="band"):
        moll.undo(blurred, 2, band=0)
    with pytest.raises(ValueError, match="band"):
        moll.undo(blurred, 2, band=(32, 32, 32))


def test_resolution_consistency():
    moll = GaussianMollifier(0.05)
    probe = torch.rand(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probe = torch.cat([probe, lattice((64, 64), dtype=torch.float64)])
    vals = {n: moll.evaluate(on_grid(bumps, (n, n)).float(), probe) for n in (64, 128)}
    torch.testing.assert_close(vals[64], vals[128], atol=1e-5, rtol=0)
    torch.testing.assert_close(vals[128].double(), moll.evaluate(on_grid(bumps, (256, 256)),
                                                                 probe), atol=1e-5, rtol=0)
    # not Neumann-compatible (non-zero slope at the faces): converges with resolution
    def slope(pos):
        return torch.stack([pos[:, 0] ** 2 + torch.sin(3 * pos[:, 1]), pos.sum(-1)], dim=-1)
    vals = {n: moll.evaluate(on_grid(slope, (n, n)), probe) for n in (32, 64, 128)}
    gap_coarse = (vals[32] - vals[64]).abs().max()
    gap_fine = (vals[64] - vals[128]).abs().max()
    assert gap_fine < 1e-3 and gap_fine < 0.5 * gap_coarse


def test_float32_under_autocast():
    moll = GaussianMollifier(0.03)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = moll.apply(x, 2)
    pos = torch.rand(100, 2, dtype=torch.float64)
    ref_pts = moll.evaluate(x[:1], pos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moll.apply(x.float(), 2)
        undone = moll.undo(out, 2, inv_snr=0.05)
        pts = moll.evaluate(x[:1].float(), pos.float())
    assert out.dtype == undone.dtype == pts.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(undone.double(), moll.undo(ref, 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(pts.double(), ref_pts, atol=1e-5, rtol=0)
    half = moll.apply(x.to(torch.bfloat16), 2)  # low-precision input: computed in float32
    assert half.dtype == torch.bfloat16


def test_gains_num_freq_and_repr():
    moll = GaussianMollifier(0.1, cutoff=1e-4)
    g = moll.gains(8)
    torch.testing.assert_close(g, torch.exp(-0.5 * (math.pi * 0.1 * torch.arange(8.0,
                               dtype=torch.float64)) ** 2))
    k = moll.num_freq()
    assert moll.gains(k)[-1] >= 1e-4 > moll.gains(k + 1)[-1]
    assert moll.num_freq(5) == 5
    assert repr(moll) == "GaussianMollifier(sigma=0.1, cutoff=0.0001)"


def test_errors():
    for sigma in [0.0, -0.1, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="sigma"):
            GaussianMollifier(sigma)
    with pytest.raises(ValueError, match="cutoff"):
        GaussianMollifier(0.1, cutoff=1.0)
    moll = GaussianMollifier(0.1)
    with pytest.raises(ValueError, match="ndim"):
        moll.apply(torch.randn(4, 4), 3)
    with pytest.raises(ValueError, match="inv_snr"):
        moll.undo(torch.randn(4, 4), 2, inv_snr=0.0)
    with pytest.raises(ValueError, match="one lattice axis per"):
        moll.evaluate(torch.randn(1, 1, 8, 8), torch.rand(4, 3))
    with pytest.raises(ValueError, match="num_freq"):
        moll.gains(0)
