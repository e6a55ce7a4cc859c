import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features
from torch.utils.data import DataLoader

from pyg_infdiff.data import ImageFolder, SkippedImageWarning


def noise_image(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = len(mode)  # "RGB", "RGBA", "L"
    array = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if bands == 1 else array, mode)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    noise_image((40, 30), "RGB", 0).save(tmp_path / "img0.png")
    noise_image((30, 50), "RGB", 1).save(tmp_path / "a" / "img1.JPG", quality=90)
    noise_image((32, 32), "L", 2).save(tmp_path / "a" / "b" / "img2.png")
    noise_image((25, 25), "RGBA", 3).save(tmp_path / "a" / "b" / "img3.png")
    noise_image((20, 20), "RGB", 4).save(tmp_path / "a" / "img4.jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_lists_images_recursively_in_stable_order(folder):
    dataset = ImageFolder(folder, 16)
    names = [p.relative_to(folder).as_posix() for p in dataset.files]
    assert names == ["a/b/img2.png", "a/b/img3.png", "a/img1.JPG", "a/img4.jpeg", "img0.png"]
    assert len(dataset) == 5 and "5 files" in repr(dataset)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [16, (12, 20)])
def test_shapes_and_range(folder, channels, resolution):
    dataset = ImageFolder(folder, resolution, channels=channels)
    size = (resolution, resolution) if isinstance(resolution, int) else resolution
    for i in range(len(dataset)):
        image = dataset[i]
        assert image.shape == (channels, *size) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
    assert dataset.skipped == []


def test_center_crop_and_resize(tmp_path):
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, :, 2] = 255  # blue sides
    array[:, 20:40] = (255, 0, 0)  # a red centre square
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = ImageFolder(tmp_path, 8, flip=False)[0]
    expected = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, 8, 8)
    torch.testing.assert_close(image, expected)
    tall = ImageFolder(tmp_path, (4, 12), flip=False)[0]  # crops 60x20 to 60x20: whole image
    assert tall.shape == (3, 4, 12) and tall[2, :, 0].min() > 0.9 and tall[0, :, 6].min() > 0.9


def test_alpha_is_composited_over_black(tmp_path):
    Image.new("RGBA", (8, 8), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    assert torch.equal(ImageFolder(tmp_path, 4)[0], -torch.ones(3, 4, 4))


def test_flip_is_deterministic(folder):
    plain = ImageFolder(folder, 16, flip=False)
    a, b = ImageFolder(folder, 16, seed=5), ImageFolder(folder, 16, seed=5)
    flips = []
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            x, y, z = a[i], b[i], plain[i]
            assert torch.equal(x, y)
            assert torch.equal(x, z) or torch.equal(x, z.flip(-1))
            flips.append(not torch.equal(x, z))
    assert any(flips) and not all(flips)
    loader = DataLoader(ImageFolder(folder, 16, seed=5), batch_size=2, num_workers=2)
    a.set_epoch(0)
    assert torch.equal(torch.cat(list(loader)), torch.stack([a[i] for i in range(len(a))]))


def test_corrupt_files_are_skipped_and_reported(folder):
    good = (folder / "a" / "img1.JPG").read_bytes()
    (folder / "a" / "b" / "broken.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (folder / "fake.png").write_text("this is not a PNG")
    dataset = ImageFolder(folder, 16, flip=False)
    names = [p.name for p in dataset.files]
    assert names == ["broken.jpg", "img2.png", "img3.png", "img1.JPG", "img4.jpeg", "fake.png",
                     "img0.png"]  # fmt: skip
    with pytest.warns(SkippedImageWarning) as record:
        first = dataset[0]  # broken.jpg -> the next file
        last = dataset[5]  # fake.png -> img0.png
    assert torch.equal(first, dataset[1]) and torch.equal(last, dataset[6])
    assert sorted(p.name for p in dataset.skipped) == ["broken.jpg", "fake.png"]
    assert len(record) == 2 and "broken.jpg" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file only
        assert torch.equal(dataset[0], first)
    report = dataset.report()
    assert "skipped 2 of 7" in report and "fake.png" in report and "broken.jpg" in report
    fresh = ImageFolder(folder, 16)
    assert "read fine" in fresh.report()
    with pytest.warns(SkippedImageWarning):
        assert sorted(p.name for p in fresh.verify()) == ["broken.jpg", "fake.png"]


def test_all_files_unreadable_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 8)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="No images"):
        ImageFolder(tmp_path, 8)
    (tmp_path / "bad.png").write_text("x")
    dataset = ImageFolder(tmp_path, 8)
    with pytest.warns(SkippedImageWarning), pytest.raises(RuntimeError, match="readable"):
        dataset[0]


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp(tmp_path):
    noise_image((20, 24), "RGB", 0).save(tmp_path / "x.webp")
    assert ImageFolder(tmp_path, 8)[0].shape == (3, 8, 8)


def test_validation(folder):
    with pytest.raises(ValueError, match="resolution"):
        ImageFolder(folder, 0)
    with pytest.raises(ValueError, match="resolution"):
        ImageFolder(folder, (8, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(folder, 8, channels=4)
    with pytest.raises(IndexError):
        ImageFolder(folder, 8)[5]
    assert len(ImageFolder(folder, 8, extensions=("png",))) == 3
