import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.metrics import band_energy, detail_ratio


def cosine_image(side: int, kx: int, ky: int, amplitude: float, phase: float = 0.3):
    # a * cos(2 pi (kx x + ky y) + phase) sampled at the pixel centres of a side x side lattice
    x = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    arg = 2 * math.pi * (kx * x.view(1, -1) + ky * x.view(-1, 1)) + phase
    return (amplitude * torch.cos(arg)).view(1, 1, side, side)


@settings(max_examples=40, deadline=None)
@given(side=st.sampled_from([16, 28, 32, 64]), kx=st.integers(0, 7), ky=st.integers(1, 7),
       amplitude=st.floats(0.1, 2.0))
def test_a_cosine_puts_half_its_squared_amplitude_into_its_band(side, kx, ky, amplitude):
    image = cosine_image(side, kx, ky, amplitude)
    k = max(kx, ky)
    assert band_energy(image, k, k + 1).item() == pytest.approx(amplitude**2 / 2, rel=1e-9)
    assert band_energy(image, 0, k).item() == pytest.approx(0, abs=1e-12)
    assert band_energy(image, k + 1, float("inf")).item() == pytest.approx(0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), side=st.sampled_from([8, 15, 32]),
       cut=st.floats(0.5, 7.5))
def test_the_bands_add_up_to_the_mean_square(seed, side, cut):
    images = torch.randn(3, 2, side, side, generator=torch.Generator().manual_seed(seed))
    total = band_energy(images, 0, cut) + band_energy(images, cut, float("inf"))
    torch.testing.assert_close(total, images.double().pow(2).mean((1, 2, 3)))


@settings(max_examples=20, deadline=None)
@given(kx=st.integers(0, 6), ky=st.integers(0, 6), refine=st.sampled_from([2, 3, 4]))
def test_one_band_limited_function_has_one_energy_at_every_resolution(kx, ky, refine):
    # frequencies are per unit length, so a 16^2 and a finer discretisation of one function agree
    coarse = cosine_image(16, kx, ky, 1.0) + 0.5 * cosine_image(16, 7, 3, 1.0, phase=1.1)
    fine = cosine_image(16 * refine, kx, ky, 1.0) + 0.5 * cosine_image(16 * refine, 7, 3, 1.0,
                                                                        phase=1.1)
    for low, high in ((0, 4), (4, 8), (0, 8)):
        torch.testing.assert_close(band_energy(fine, low, high), band_energy(coarse, low, high))


def test_detail_ratio_sees_blur_and_not_the_resolution():
    torch.manual_seed(0)
    sharp = torch.sign(torch.randn(4, 3, 8, 8)).repeat_interleave(8, -1).repeat_interleave(8, -2)
    assert detail_ratio(sharp, sharp, 8, 32) == pytest.approx(1.0)
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    assert detail_ratio(blurred, sharp, 8, 32) < 0.5
    # a 2x nearest upsampling holds the same energy below the coarse Nyquist frequency
    up = sharp.repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert detail_ratio(up, sharp, 0, 4) == pytest.approx(1.0, rel=0.05)


def test_bad_input_is_refused():
    image = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="square"):
        band_energy(torch.zeros(1, 1, 8, 9), 0, 1)
    with pytest.raises(ValueError, match="low < high"):
        band_energy(image, 3, 3)
    with pytest.raises(ValueError, match="resolve"):
        detail_ratio(torch.ones(1, 1, 64, 64), image + 1, 0, 16)
    with pytest.raises(ValueError, match="no energy"):
        detail_ratio(image, image, 1, 4)
