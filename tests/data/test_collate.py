import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset

from pyg_infdiff.data import (
    ContinuousShapes,
    GraphCollator,
    SeededBatchSampler,
    batch_generator,
    make_loader,
)
from pyg_infdiff.graph import LatticeIndex, pixel_to_pos
from pyg_infdiff.noise import GaussianMollifier


def images(num: int = 4, shape=(16, 16), channels: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.rand(num, channels, *shape, generator=g) * 2 - 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batch_layout_and_values_are_the_mollified_images_at_the_nodes():
    imgs = images()
    mollifier = GaussianMollifier(0.03)
    batch = GraphCollator(mollifier, rate=4)(imgs, generator=gen())
    assert batch.num_graphs == 4 and batch.x.shape == (256, 3) and batch.pos.shape == (256, 2)
    assert batch.pixel.shape == (256,) and batch.lattice_shape.tolist() == [[16, 16]] * 4
    assert torch.equal(batch.batch, torch.arange(4).repeat_interleave(64))
    smooth = mollifier.apply(torch.stack(imgs), 2)
    index = LatticeIndex.from_data(batch)
    torch.testing.assert_close(batch.x, index.gather(smooth))
    for b in range(4):
        pixel = batch.pixel[batch.batch == b]
        assert torch.equal(pixel, pixel.unique())  # sorted, no duplicates
        assert torch.equal(batch.pos[batch.batch == b], pixel_to_pos(pixel, (16, 16)))
        expected = mollifier.apply(imgs[b], 2).reshape(3, -1)[:, pixel].t()
        torch.testing.assert_close(batch.x[batch.batch == b], expected)


def test_mollifier_gets_the_lattice_dimension():
    calls = []

    class Negate:
        def apply(self, x, ndim):
            calls.append((tuple(x.shape), ndim))
            return -x

    imgs = images(3, shape=(5, 6, 7), channels=2)
    batch = GraphCollator(Negate(), num=20)(imgs, generator=gen())
    assert calls == [((3, 2, 5, 6, 7), 3)]
    assert batch.x.shape == (60, 2) and batch.pos.shape == (60, 3)
    torch.testing.assert_close(batch.x, -LatticeIndex.from_data(batch).gather(torch.stack(imgs)))
    mixed = [images(1, (8,))[0], images(1, (12,))[0]]  # 1-D signals of two lengths
    batch = GraphCollator(Negate(), rate=2)(mixed, generator=gen())
    assert calls[-2:] == [((3, 8), 1), ((3, 12), 1)]
    assert batch.lattice_shape.tolist() == [[8], [12]] and batch.num_nodes == 10


@pytest.mark.parametrize(
    ("kwargs", "nodes"),
    [({}, 256), ({"rate": 1.0}, 256), ({"rate": 3}, math.ceil(256 / 3)), ({"num": 10}, 10)],
)
def test_rates(kwargs, nodes):
    batch = GraphCollator(**kwargs)(images(2), generator=gen())
    assert batch.num_nodes == 2 * nodes
    if nodes == 256:  # the full lattice, in row-major order
        assert LatticeIndex.from_data(batch).is_full()
        assert torch.equal(batch.x[:256], images(2)[0].reshape(3, -1).t())


@pytest.mark.parametrize("method", ["uniform", "halton", "stratified"])
def test_determinism(method):
    collator = GraphCollator(GaussianMollifier(0.02), rate=4, method=method)
    a, b = collator(images(), generator=gen(1)), collator(images(), generator=gen(1))
    assert torch.equal(a.pixel, b.pixel) and torch.equal(a.x, b.x)
    c = collator(images(), generator=gen(2))
    assert not torch.equal(a.pixel, c.pixel)
    stateful = GraphCollator(rate=4, method=method, generator=gen(1))
    assert torch.equal(stateful(images()).pixel, a.pixel)


def test_labels():
    imgs = images(3)
    batch = GraphCollator(rate=4)([(im, i + 5) for i, im in enumerate(imgs)], generator=gen())
    assert batch.y.tolist() == [5, 6, 7]
    vec = GraphCollator(rate=4)([(im, torch.tensor([1.0, 2.0])) for im in imgs], generator=gen())
    assert vec.y.shape == (3, 2)
    with pytest.raises(ValueError, match="label"):
        GraphCollator()([(imgs[0], 1), imgs[1]])


def test_radius_edges():
    pytest.importorskip("torch_cluster")
    batch = GraphCollator(rate=2, radius=0.15)(images(2), generator=gen())
    src, dst = batch.edge_index
    assert torch.equal(batch.batch[src], batch.batch[dst])
    assert ((batch.pos[src] - batch.pos[dst]).norm(dim=-1) < 0.15).all()
    assert (src == dst).sum() == batch.num_nodes  # self-loops


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 2, "num": 3}, "at most one"),
        ({"rate": 0.5}, "rate"),
        ({"num": 0}, "num"),
        ({"method": "sobol"}, "method"),
        ({"radius": 0.0}, "radius"),
        ({"mollifier": object()}, "apply"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraphCollator(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        GraphCollator()([])
    with pytest.raises(ValueError, match="float"):
        GraphCollator()([torch.zeros(3, 4, 4, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="float"):
        GraphCollator()([torch.zeros(4)])


def test_seeded_batch_sampler():
    sampler = SeededBatchSampler(10, 3, seed=4)
    epochs = [list(sampler) for _ in range(2)]
    for e, batches in enumerate(epochs):
        assert [len(b) for b in batches] == [3, 3, 3, 1] and len(sampler) == 4
        assert sorted(i for b in batches for _, _, i in b) == list(range(10))
        assert all(key[:2] == (e, k) for k, b in enumerate(batches) for key in b)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]
    ordered = SeededBatchSampler(10, 3, shuffle=False, drop_last=True)
    assert [[i for _, _, i in b] for b in ordered] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert batch_generator(1, 2, 3).initial_seed() == batch_generator(1, 2, 3).initial_seed()
    with pytest.raises(ValueError, match="batch_size"):
        SeededBatchSampler(10, 0)


@settings(max_examples=60, deadline=None)
@given(num_items=st.integers(1, 40), batch_size=st.integers(1, 7),
       replicas=st.integers(1, 4), drop_last=st.booleans(), shuffle=st.booleans())
def test_seeded_batch_sampler_shards(num_items, batch_size, replicas, drop_last, shuffle):
    # The processes of a distributed run read disjoint shares of one permutation; their batch b
    # together is batch b of one process with replicas x the batch size.
    shards = [list(SeededBatchSampler(num_items, batch_size, shuffle=shuffle,
                                      drop_last=drop_last, seed=3, num_replicas=replicas,
                                      rank=r)) for r in range(replicas)]
    single = list(SeededBatchSampler(num_items, batch_size * replicas, shuffle=shuffle,
                                     drop_last=drop_last, seed=3))
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1 and lengths == {len(SeededBatchSampler(
        num_items, batch_size, drop_last=drop_last, num_replicas=replicas, rank=0))}
    for b in range(lengths.pop()):
        sizes = {len(s[b]) for s in shards}
        assert len(sizes) == 1  # every process steps with a batch of the same size
        keys = [key[1] for s in shards for key in s[b]]
        assert set(keys) == {b * replicas + r for r in range(replicas)}
        together = sorted(i for s in shards for _, _, i in s[b])
        if drop_last:
            assert together == sorted(i for _, _, i in single[b])
    seen = [i for s in shards for batch in s for _, _, i in batch]
    if drop_last:
        assert len(seen) == len(set(seen))  # disjoint
    else:
        assert set(seen) == set(range(num_items))  # all, padded by wrapping around
        assert len(seen) - num_items < replicas


def test_seeded_batch_sampler_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        SeededBatchSampler(10, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        SeededBatchSampler(10, 2, num_replicas=0)


def as_tuples(batch):
    return batch.pixel, batch.x, batch.y, batch.batch


def test_loader_same_batches_with_0_and_2_workers():
    dataset = ContinuousShapes(10, 16, seed=3)
    labelled = [(dataset[i], i) for i in range(len(dataset))]
    collator = GraphCollator(GaussianMollifier(0.02), rate=4, method="halton")
    runs = {}
    for workers in (0, 2):
        loader = make_loader(labelled, collator, 4, shuffle=True, seed=7, num_workers=workers)
        assert len(loader) == 3
        runs[workers] = [[as_tuples(b) for b in loader] for _ in range(2)]  # two epochs
    for epoch_a, epoch_b in zip(runs[0], runs[2], strict=True):
        for a, b in zip(epoch_a, epoch_b, strict=True):
            assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(runs[0][0][0][2], runs[0][1][0][2])  # a new order each epoch
    other = make_loader(labelled, collator, 4, seed=8)
    assert not torch.equal(next(iter(other)).pixel, runs[0][0][0][0])


class EpochDataset(Dataset):
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.full((1, 2, 2), float(self.epoch))


def test_loader_sets_the_dataset_epoch_in_workers():
    loader = make_loader(EpochDataset(), GraphCollator(), 2, num_workers=2)
    assert [b.x.unique().tolist() for _ in range(2) for b in loader] == [[0.0]] * 2 + [[1.0]] * 2
