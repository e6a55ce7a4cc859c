import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch

from pyg_infdiff.graph import ImageToGraph, LatticeIndex, lattice, pixel_to_pos
from pyg_infdiff.testing.strategies import lattice_shapes, seeds


@given(shape=lattice_shapes(max_pixels=512))
@settings(max_examples=40, deadline=None)
def test_lattice_is_pixel_centres_in_row_major_order(shape):
    pos = lattice(shape, dtype=torch.float64)
    num = math.prod(shape)
    assert pos.shape == (num, len(shape))
    assert pos.min() > 0 and pos.max() < 1
    # Row-major: the same as converting every flat index.
    assert torch.equal(pos, pixel_to_pos(torch.arange(num), shape, dtype=torch.float64))
    # The last axis varies fastest, like image.reshape(C, -1).
    index = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij"), -1)
    expected = (index.reshape(-1, len(shape)).double() + 0.5) / torch.tensor(shape)
    assert torch.allclose(pos, expected, atol=1e-12)


def test_lattice_2d_convention():
    pos = lattice((2, 4))
    # pos[:, 0] is the row coordinate, pos[:, 1] the column coordinate.
    assert torch.allclose(pos[1], torch.tensor([0.25, 0.375]))
    assert torch.allclose(pos[4], torch.tensor([0.75, 0.125]))
    assert lattice((3,), dtype=torch.float64).dtype == torch.float64


@given(shape=lattice_shapes(max_pixels=4096), seed=seeds())
@settings(max_examples=40, deadline=None)
def test_pixel_to_pos_inverts_to_the_flat_index(shape, seed):
    num = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    pixel = torch.randint(0, num, (17,), generator=gen)
    pos = pixel_to_pos(pixel, shape, dtype=torch.float64)
    idx = (pos * torch.tensor(shape) - 0.5).round().long()
    flat = torch.zeros_like(pixel)
    for k, n in enumerate(shape):
        flat = flat * n + idx[:, k]
    assert torch.equal(flat, pixel)


@pytest.mark.parametrize("shape", [(), (0, 3), (4, -1)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        lattice(shape)


@given(
    shape=lattice_shapes(max_pixels=256),
    num_graphs=st.integers(1, 3),
    channels=st.integers(1, 3),
    seed=seeds(),
)
@settings(max_examples=40, deadline=None)
def test_scatter_gather_roundtrip(shape, num_graphs, channels, seed):
    gen = torch.Generator().manual_seed(seed)
    num = math.prod(shape)
    pixels, batches = [], []
    for b in range(num_graphs):
        count = int(torch.randint(1, num + 1, (1,), generator=gen))
        pixels.append(torch.randperm(num, generator=gen)[:count])
        batches.append(torch.full((count,), b))
    index = LatticeIndex(shape, torch.cat(pixels), torch.cat(batches), num_graphs)
    x = torch.randn(index.pixel.numel(), channels, generator=gen)
    grid, mask = index.scatter(x)
    assert grid.shape == (num_graphs, channels, *shape)
    assert mask.shape == (num_graphs, 1, *shape)
    assert torch.equal(index.gather(grid), x)
    assert int(mask.sum()) == x.size(0)
    assert torch.equal(grid * mask, grid)  # zero where there is no node
    assert index.density == pytest.approx(x.size(0) / (num_graphs * num))
    assert torch.allclose(index.pos(), pixel_to_pos(index.pixel, shape))


@given(shape=lattice_shapes(max_pixels=256), num_graphs=st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_full_lattice_index(shape, num_graphs):
    index = LatticeIndex.full(shape, num_graphs)
    assert index.is_full()
    assert index.density == 1.0
    assert index.ndim == len(shape)
    assert index.num_pixels == math.prod(shape)
    assert torch.equal(index.flat_index(), torch.arange(num_graphs * index.num_pixels))
    images = torch.randn(num_graphs, 2, *shape)
    x = images.reshape(num_graphs, 2, -1).transpose(1, 2).reshape(-1, 2)
    grid, mask = index.scatter(x)
    assert torch.equal(grid, images)
    assert bool((mask == 1).all())
    assert torch.equal(index.gather(images), x)


def test_is_full_is_false_for_subsets_and_other_orders():
    zeros = torch.zeros(15, dtype=torch.long)
    assert not LatticeIndex((4, 4), torch.arange(15), zeros, 1).is_full()
    pixel = torch.arange(16).flip(0)
    assert not LatticeIndex((4, 4), pixel, torch.zeros(16, dtype=torch.long), 1).is_full()


def test_lattice_index_rejects_mismatched_vectors():
    with pytest.raises(ValueError, match="equal length"):
        LatticeIndex((4,), torch.arange(3), torch.zeros(2, dtype=torch.long), 1)


@pytest.mark.parametrize("shape", [(12,), (6, 5), (4, 3, 5)])
def test_from_data_on_a_batch_of_image_graphs(shape):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, *shape, generator=gen) * 2 - 1
    transform = ImageToGraph(rate=3, generator=gen)
    batch = Batch.from_data_list([transform(image) for image in images])
    index = LatticeIndex.from_data(batch)
    assert index.shape == shape
    assert index.num_graphs == 3
    assert torch.equal(index.batch, batch.batch)
    assert torch.equal(index.gather(images), batch.x)
    assert torch.allclose(index.pos(), batch.pos)
    grid, mask = index.scatter(batch.x)
    assert torch.equal(grid, images * mask)
    # A single Data works too.
    single = LatticeIndex.from_data(transform(images[0]))
    assert single.num_graphs == 1 and single.shape == shape


def test_from_data_full_lattice_is_full():
    images = torch.zeros(2, 1, 4, 4)
    batch = Batch.from_data_list([ImageToGraph()(image) for image in images])
    assert LatticeIndex.from_data(batch).is_full()


def test_from_data_rejects_mixed_shapes():
    data = [ImageToGraph()(torch.zeros(1, 4, 4)), ImageToGraph()(torch.zeros(1, 4, 5))]
    with pytest.raises(ValueError, match="lattice shape"):
        LatticeIndex.from_data(Batch.from_data_list(data))


def test_memo_computes_once_per_owner_and_key():
    index = LatticeIndex.full((4, 4))
    edges, other = torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(3)

    first = index.memo("tap", edges, compute)
    assert index.memo("tap", edges, compute) is first and len(calls) == 1
    index.memo("tap", other, compute)  # another edge_index object: computed again
    index.memo("window", other, compute)  # another key
    assert len(calls) == 3
    assert "memo" not in repr(index)
