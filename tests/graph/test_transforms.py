import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data

from pyg_infdiff.graph import ImageToGraph, lattice, subsample
from pyg_infdiff.testing.strategies import lattice_shapes, seeds, subsample_methods


@given(shape=lattice_shapes(max_pixels=1024), channels=st.integers(1, 3),
       rate=st.one_of(st.none(), st.floats(1.0, 6.0)), method=subsample_methods(), seed=seeds())
@settings(max_examples=40, deadline=None)
def test_nodes_are_pixels(shape, channels, rate, method, seed):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(channels, *shape, generator=gen) * 2 - 1
    data = ImageToGraph(rate=rate, method=method, generator=gen)(image)
    assert isinstance(data, Data)
    num_pixels = math.prod(shape)
    num = num_pixels if rate is None else math.ceil(num_pixels / rate - 1e-9)
    assert data.x.shape == (num, channels) and data.pos.shape == (num, len(shape))
    assert data.pixel.dtype == torch.long and data.pixel.shape == (num,)
    assert data.lattice_shape.tolist() == [list(shape)]
    assert data.lattice_shape.dtype == torch.long
    assert torch.equal(data.x, image.reshape(channels, -1)[:, data.pixel].t())
    assert torch.allclose(data.pos, lattice(shape)[data.pixel])
    # The value at a node is the image value at the pixel that contains its position.
    idx = (data.pos.double() * torch.tensor(shape) - 0.5).round().long()
    assert torch.equal(data.x, image[(slice(None), *idx.t())].t())
    assert "edge_index" not in data


@pytest.mark.parametrize("shape", [(20,), (8, 6), (4, 5, 3)])
def test_full_lattice_in_row_major_order(shape):
    image = torch.randn(2, *shape)
    data = ImageToGraph()(image)
    assert torch.equal(data.pixel, torch.arange(math.prod(shape)))
    assert torch.equal(data.x, image.reshape(2, -1).t())
    assert torch.equal(data.pos, lattice(shape))


def test_num_and_generator_reproducibility():
    image = torch.randn(1, 16, 16)
    a = ImageToGraph(num=50, method="stratified", generator=torch.Generator().manual_seed(7))
    b = ImageToGraph(num=50, method="stratified", generator=torch.Generator().manual_seed(7))
    da, db = a(image), b(image)
    assert da.num_nodes == 50
    assert torch.equal(da.pixel, db.pixel)
    expected = subsample((16, 16), num=50, method="stratified",
                         generator=torch.Generator().manual_seed(7))
    assert torch.equal(da.pixel, expected)
    assert not torch.equal(a(image).pixel, da.pixel)  # the generator advances


def test_float64_image_gives_float64_positions():
    data = ImageToGraph(rate=2)(torch.randn(1, 6, 6, dtype=torch.float64))
    assert data.pos.dtype == torch.float64 and data.x.dtype == torch.float64


@pytest.mark.parametrize("shape", [(32,), (8, 8), (5, 5, 5)])
def test_radius_edges(shape):
    pytest.importorskip("torch_cluster")
    from pyg_infdiff.graph import radius_graph

    data = ImageToGraph(rate=2, radius=0.3, generator=torch.Generator().manual_seed(0))(
        torch.randn(1, *shape)
    )
    expected = radius_graph(data.pos, 0.3)
    assert data.edge_index.size(1) == expected.size(1) > 0
    assert set(map(tuple, data.edge_index.t().tolist())) == set(map(tuple, expected.t().tolist()))
    no_loop = ImageToGraph(radius=0.3, loop=False)(torch.randn(1, *shape))
    assert bool((no_loop.edge_index[0] != no_loop.edge_index[1]).all())


def test_repr():
    assert repr(ImageToGraph()) == "ImageToGraph(method='uniform', radius=None, loop=True)"
    assert repr(ImageToGraph(rate=4, method="halton", radius=0.1)) == (
        "ImageToGraph(rate=4, method='halton', radius=0.1, loop=True)"
    )
    assert repr(ImageToGraph(num=10)).startswith("ImageToGraph(num=10, ")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 2, "num": 3}, "at most one"),
        ({"rate": 0.5}, "rate"),
        ({"num": 0}, "num"),
        ({"method": "grid"}, "method"),
        ({"radius": 0.0}, "radius"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageToGraph(**kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="shape"):
        ImageToGraph()(torch.randn(5))
    with pytest.raises(ValueError, match="floating point"):
        ImageToGraph()(torch.zeros(1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at most the number of pixels"):
        ImageToGraph(num=20)(torch.zeros(1, 4, 4))
