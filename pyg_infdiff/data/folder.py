r"""A dataset of image files in a folder tree (CelebA-HQ, FFHQ layouts) that survives bad files."""
from __future__ import annotations

import hashlib
import os
import struct
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

#: The file suffixes :class:`ImageFolder` reads by default (compared in lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")

# What Pillow raises on unreadable, truncated or corrupt files (UnidentifiedImageError is an
# OSError; some decoders raise SyntaxError, struct.error, EOFError or ValueError).
_READ_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class SkippedImageWarning(UserWarning):
    r"""Warned once per file that :class:`ImageFolder` cannot read and skips."""


def _flip_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"pyg_infdiff.folder:{seed}:{epoch}:{index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def center_crop_resize(
    image: Image.Image, size: tuple[int, int], resample: Image.Resampling
) -> Image.Image:
    r"""Crops the largest centred box of the aspect ratio of :obj:`size` (height, width), then
    resizes it to :obj:`size` (Pillow filters are anti-aliased when shrinking)."""
    height, width = size
    w, h = image.size
    if w * height > h * width:  # too wide
        crop_w, crop_h = round(h * width / height), h
    else:
        crop_w, crop_h = w, round(w * height / width)
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    # Crop first: resize(box=...) would let the filter read pixels outside the box.
    image = image.crop((left, top, left + crop_w, top + crop_h))
    return image.resize((width, height), resample)


class ImageFolder(Dataset):
    r"""Images found recursively under a folder (CelebA-HQ / FFHQ layouts), centre-cropped and
    resized to the training resolution, with an optional random horizontal flip.

    Files are sorted by their path relative to :obj:`root`, so indices are stable. The flip of
    item ``i`` is drawn from a :class:`torch.Generator` seeded by ``(seed, epoch, i)``, so it is
    the same in every process and :class:`~torch.utils.data.DataLoader` worker; call
    :meth:`set_epoch` to draw new flips each epoch (:func:`~pyg_infdiff.data.make_loader` does).

    A corrupt, truncated or unreadable file never stops training: the item is replaced by the next
    readable file (index ``i + 1``, ``i + 2``, … cyclically, so deterministic), the file is listed
    in :attr:`skipped`, and a :class:`SkippedImageWarning` is raised once per file. :meth:`report`
    summarises them. In DataLoader worker processes the list lives in the workers' copies (the
    warnings still reach the console); :meth:`verify` checks every file up front in this process.

    Alpha channels are composited over black. Pixel values map :math:`[0, 255] \to [-1, 1]`.

    Args:
        root (str or os.PathLike): The folder, searched recursively.
        resolution (int or Sequence[int]): The output side, or :math:`(H, W)`.
        channels (int, optional): 3 (RGB) or 1 (grey). (default: :obj:`3`)
        flip (bool, optional): Random horizontal flips with probability 0.5.
            (default: :obj:`True`)
        seed (int, optional): The seed of the flips. (default: :obj:`0`)
        extensions (Sequence[str], optional): File suffixes to include, case-insensitive.
            (default: :obj:`(".jpg", ".jpeg", ".png", ".webp")`)
        resample (PIL.Image.Resampling, optional): The resize filter.
            (default: :obj:`Image.Resampling.BICUBIC`)
        transform (Callable, optional): Applied to each image tensor. (default: :obj:`None`)

    Shapes:
        - **output:** :math:`(C, H, W)` float32 in :math:`[-1, 1]`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int | Sequence[int],
        *,
        channels: int = 3,
        flip: bool = True,
        seed: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        resample: Image.Resampling = Image.Resampling.BICUBIC,
        transform: Callable[[Tensor], object] | None = None,
    ) -> None:
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if len(size) != 2 or any(int(n) != n or n <= 0 for n in size):
            raise ValueError(f"'resolution' must be a positive int or (H, W), got {resolution}")
        if channels not in (1, 3):
            raise ValueError(f"'channels' must be 1 or 3, got {channels}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image folder '{self.root}' does not exist")
        suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        files = []
        for folder, _, names in os.walk(self.root, followlinks=True):
            files.extend(Path(folder, n) for n in names if n.lower().endswith(suffixes))
        if not files:
            raise FileNotFoundError(
                f"No images with extensions {suffixes} found (recursively) in '{self.root}'"
            )
        self.files: list[Path] = sorted(files, key=lambda p: p.relative_to(self.root).as_posix())
        self.size = (int(size[0]), int(size[1]))
        self.channels = channels
        self.flip = flip
        self.seed = int(seed)
        self.epoch = 0
        self.resample = resample
        self.transform = transform
        self.skipped: list[Path] = []
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        r"""Sets the epoch that, with :obj:`seed` and the index, draws each item's flip."""
        self.epoch = int(epoch)

    def load(self, index: int) -> Tensor:
        r"""Reads, crops and resizes file :obj:`index` without flip or transform; raises what
        Pillow raises on a bad file."""
        with Image.open(self.files[index]) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            img = img.convert("RGB" if self.channels == 3 else "L")
        img = center_crop_resize(img, self.size, self.resample)
        array = np.asarray(img, dtype=np.uint8).reshape(self.size[0], self.size[1], -1)
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float()
        return image / 127.5 - 1.0

    def _skip(self, index: int, error: BaseException) -> None:
        self._bad.add(index)
        self.skipped.append(self.files[index])
        warnings.warn(
            f"Skipping unreadable image '{self.files[index]}' ({type(error).__name__}: {error})",
            SkippedImageWarning,
            stacklevel=3,
        )

    def _read(self, index: int) -> tuple[int, Tensor]:
        r"""The first readable file at or after :obj:`index` (cyclically), and its tensor."""
        for step in range(len(self.files)):
            i = (index + step) % len(self.files)
            if i in self._bad:
                continue
            try:
                return i, self.load(i)
            except _READ_ERRORS as error:
                self._skip(i, error)
        raise RuntimeError(f"None of the {len(self.files)} files in '{self.root}' is readable")

    def __getitem__(self, index: int) -> Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = int(index) % len(self)
        _, image = self._read(index)
        if self.flip:
            generator = torch.Generator().manual_seed(_flip_seed(self.seed, self.epoch, index))
            if torch.rand((), generator=generator) < 0.5:
                image = image.flip(-1)
        return image if self.transform is None else self.transform(image)

    def verify(self) -> list[Path]:
        r"""Opens every file once (slow on big folders), records the unreadable ones and returns
        :attr:`skipped`."""
        for i in range(len(self.files)):
            if i in self._bad:
                continue
            try:
                with Image.open(self.files[i]) as img:
                    img.load()
            except _READ_ERRORS as error:
                self._skip(i, error)
        return self.skipped

    def report(self) -> str:
        r"""A one-paragraph summary: how many files were skipped, and which."""
        if not self.skipped:
            return f"{self.__class__.__name__}: all {len(self)} files read fine so far"
        names = "\n".join(f"  {p}" for p in self.skipped)
        return (
            f"{self.__class__.__name__}: skipped {len(self.skipped)} of {len(self)} files "
            f"in '{self.root}':\n{names}"
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}('{self.root}', {len(self)} files, "
            f"resolution={self.size}, channels={self.channels})"
        )
