import pytest
import torch

from pyg_infdiff.data import (
    ContinuousShapes,
    GraphCollator,
    MollifiedCache,
    make_loader,
)
from pyg_infdiff.noise import GaussianMollifier

RES, RATE, ITEMS, BATCH = 32, 16, 6, 3

# Half an ulp of the storage type at |v| <= 1 (values of mollified shapes stay within about
# [-1, 1]; the tolerance allows a little overshoot).
BOUND = {torch.float32: 1e-6, torch.float16: 2.0**-11 * 1.1, torch.bfloat16: 2.0**-8 * 1.1,
         torch.uint8: 0.5 / 127.5 + 1e-6}


def shapes(seed: int = 0) -> ContinuousShapes:
    return ContinuousShapes(ITEMS, resolution=RES, seed=seed, supersample=2)


def batches(dataset, collator, seed: int = 0) -> list:
    return list(make_loader(dataset, collator, min(BATCH, len(dataset)), seed=seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
def test_same_nodes_and_values_as_render_and_mollify(dtype):
    mollifier = GaussianMollifier(0.5 / RES)
    full = batches(shapes(), GraphCollator(mollifier, rate=RATE, radius=0.2))
    cache = MollifiedCache(shapes(), mollifier, dtype=dtype)
    cached = batches(cache, GraphCollator(None, rate=RATE, radius=0.2))
    assert len(full) == len(cached) == ITEMS // BATCH
    for a, b in zip(full, cached, strict=True):
        assert torch.equal(a.pixel, b.pixel) and torch.equal(a.pos, b.pos)
        assert torch.equal(a.edge_index, b.edge_index)
        assert a.x.shape == b.x.shape == (BATCH * RES * RES // RATE, 3)
        err = (a.x - b.x).abs()
        bound = BOUND[dtype] * (a.x.abs() if dtype in (torch.float16, torch.bfloat16) else 1.0)
        assert (err <= bound + 1e-7).all(), err.max().item()


def test_values_are_the_mollified_renders():
    mollifier = GaussianMollifier(0.5 / RES)
    cache = MollifiedCache(shapes(), mollifier, dtype=torch.float32, chunk_size=4)
    dataset = shapes()
    expected = mollifier.apply(torch.stack([dataset[i] for i in range(ITEMS)]), 2)
    torch.testing.assert_close(cache.take(range(ITEMS)), expected, rtol=0, atol=1e-6)
    assert cache.shape == (3, RES, RES) and len(cache) == ITEMS
    assert cache.nbytes == ITEMS * 3 * RES * RES * 4


def test_deterministic_per_seed():
    mollifier = GaussianMollifier(0.5 / RES)
    collator = GraphCollator(None, rate=RATE)
    one = MollifiedCache(shapes(seed=1), mollifier)
    two = MollifiedCache(shapes(seed=1), mollifier, num_workers=0, chunk_size=1)
    assert torch.equal(one.images, two.images)
    for a, b in zip(batches(one, collator, 3), batches(two, collator, 3), strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.pixel, b.pixel)
    other = MollifiedCache(shapes(seed=2), mollifier)
    assert not torch.equal(one.images, other.images)
    a, b = batches(one, collator, 3)[0], batches(one, collator, 4)[0]
    assert not torch.equal(a.pixel, b.pixel)


def test_labels_subset_and_plain_storage():
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    items = [(img, i % 2) for i, img in enumerate(images)]
    cache = MollifiedCache(items, num_items=4, dtype=torch.float32)
    assert len(cache) == 4
    image, label = cache[3]
    assert torch.equal(image, images[3]) and label == 1
    batch = GraphCollator(None, rate=2)([cache[0], cache[1]], generator=torch.Generator())
    assert batch.y.tolist() == [0, 1]


def test_path_saves_and_reloads(tmp_path):
    mollifier = GaussianMollifier(0.5 / RES)
    path = tmp_path / "cache.pt"
    built = MollifiedCache(shapes(), mollifier, path=path)
    assert path.exists() and not built.loaded
    again = MollifiedCache(shapes(), mollifier, path=path)
    assert again.loaded and again.build_seconds == 0.0
    assert torch.equal(built.images, again.images)
    other = MollifiedCache(shapes(seed=5), mollifier, path=path)  # another cache: rebuilt
    assert not other.loaded and not torch.equal(other.images, built.images)


def test_uint8_clips_and_rounds():
    images = torch.tensor([[[[-1.5, -1.0, 0.0, 0.3, 1.0, 2.0]]]])
    cache = MollifiedCache(list(images), dtype=torch.uint8)
    out = cache[0].view(-1)
    assert out[0] == -1 and out[1] == -1 and out[-1] == 1 and out[-2] == 1
    assert (out[2:4] - images.view(-1)[2:4]).abs().max() <= 0.5 / 127.5 + 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_items"):
        MollifiedCache(shapes(), num_items=ITEMS + 1)
    with pytest.raises(ValueError, match="dtype"):
        MollifiedCache(shapes(), dtype=torch.int16)
    with pytest.raises(ValueError, match="mollifier"):
        MollifiedCache(shapes(), mollifier=object())
    with pytest.raises(ValueError, match="one shape"):
        MollifiedCache([torch.zeros(1, 4, 4), torch.zeros(1, 5, 5)])
    with pytest.raises(ValueError, match="float images"):
        MollifiedCache([torch.zeros(4, 4, dtype=torch.long)])


def test_repr():
    cache = MollifiedCache(shapes(), GaussianMollifier(0.25), num_items=2)
    assert repr(cache) == ("MollifiedCache(2 items of 3x32x32, float16, "
                           "mollifier=GaussianMollifier(sigma=0.25, cutoff=1e-08))")


def test_high_resolution_sparse_nodes():
    # the case: nodes of 128² renders at 16x subsampling, mollifier half a 128² pixel
    mollifier = GaussianMollifier(0.5 / 128)
    dataset = ContinuousShapes(2, resolution=128, seed=3)
    full = batches(dataset, GraphCollator(mollifier, rate=16))[0]
    cached = batches(MollifiedCache(dataset, mollifier), GraphCollator(None, rate=16))[0]
    assert torch.equal(full.pixel, cached.pixel) and full.x.size(0) == 2 * 1024
    assert ((full.x - cached.x).abs() <= BOUND[torch.float16] * full.x.abs() + 1e-7).all()
