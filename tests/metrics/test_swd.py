import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyg_infdiff.metrics import (
    SWDResult,
    laplacian_pyramid,
    patch_descriptors,
    sliced_wasserstein,
    sliced_wasserstein_distance,
)
from pyg_infdiff.metrics.swd import normalize_descriptors, pyr_up, swd_resolutions


def disks(num, res, generator):
    """Images of three coloured disks on a dark background, in [-1, 1]."""
    axis = (torch.arange(res) + 0.5) / res
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    images = torch.full((num, 3, res, res), -1.0)
    for i in range(num):
        for _ in range(3):
            centre = torch.rand(2, generator=generator)
            radius = 0.1 + 0.2 * torch.rand(1, generator=generator)
            colour = torch.rand(3, generator=generator) * 2 - 1
            inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
            images[i][:, inside] = colour[:, None]
    return images


def blur(x, sigma):
    k = torch.arange(-7, 8, dtype=torch.float32)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.size(1)
    x = F.conv2d(F.pad(x, (7, 7, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, 15),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, 7, 7), mode="replicate"),
                    k.view(1, 1, -1, 1).expand(c, 1, 15, 1), groups=c)


def progan_pyramid(x, num_levels):
    """Karras et al.'s generate_laplacian_pyramid (metrics/sliced_wasserstein.py)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    gauss = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6],
                        [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0

    def down(m):
        return ndimage.convolve(m, gauss[None, None], mode="mirror")[:, :, ::2, ::2]

    def up(m):
        s = m.shape
        res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), m.dtype)
        res[:, :, ::2, ::2] = m
        return ndimage.convolve(res, gauss[None, None] * 4.0, mode="mirror")

    pyramid = [np.array(x, dtype=np.float32, copy=True)]
    for _ in range(1, num_levels):
        pyramid.append(down(pyramid[-1]))
        pyramid[-2] -= up(pyramid[-1])
    return pyramid


def test_pyramid_matches_progan_reference():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    ours = laplacian_pyramid(x, 3)
    ref = progan_pyramid(x.numpy(), 3)
    assert [tuple(level.shape) for level in ours] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=2e-4)


def test_pyramid_reconstructs_the_image():
    x = torch.rand(1, 1, 17, 20, generator=torch.Generator().manual_seed(1))
    pyramid = laplacian_pyramid(x, 3)
    rebuilt = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        rebuilt = level + pyr_up(rebuilt, tuple(level.shape[-2:]))
    torch.testing.assert_close(rebuilt, x, rtol=0, atol=1e-5)
    assert swd_resolutions(64, 64) == [64, 32, 16] and swd_resolutions(28, 28) == [28]
    with pytest.raises(ValueError, match="num_levels"):
        laplacian_pyramid(x, 0)


def test_patch_descriptors_are_image_windows():
    level = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(2))
    patches = patch_descriptors(level, 7, 5, torch.Generator().manual_seed(3))
    assert patches.shape == (10, 3, 7, 7)
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(3, 12 - 3, (2, 5, 1), generator=g)
    cols = torch.randint(3, 10 - 3, (2, 5, 1), generator=g)
    r, c = rows[1, 4, 0].item(), cols[1, 4, 0].item()
    assert torch.equal(patches[9], level[1, :, r - 3 : r + 4, c - 3 : c + 4])
    with pytest.raises(ValueError, match="patch_size"):
        patch_descriptors(level, 6)
    flat = normalize_descriptors(patches)
    assert flat.shape == (10, 147)
    per_channel = flat.view(10, 3, 49)
    torch.testing.assert_close(per_channel.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=(0, 2), correction=0), torch.ones(3))


def test_sliced_wasserstein_is_w1_in_one_dimension():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(200, 1, generator=g), torch.randn(200, 1, generator=g) + 0.5
    exact = (a.sort(dim=0).values - b.sort(dim=0).values).abs().mean().item()
    assert sliced_wasserstein(a, b, 2, 8, g) == pytest.approx(exact, rel=1e-5)
    with pytest.raises(ValueError, match="equal shape"):
        sliced_wasserstein(a, b[:10])


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(5)
    return disks(16, 32, g), disks(16, 32, g)


def swd(real, fake, seed=0, **kwargs):
    return sliced_wasserstein_distance(real, fake, generator=torch.Generator().manual_seed(seed),
                                       **kwargs)


def test_swd_identical_small_and_monotone_in_blur(images):
    real, _ = images
    same = swd(real, real.clone())
    assert isinstance(same, SWDResult) and same.resolutions == (32, 16)
    blurred = [swd(real, blur(real, s)).mean for s in (1.0, 2.0, 4.0)]
    assert same.mean < 0.7 * blurred[0]
    assert blurred[0] < blurred[1] < blurred[2]
    noisy = swd(real, real + 0.3 * torch.randn(real.shape, generator=torch.Generator()))
    assert noisy.distances[0] > 3 * same.distances[0]  # noise shows at the finest level
    keys = list(same.as_dict())
    assert keys == ["swd_x1e3_32", "swd_x1e3_16", "swd_x1e3_avg"]
    assert same.as_dict()["swd_x1e3_avg"] == pytest.approx(sum(same.distances) / 2)


def test_swd_deterministic_batched_and_scale_free(images):
    real, other = images
    r1 = swd(real, other, seed=3, num_repeats=1)
    assert r1 == swd(real, other, seed=3, num_repeats=1)
    assert r1 != swd(real, other, seed=4, num_repeats=1)
    # Iterables of batches work too (one-shot iterators included).
    streamed = swd(real.split(5), other.split(7), seed=3, num_repeats=1)
    assert streamed == swd(iter(real.split(5)), iter(other.split(7)), seed=3, num_repeats=1)
    assert streamed.resolutions == r1.resolutions
    as_uint8 = ((real + 1) * 127.5).round().to(torch.uint8)
    other_u8 = ((other + 1) * 127.5).round().to(torch.uint8)
    r_u8 = swd(as_uint8, other_u8, seed=3, num_repeats=1)
    np.testing.assert_allclose(r_u8.distances, r1.distances, rtol=0.05)


def test_swd_validation(images):
    real, other = images
    with pytest.raises(ValueError, match="equal image counts"):
        swd(real, other[:8])
    with pytest.raises(ValueError, match="equal image counts"):
        swd(real[:, :1], other)
    with pytest.raises(ValueError, match="smaller than"):
        swd(real[..., :8, :8], other[..., :8, :8])
    with pytest.raises(ValueError, match="min_resolution"):
        swd(real, other, min_resolution=4)
    with pytest.raises(ValueError, match="no images"):
        swd([], [])
