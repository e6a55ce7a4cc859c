"""SSIM (pyg_infdiff.metrics.ssim): identity, closed forms, and the usual properties."""
import pytest
import torch

from pyg_infdiff.metrics import ssim


def images(seed: int = 0, shape=(3, 2, 20, 24)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identical_images_score_one():
    x = images()
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_constant_images_closed_form():
    # No variance anywhere: only the luminance term, (2ab + C1) / (a^2 + b^2 + C1).
    a, b, data_range = 0.5, 0.25, 1.0
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # 0.250100 / 0.312600 = 0.800064
    assert float(ssim(x, y, data_range=data_range)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.800064, abs=1e-6)


def test_one_pixel_window_is_the_mean_of_the_pixelwise_luminance_term():
    # A window of one tap: mu = the pixel, sigma = 0, so the index is the mean of
    # (2xy + C1) / (x^2 + y^2 + C1) over the pixels.
    x = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
    y = torch.tensor([[[[1.0, 1.0], [-0.5, 0.0]]]])
    c1 = (0.01 * 2.0) ** 2
    terms = [(2 + c1) / (2 + c1), (-2 + c1) / (2 + c1), (-0.5 + c1) / (0.5 + c1), 1.0]
    assert float(ssim(x, y, window_size=1)) == pytest.approx(sum(terms) / 4, rel=1e-12)


def test_symmetry_range_and_monotone_in_noise():
    x = images()
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=gen)
    scores = [ssim(x, x + s * noise) for s in (0.05, 0.2, 0.8)]
    assert bool((scores[0] > scores[1]).all() and (scores[1] > scores[2]).all())
    torch.testing.assert_close(ssim(x, x + 0.2 * noise), ssim(x + 0.2 * noise, x))
    assert bool((scores[2] > -1).all() and (scores[0] < 1).all())


def test_errors():
    x = images()
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, x[:, :1])
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, window_size=4)
    with pytest.raises(ValueError, match="smaller"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="positive"):
        ssim(x, x, data_range=0.0)
