"""The encoder subsets of GraphCollator (``encoder_rate``, issue 15): a second, independent
uniform subset of each image's pixels, read before the mollifier, replayed by make_loader."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.data import GraphCollator, make_loader
from pyg_infdiff.diffusion import encoder_inputs
from pyg_infdiff.graph import LatticeIndex, pixel_to_pos
from pyg_infdiff.noise import GaussianMollifier


def images(num: int = 3, shape=(12, 12), channels: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.rand(num, channels, *shape, generator=g) * 2 - 1)


def test_encoder_subset_layout_and_values():
    imgs = images()
    batch = GraphCollator(GaussianMollifier(0.05), rate=4, encoder_rate=3)(
        imgs, generator=torch.Generator().manual_seed(0))
    assert batch.enc_x.shape == (3 * 48, 2) and batch.enc_pos.shape == (3 * 48, 2)
    assert torch.equal(batch.enc_batch, torch.arange(3).repeat_interleave(48))
    assert batch.x.shape == (3 * 36, 2)  # the denoiser's nodes are unchanged in number
    for b, image in enumerate(imgs):
        enc = batch.enc_pixel[batch.enc_batch == b]
        assert torch.equal(enc, enc.unique())  # distinct, sorted pixels
        # the encoder reads the image as given (clean), not the mollified one
        torch.testing.assert_close(batch.enc_x[batch.enc_batch == b],
                                   image.reshape(2, -1)[:, enc].t())
        torch.testing.assert_close(batch.enc_pos[batch.enc_batch == b],
                                   pixel_to_pos(enc, (12, 12)))
        # a subset of its own: not the denoiser's nodes
        assert not torch.equal(enc[:36], batch.pixel[batch.batch == b])
    # the encoder's nodes index into the shared lattices
    inputs = encoder_inputs(batch)
    index = inputs["enc_lattice"]
    assert isinstance(index, LatticeIndex) and index.shape == (12, 12)
    assert index.num_graphs == 3 and not index.is_full()
    torch.testing.assert_close(index.gather(torch.stack(imgs)), batch.enc_x)


def test_encoder_rate_one_is_every_pixel_in_lattice_order():
    batch = GraphCollator(rate=4, encoder_rate=1)(images(2), generator=torch.Generator())
    assert torch.equal(batch.enc_pixel, torch.arange(144).repeat(2))
    assert encoder_inputs(batch)["enc_lattice"].is_full()


def test_without_encoder_rate_nothing_changes():
    plain = GraphCollator(rate=4)(images(), generator=torch.Generator().manual_seed(3))
    assert "enc_x" not in plain
    with pytest.raises(ValueError, match="encoder_rate"):
        encoder_inputs(plain)
    with pytest.raises(ValueError, match="encoder_rate"):
        GraphCollator(rate=4).encoder_nodes((4, 4), None)
    # the first image draws its denoiser nodes first, whatever follows
    both = GraphCollator(rate=4, encoder_rate=2)(images(), generator=torch.Generator()
                                                 .manual_seed(3))
    assert torch.equal(both.pixel[both.batch == 0], plain.pixel[plain.batch == 0])
    assert "encoder_rate=2" in repr(GraphCollator(rate=4, encoder_rate=2))


@pytest.mark.parametrize("bad", [0.5, 0.0, float("nan")])
def test_bad_encoder_rate(bad):
    with pytest.raises(ValueError, match="rate"):
        GraphCollator(rate=4, encoder_rate=bad)


def test_loader_replays_encoder_subsets():
    data = torch.rand(8, 1, 10, 10)
    collate = GraphCollator(rate=4, encoder_rate=4)
    first = list(make_loader(data, collate, batch_size=4, seed=5, num_replicas=1, rank=0))
    again = list(make_loader(data, collate, batch_size=4, seed=5, num_replicas=1, rank=0))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.enc_pixel, b.enc_pixel) and torch.equal(a.enc_x, b.enc_x)
    assert not torch.equal(first[0].enc_pixel, first[1].enc_pixel)


@settings(max_examples=15, deadline=None)
@given(side=st.integers(3, 16), rate=st.floats(1.0, 10.0), num=st.integers(1, 4),
       seed=st.integers(0, 2**31))
def test_encoder_subset_sizes(side, rate, num, seed):
    batch = GraphCollator(rate=2, encoder_rate=rate)(
        images(num, (side, side), 1, seed), generator=torch.Generator().manual_seed(seed))
    count = max(1, math.ceil(side * side / rate - 1e-9))  # as subsample_size
    assert batch.enc_x.size(0) == num * count
    assert torch.equal(torch.bincount(batch.enc_batch, minlength=num), torch.full((num,), count))
    assert int(batch.enc_pixel.max()) < side * side
