"""SpectralConv against analytic oracles: a single Fourier mode is multiplied by its weight,
circular shifts commute with the layer, a band-limited function gives the same output function
on every lattice that resolves it (and on resampling to another lattice), too many modes for a
lattice is a clear error, and bfloat16 autocast computes the transforms in float32."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.nn import SpectralConv
from pyg_infdiff.nn.spectral import fit_modes


def centres(size: tuple[int, ...]) -> torch.Tensor:
    """Cell centres (j + 1/2) / n of a lattice, shape (d, n_1, ..., n_d), float64."""
    axes = [(torch.arange(n, dtype=torch.float64) + 0.5) / n for n in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def band_limited(size: tuple[int, ...], channels: int, band: int, seed: int) -> torch.Tensor:
    """A random real trigonometric polynomial with frequencies |k_j| < band, sampled at the cell
    centres of `size`: shape (1, channels, *size), float64."""
    gen = torch.Generator().manual_seed(seed)
    p = centres(size)
    out = torch.zeros(channels, *size, dtype=torch.float64)
    grids = torch.meshgrid(*[torch.arange(-band + 1, band)] * len(size), indexing="ij")
    for k in torch.stack([g.reshape(-1) for g in grids], dim=1).tolist():
        phase = 2 * math.pi * sum(kj * p[j] for j, kj in enumerate(k))
        a, b = torch.randn(2, channels, 1, generator=gen, dtype=torch.float64)
        out += (a.view(-1, *(1,) * len(size)) * torch.cos(phase)
                + b.view(-1, *(1,) * len(size)) * torch.sin(phase))
    return out.unsqueeze(0)


def trig_interp(values: torch.Tensor, size: tuple[int, ...], band: int) -> torch.Tensor:
    """The oracle of resampling: the trigonometric polynomial with |k_j| < band through the
    cell-centre samples `values` (1, C, n_1..n_d), evaluated at the centres of `size`, by
    explicit DFT sums per axis (no FFT)."""
    out = values.to(torch.complex128)
    k = torch.arange(-band + 1, band, dtype=torch.float64)
    for axis, m in enumerate(size):
        n = out.size(axis + 2)
        p_in = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        p_out = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        analysis = torch.exp(-2j * math.pi * k[:, None] * p_in[None, :]) / n  # (K, n)
        synthesis = torch.exp(2j * math.pi * p_out[:, None] * k[None, :])  # (m, K)
        out = torch.movedim(torch.movedim(out, axis + 2, -1) @ (synthesis @ analysis).T,
                            -1, axis + 2)
    return out.real


def random_layer(in_ch: int, out_ch: int, modes, ndim: int, seed: int = 0) -> SpectralConv:
    torch.manual_seed(seed)
    conv = SpectralConv(in_ch, out_ch, modes, ndim).double()
    torch.nn.init.normal_(conv.bias)
    return conv


@pytest.mark.parametrize("k", [(1, 2), (-2, 1), (2, 0), (0, 0)])
def test_a_single_mode_is_multiplied_by_its_weight(k):
    # x = cos(2 pi k.p) in channel 1 of 2: y_o = Re(R[1, o, k] e^{2 pi i k.p}) + b_o for
    # k_2 > 0 (one bin of the real FFT holds the mode), Re(R_k + R_-k) / 2 cos(...) ... for
    # k_2 = 0 both bins (k_1, 0) and (-k_1, 0) are kept, each half the cosine.
    conv = random_layer(2, 3, 3, 2)
    size = (9, 8)
    p = centres(size)
    phase = 2 * math.pi * (k[0] * p[0] + k[1] * p[1])
    x = torch.stack([torch.zeros(size, dtype=torch.float64), torch.cos(phase)])[None]
    weight = torch.view_as_complex(conv.weight.detach())  # (in, out, 5, 3)
    w = weight[1, :, k[0] % 5 if k[0] >= 0 else 5 + k[0], abs(k[1])]  # FFT order 0,1,2,-2,-1
    e = torch.exp(1j * phase)
    if k[1] > 0:
        expected = (w[:, None, None] * e).real
    elif k[0] == 0:
        expected = w.real[:, None, None] * torch.ones(size, dtype=torch.float64)
    else:
        w_neg = weight[1, :, -k[0] % 5, 0]
        expected = 0.5 * (w[:, None, None] * e + w_neg[:, None, None] * e.conj()).real
    expected = expected + conv.bias.detach()[:, None, None]
    torch.testing.assert_close(conv(x)[0], expected, atol=1e-12, rtol=0)


def test_modes_outside_the_band_are_removed():
    conv = random_layer(1, 2, 2, 2)
    p = centres((8, 8))
    x = torch.cos(2 * math.pi * (2 * p[0] + p[1]))[None, None]  # |k_1| = 2, not < 2
    expected = conv.bias.detach().view(1, 2, 1, 1).expand(1, 2, 8, 8)
    torch.testing.assert_close(conv(x), expected, atol=1e-12, rtol=0)


@given(ndim=st.integers(1, 3), modes=st.integers(1, 3), extra=st.integers(0, 2),
       shift=st.integers(-5, 5), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_commutes_with_circular_shifts(ndim, modes, extra, shift, seed):
    n = 2 * modes - 1 + extra
    conv = random_layer(2, 3, modes, ndim, seed)
    x = torch.randn(2, 2, *(n,) * ndim, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    dims = list(range(2, 2 + ndim))
    shifts = [shift + j for j in range(ndim)]
    torch.testing.assert_close(conv(torch.roll(x, shifts, dims)),
                               torch.roll(conv(x), shifts, dims), atol=1e-12, rtol=0)


@given(ndim=st.integers(1, 3), modes=st.integers(1, 3), band=st.integers(1, 4),
       coarse_extra=st.integers(0, 2), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_same_function_on_a_twice_finer_lattice(ndim, modes, band, coarse_extra, seed):
    # The input is band-limited (|k| < band) and resolved by the coarse lattice; the output,
    # band-limited to |k| < min(band, modes), interpolated from the coarse lattice equals the
    # output computed on the 2x finer one, and resampling the coarse input onto the fine
    # lattice inside the layer gives the same samples again.
    n = max(2 * band - 1, 2 * modes - 1) + coarse_extra
    coarse, fine = (n,) * ndim, (2 * n,) * ndim
    conv = random_layer(2, 2, modes, ndim, seed)
    y_coarse = conv(band_limited(coarse, 2, band, seed))
    y_fine = conv(band_limited(fine, 2, band, seed))
    torch.testing.assert_close(trig_interp(y_coarse, fine, min(band, modes)), y_fine,
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(conv(band_limited(coarse, 2, band, seed), size=fine), y_fine,
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(conv(band_limited(fine, 2, band, seed), size=coarse), y_coarse,
                               atol=1e-10, rtol=0)


def test_nested_lattices_agree_at_shared_points():
    # Cell centres of n points are every third centre of 3n points, offset by one.
    conv = random_layer(1, 2, 3, 2)
    y_coarse = conv(band_limited((6, 6), 1, 3, 0))
    y_fine = conv(band_limited((18, 18), 1, 3, 0))
    torch.testing.assert_close(y_fine[..., 1::3, 1::3], y_coarse, atol=1e-10, rtol=0)


def test_too_many_modes_raise():
    conv = SpectralConv(1, 1, (3, 4), 2)
    conv(torch.randn(1, 1, 5, 7))  # 2m - 1 points: the least that holds the modes
    with pytest.raises(ValueError, match=r"4 modes on axis 1 .* at least 7 points"):
        conv(torch.randn(1, 1, 5, 6))
    with pytest.raises(ValueError, match="output lattice"):
        conv(torch.randn(1, 1, 5, 7), size=(3, 7))
    with pytest.raises(ValueError, match="2 entries"):
        SpectralConv(1, 1, (3, 4, 5), 2)
    with pytest.raises(ValueError, match="positive"):
        SpectralConv(1, 1, 0, 2)
    with pytest.raises(ValueError, match="ndim"):
        SpectralConv(1, 1, 2, 4)
    with pytest.raises(ValueError, match=r"\[B, 1"):
        conv(torch.randn(1, 2, 5, 7))


def test_fit_modes():
    assert fit_modes(4, (14, 14)) == (4, 4)
    assert fit_modes(4, (7, 7), (4, 4)) == (2, 2)
    assert fit_modes((1, 5), (9, 8)) == (1, 4)
    conv = SpectralConv(1, 1, fit_modes(4, (7, 4)), 2)
    assert conv(torch.randn(1, 1, 7, 4)).shape == (1, 1, 7, 4)


def test_bfloat16_autocast_computes_in_float32():
    torch.manual_seed(0)
    conv = SpectralConv(4, 4, 3, 2)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 4, 12, 12)
    reference = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = conv(x)  # float32 in: the transforms and the output stay float32
        low = conv(x.bfloat16())  # bfloat16 in (a previous autocast layer): bfloat16 out
    assert same.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(same, reference)
    assert bool(torch.isfinite(low).all())
    error = float((low.float() - reference).detach().norm() / reference.detach().norm())
    assert error < 1e-2, error  # the bfloat16 rounding of input and output (~4e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x.bfloat16()).float().square().sum().backward()
    assert conv.weight.grad.dtype == torch.float32
    assert bool(torch.isfinite(conv.weight.grad).all())


def test_state_dict_is_real_and_repr():
    conv = SpectralConv(3, 5, (2, 3), 2)
    state = conv.state_dict()
    assert state["weight"].shape == (3, 5, 3, 3, 2) and not state["weight"].is_complex()
    assert set(state) == {"weight", "bias"}
    assert "bias" not in SpectralConv(3, 5, 2, 2, bias=False).state_dict()
    assert repr(conv) == "SpectralConv(3, 5, modes=(2, 3))"


def test_compiles_without_graph_breaks():
    conv = SpectralConv(2, 3, 2, 2)
    x = torch.randn(1, 2, 6, 6)
    torch._dynamo.reset()
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, size=(9, 9)), conv(x, size=(9, 9)))
    torch._dynamo.reset()
