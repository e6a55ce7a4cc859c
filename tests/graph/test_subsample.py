import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import halton, morton_order, subsample, subsample_size
from pyg_infdiff.graph.subsample import radical_inverse
from pyg_infdiff.testing.strategies import lattice_shapes, rates, seeds, subsample_methods

METHODS = ["uniform", "halton", "stratified"]


@given(shape=lattice_shapes(max_pixels=2048), rate=rates(1.0, 10.0), method=subsample_methods(),
       seed=seeds())
@settings(max_examples=60, deadline=None)
def test_rate_gives_sorted_unique_pixels(shape, rate, method, seed):
    num_pixels = math.prod(shape)
    pixel = subsample(shape, rate=rate, method=method,
                      generator=torch.Generator().manual_seed(seed))
    assert pixel.dtype == torch.long and pixel.dim() == 1
    assert pixel.numel() == math.ceil(num_pixels / rate - 1e-9)
    assert bool((pixel[1:] > pixel[:-1]).all())  # sorted and unique
    assert 0 <= int(pixel.min()) and int(pixel.max()) < num_pixels


@given(shape=lattice_shapes(max_pixels=1024), data=st.data(), method=subsample_methods(),
       seed=seeds())
@settings(max_examples=60, deadline=None)
def test_num_is_exact(shape, data, method, seed):
    num_pixels = math.prod(shape)
    num = data.draw(st.integers(1, num_pixels))
    pixel = subsample(shape, num=num, method=method, generator=torch.Generator().manual_seed(seed))
    assert pixel.numel() == num
    assert pixel.unique().numel() == num


@pytest.mark.parametrize("method", METHODS)
def test_all_pixels_at_rate_one(method):
    assert torch.equal(subsample((5, 7), rate=1, method=method), torch.arange(35))
    assert torch.equal(subsample((5, 7), num=35, method=method), torch.arange(35))


@pytest.mark.parametrize("method", METHODS)
def test_seeded_generator_is_deterministic(method):
    def draw(seed):
        return subsample((16, 16), rate=4, method=method,
                         generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"rate": 2, "num": 3}, "exactly one"),
        ({"rate": 0.5}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"num": 0}, "num"),
        ({"num": 17}, "at most the number of pixels 16"),
        ({"num": 2.5}, "num"),
        ({"rate": 2, "method": "sobol"}, "method"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        subsample((4, 4), **kwargs)


def test_subsample_size():
    assert subsample_size(784, rate=4) == 196
    assert subsample_size(784, rate=3) == 262
    assert subsample_size(10, num=10) == 10


def _star_discrepancy(pixel, shape):
    # max over boxes anchored at the origin (pixel-aligned) of |point fraction - pixel fraction|
    num_pixels = math.prod(shape)
    mask = torch.zeros(num_pixels, dtype=torch.float64)
    mask[pixel] = 1.0
    counts = mask.view(shape)
    area = torch.ones(shape, dtype=torch.float64)
    for dim in range(len(shape)):
        counts = counts.cumsum(dim)
        area = area.cumsum(dim)
    return float((counts / pixel.numel() - area / num_pixels).abs().max())


@pytest.mark.parametrize(
    "shape, rate", [((256,), 4), ((32, 32), 4), ((24, 20), 3), ((16, 16, 16), 8)]
)
def test_halton_and_stratified_cover_the_domain_more_evenly(shape, rate):
    gen = torch.Generator().manual_seed(0)
    mean = {}
    for method in METHODS:
        values = [_star_discrepancy(subsample(shape, rate=rate, method=method, generator=gen),
                                    shape) for _ in range(12)]
        mean[method] = sum(values) / len(values)
    assert mean["halton"] < 0.6 * mean["uniform"], mean
    assert mean["stratified"] < 0.6 * mean["uniform"], mean


def test_stratified_takes_one_pixel_per_aligned_block():
    gen = torch.Generator().manual_seed(1)
    pixel = subsample((16, 16), rate=4, method="stratified", generator=gen)
    rows, cols = pixel // 16, pixel % 16
    block = (rows // 2) * 8 + cols // 2
    assert torch.equal(block.sort().values, torch.arange(64))


@pytest.mark.parametrize("shape", [(8,), (4, 4), (5, 3), (3, 4, 2)])
def test_morton_order_is_a_permutation(shape):
    order = morton_order(shape)
    assert torch.equal(order.sort().values, torch.arange(math.prod(shape)))
    if shape == (4, 4):
        assert order[:4].tolist() == [0, 1, 4, 5]


def test_halton_points():
    assert torch.allclose(radical_inverse(torch.arange(5), 2),
                          torch.tensor([0, 0.5, 0.25, 0.75, 0.125], dtype=torch.float64))
    points = halton(100, 3, generator=torch.Generator().manual_seed(0))
    assert points.shape == (100, 3) and points.dtype == torch.float64
    assert bool((points >= 0).all() and (points < 1).all())
    # The rotation is the same for all points: differences are those of the plain sequence.
    plain = torch.stack([radical_inverse(torch.arange(100), b) for b in (2, 3, 5)], -1)
    gap = torch.remainder(points - plain - (points[:1] - plain[:1]), 1.0)
    assert bool((torch.minimum(gap, 1 - gap) < 1e-12).all())
    with pytest.raises(ValueError, match="ndim"):
        halton(4, 0)


def test_halton_pixels_are_nearly_uniform_over_seeds():
    # Every pixel is about equally likely to be chosen (the rotation is uniform).
    hits = torch.zeros(64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        hits[subsample((8, 8), rate=4, method="halton", generator=gen)] += 1
    assert float(hits.min()) > 0.6 * 100 and float(hits.max()) < 1.4 * 100
