r"""Command line: real images vs generated images -> metrics as JSON.

.. code-block:: bash

    python -m pyg_infdiff.metrics --real fashion-mnist --fake samples.pt --metrics fid,kid,swd \
        --num 1000 --out metrics.json

``--real`` is an image folder or a named data set (``fashion-mnist``, ``mnist``, ``shapes``, read
through :mod:`pyg_infdiff.data`); ``--fake`` is an image folder or a ``.pt`` file holding a tensor
``[N, C, H, W]`` (float in :math:`[-1, 1]` or ``uint8``; a dict with an ``"images"`` or
``"samples"`` entry also works). Both sets are brought to one resolution (``--resolution``, or the
real images' size) with antialiased bicubic resizing; grey is repeated to RGB where the other set
has colour. The JSON goes to stdout (and to ``--out``); progress bars go to stderr. Inception
statistics of named data sets are cached (see :class:`~pyg_infdiff.metrics.StatisticsCache`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .fid import (
    StatisticsCache,
    compute_statistics,
    extract_features,
    fid_from_features,
    kernel_inception_distance,
)
from .inception import load_inception
from .swd import sliced_wasserstein_distance

#: The file suffixes :class:`FolderImages` reads (compared in lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: The datasets that ``--real`` / ``--fake`` may name instead of a path.
NAMED_DATASETS = ("fashion-mnist", "mnist", "shapes")
#: The metrics that ``--metrics`` may ask for.
METRICS = ("fid", "kid", "swd")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class FolderImages:
    r"""The images of a folder (recursive, sorted by path), read with PIL as ``uint8``.

    Images are grey (1 channel) when every file is grey, RGB (3 channels) otherwise.

    Args:
        root (str or pathlib.Path): The folder.
    """

    def __init__(self, root: str | Path) -> None:
        from PIL import Image

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image folder '{self.root}' does not exist")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise ValueError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under '{self.root}'"
            )
        grey = True
        for path in self.files:
            with Image.open(path) as img:  # reads the header only
                grey = grey and img.mode in _GREY_MODES
        self.mode = "L" if grey else "RGB"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        from PIL import Image

        with Image.open(self.files[index]) as img:
            array = torch.frombuffer(bytearray(img.convert(self.mode).tobytes()), dtype=torch.uint8)
            width, height = img.size
        return array.view(height, width, -1).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}('{self.root}', {len(self)} images, {self.mode})"


def _load_tensor_file(path: Path) -> Tensor:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict):
        keys = [k for k in ("images", "samples") if k in blob]
        if not keys:
            raise ValueError(f"'{path}' holds a dict without an 'images' or 'samples' entry")
        blob = blob[keys[0]]
    if not isinstance(blob, Tensor):
        raise ValueError(f"'{path}' must hold a tensor [N, C, H, W], got {type(blob).__name__}")
    if blob.dim() == 3:
        blob = blob.unsqueeze(1)
    if blob.dim() != 4 or blob.size(1) not in (1, 3):
        raise ValueError(f"'{path}' must hold images [N, 1 or 3, H, W], got {tuple(blob.shape)}")
    return blob


def _named_dataset(name: str, split: str, num: int | None, resolution: int | None,
                   root: str | None = None) -> Sequence:
    if name == "shapes" and num is None:
        raise ValueError("--real shapes generates images: give their number with --num")
    if name == "fashion-mnist" and split not in ("train", "test"):
        raise ValueError(f"--split must be 'train' or 'test' for fashion-mnist, got '{split}'")
    import pyg_infdiff.data as data  # lazily: only the CLI needs the data readers

    if name == "shapes":
        return data.ContinuousShapes(num_items=num, resolution=resolution or 32)
    if name == "fashion-mnist":
        return data.FashionMNIST(root=root, train=split == "train")
    return data.MNIST(root=root)  # the offline MNIST has one set of 10,000 digits


def open_images(spec: str, split: str = "test", num: int | None = None,
                resolution: int | None = None, root: str | None = None) -> Sequence:
    r"""Opens an image source: a folder, a ``.pt`` tensor file or a named data set.

    Args:
        spec (str): A folder, a ``.pt``/``.pth`` file, or one of ``fashion-mnist``, ``mnist``,
            ``shapes``.
        split (str, optional): The split of a named data set. (default: :obj:`"test"`)
        num (int, optional): Images wanted (``shapes`` generates exactly this many).
            (default: :obj:`None`)
        resolution (int, optional): Resolution for ``shapes``. (default: :obj:`None`, 32)
        root (str, optional): Data folder or file of ``fashion-mnist``/``mnist``, passed to
            :mod:`pyg_infdiff.data`. (default: :obj:`None`, their defaults)

    Returns:
        A sequence of images :math:`(C, H, W)`, ``uint8`` or float in :math:`[-1, 1]`.
    """
    if spec in NAMED_DATASETS:
        return _named_dataset(spec, split, num, resolution, root)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderImages(path)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return _load_tensor_file(path)
    raise FileNotFoundError(
        f"'{spec}' is neither an image folder, a .pt file, nor one of {', '.join(NAMED_DATASETS)}"
    )


def _item(source: Sequence, index: int) -> Tensor:
    item = source[index]
    if isinstance(item, tuple | list):  # (image, label) pairs
        item = item[0]
    if not isinstance(item, Tensor) or item.dim() not in (2, 3):
        raise ValueError(f"Expected image tensors [C, H, W], got {type(item).__name__}")
    return item if item.dim() == 3 else item.unsqueeze(0)


def _as_float(images: Tensor) -> Tensor:
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()


def iter_batches(source: Sequence, num: int, batch_size: int, channels: int,
                 size: tuple[int, int]) -> Iterator[Tensor]:
    r"""Yields float batches :math:`(B, C, H, W)` in :math:`[-1, 1]` of the first :obj:`num`
    images, grey repeated to :obj:`channels` and resized (antialiased bicubic) to :obj:`size`.
    """
    for start in range(0, num, batch_size):
        items = [_item(source, i) for i in range(start, min(start + batch_size, num))]
        out = []
        for img in items:
            if img.size(0) != channels:
                if img.size(0) != 1:
                    raise ValueError(f"Cannot turn a {img.size(0)}-channel image into {channels}")
                img = img.expand(channels, -1, -1)
            img = _as_float(img)[None]
            if tuple(img.shape[-2:]) != size:
                img = F.interpolate(img, size=size, mode="bicubic", antialias=True,
                                    align_corners=False).clamp(-1.0, 1.0)
            out.append(img)
        yield torch.cat(out)


def build_parser() -> argparse.ArgumentParser:
    r"""The argument parser of ``python -m pyg_infdiff.metrics``."""
    p = argparse.ArgumentParser(
        prog="python -m pyg_infdiff.metrics",
        description="Compare real and generated images: FID, KID (Inception, offline) and "
        "multi-scale sliced Wasserstein distance; prints JSON.",
    )
    p.add_argument("--real", required=True,
                   help=f"image folder or one of {', '.join(NAMED_DATASETS)}")
    p.add_argument("--fake", required=True, help="image folder or .pt file with [N, C, H, W]")
    p.add_argument("--metrics", default="fid,kid,swd", help="comma list of fid, kid, swd")
    p.add_argument("--num", type=int, default=None, help="use at most N images of each set")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--resolution", type=int, default=None,
                   help="common resolution (default: that of the real images)")
    p.add_argument("--weights", default=None, help="FID Inception TorchScript file")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--split", default="test", help="split of fashion-mnist (train or test)")
    p.add_argument("--data-root", default=None,
                   help="folder/file of fashion-mnist or mnist (default: pyg_infdiff.data's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of KID subsets and SWD")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--resize-mode", default="legacy_tf",
                   choices=("legacy_tf", "bilinear", "bicubic_aa"))
    p.add_argument("--fid-backend", default="torch", choices=("torch", "scipy"),
                   help="matrix square root: torch eigensolver or scipy.linalg.sqrtm")
    p.add_argument("--cache-dir", default=None, help="statistics cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not cache real statistics")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> dict:
    r"""Computes the metrics asked for by parsed arguments and returns the JSON-ready dict."""
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"--metrics must be a comma list of {', '.join(METRICS)}, got "
                         f"'{args.metrics}'")
    for flag in ("num", "batch_size", "resolution"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    start = time.perf_counter()
    progress = not args.no_progress
    real = open_images(args.real, args.split, args.num, args.resolution, args.data_root)
    fake = open_images(args.fake, args.split, args.num, args.resolution, args.data_root)
    n_real, n_fake = len(real), len(fake)
    if args.num is not None:
        n_real, n_fake = min(n_real, args.num), min(n_fake, args.num)
    if min(n_real, n_fake) < 2:
        raise ValueError(f"Need at least 2 images per set, got {n_real} real and {n_fake} fake")
    first_real, first_fake = _item(real, 0), _item(fake, 0)
    size = ((args.resolution, args.resolution) if args.resolution is not None
            else tuple(first_real.shape[-2:]))
    channels = max(first_real.size(0), first_fake.size(0))
    result: dict = {
        "real": args.real, "fake": args.fake, "num_real": n_real, "num_fake": n_fake,
        "resolution": list(size), "channels": channels,
    }

    def batches(source: Sequence, n: int) -> Iterator[Tensor]:
        return iter_batches(source, n, args.batch_size, channels, size)

    if "fid" in metrics or "kid" in metrics:
        model = load_inception(args.weights, device=args.device, resize_mode=args.resize_mode)
        sha1 = model.sha1

        def features(source: Sequence, n: int, desc: str) -> Tensor:
            return extract_features(model, batches(source, n), num=n, progress=progress,
                                    desc=desc)

        if args.real in NAMED_DATASETS and not args.no_cache:
            cache = StatisticsCache(args.cache_dir)
            name = f"{args.real}-{args.split}" if args.real == "fashion-mnist" else args.real
            variant = f"{args.resize_mode}-c{channels}-{size[0]}x{size[1]}"
            real_stats = cache.get_or_compute(
                lambda: features(real, n_real, "inception real"), name, size[0], n_real, sha1,
                variant)
        else:
            real_stats = compute_statistics(features(real, n_real, "inception real"))
        fake_stats = compute_statistics(features(fake, n_fake, "inception fake"))
        if "fid" in metrics:
            result["fid"] = fid_from_features(real_stats, fake_stats, backend=args.fid_backend)
        if "kid" in metrics:
            generator = torch.Generator().manual_seed(args.seed)
            mean, std = kernel_inception_distance(
                real_stats.features, fake_stats.features, args.kid_subsets,
                args.kid_subset_size, generator)
            result["kid_mean"], result["kid_std"] = mean, std
        result["weights"] = str(model.path)
        result["weights_sha1"] = sha1
        result["resize_mode"] = args.resize_mode
    if "swd" in metrics:
        n = min(n_real, n_fake)
        swd = sliced_wasserstein_distance(
            batches(real, n), batches(fake, n), generator=torch.Generator().manual_seed(args.seed),
            progress=progress)
        result["swd"] = swd.as_dict()
        result["swd_num_images"] = n
    result["seed"] = args.seed
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    r"""Entry point of ``python -m pyg_infdiff.metrics``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        Path(args.out).expanduser().write_text(text + "\n")
    return 0
