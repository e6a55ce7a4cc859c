r"""A finite set of images rendered (or read) once, mollified once and stored compactly, for
training on sparse nodes of high-resolution images at the cost of the nodes alone."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pyg_infdiff.data.collate import Mollifier

#: The storage types of :class:`MollifiedCache`.
CACHE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16,
                                         torch.uint8)


def _encode(x: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.uint8:  # [-1, 1] -> {0, ..., 255}
        return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    return x.to(dtype)


def _decode(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x.float()


def _split(item: Any) -> tuple[Tensor, Any]:
    if isinstance(item, tuple | list):
        return item[0], item[1]
    return item, None


class MollifiedCache(Dataset):
    r"""The first :obj:`num_items` images of a dataset, mollified once and kept in memory in a
    compact type, so that training on sparse nodes of high-resolution images (∞-Diff,
    `"Infinite Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_) does not pay for rendering and mollifying every full
    lattice at every step.

    Each item is :math:`T x_0` on its full lattice, exactly what
    :meth:`GraphCollator.mollify <pyg_infdiff.data.GraphCollator.mollify>` computes, up to the
    rounding of the storage type: collate it with ``GraphCollator(None, rate=...)`` (no second
    mollifier) and the nodes carry the same values as the uncached path
    ``GraphCollator(mollifier, rate=...)`` on the original dataset.

    .. math::
        \text{item}_i = Q\big(T x_0^{(i)}\big), \qquad
        |Q(v) - v| \le \begin{cases} 2^{-11} |v| & \text{float16} \\
        2^{-8} |v| & \text{bfloat16} \\ 1 / 255 & \text{uint8 (on } [-1, 1]) \end{cases}

    The cache is finite: it suits datasets that are a function of infinite resolution, such as
    :class:`~pyg_infdiff.data.ContinuousShapes` (render :math:`N` items at any resolution once),
    or small ones; random transforms drawn per epoch (the flips of
    :class:`~pyg_infdiff.data.ImageFolder`) are frozen at their first draw.

    Memory: :math:`N C H W` bytes times 4 (float32), 2 (float16, bfloat16) or 1 (uint8); 2,048
    RGB items of :math:`128^2` take 192 MiB in float16. The one-time cost is one pass over the
    items (``build_seconds``); measured in ``docs/benchmarks.md`` (``bench/data.py``).

    .. code-block:: python

        from pyg_infdiff.data import ContinuousShapes, GraphCollator, MollifiedCache, make_loader
        from pyg_infdiff.noise import GaussianMollifier

        # train at resolution 128 with rate 16: mollifier width half a 128² pixel
        mollifier = GaussianMollifier(0.5 / 128)
        cache = MollifiedCache(ContinuousShapes(64, resolution=128), mollifier)
        loader = make_loader(cache, GraphCollator(None, rate=16), batch_size=16)
        batch = next(iter(loader))              # 16 graphs of 1,024 nodes

    Args:
        dataset (torch.utils.data.Dataset): A map-style dataset of images :math:`(C, *)` or of
            ``(image, label)``, all of one shape.
        mollifier (Mollifier, optional): Applied once, as ``mollifier.apply(images, d)``;
            :obj:`None` stores the images as they are. (default: :obj:`None`)
        num_items (int, optional): Keep the items :math:`0, \dots, N - 1`; all of them if
            :obj:`None`. (default: :obj:`None`)
        dtype (torch.dtype, optional): The storage type, one of :obj:`CACHE_DTYPES`;
            :obj:`torch.uint8` maps :math:`[-1, 1]` to :math:`0, \dots, 255` (values outside are
            clipped). (default: :obj:`torch.float16`)
        chunk_size (int, optional): Items mollified at once while building.
            (default: :obj:`64`)
        num_workers (int, optional): :class:`~torch.utils.data.DataLoader` processes that read
            (render) the items while building. (default: :obj:`0`)
        path (str or Path, optional): A file to load the cache from when it holds the same
            cache (same dataset ``repr``, mollifier, items and type), and to save it to after
            building otherwise. (default: :obj:`None`)
        verbose (bool, optional): Print what is built and what it cost. (default: :obj:`False`)

    Shapes:
        - **output:** :math:`(C, *)` float32, or ``(image, label)`` when the dataset's items
          are pairs.
    """

    def __init__(
        self,
        dataset: Dataset,
        mollifier: Mollifier | None = None,
        num_items: int | None = None,
        *,
        dtype: torch.dtype = torch.float16,
        chunk_size: int = 64,
        num_workers: int = 0,
        path: str | Path | None = None,
        verbose: bool = False,
    ) -> None:
        total = len(dataset)  # type: ignore[arg-type]
        num_items = total if num_items is None else num_items
        if int(num_items) != num_items or not 0 < num_items <= total:
            raise ValueError(f"'num_items' must be an int in [1, {total}], got {num_items}")
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"'dtype' must be one of {CACHE_DTYPES}, got {dtype}")
        if mollifier is not None and not callable(getattr(mollifier, "apply", None)):
            raise ValueError(f"'mollifier' needs an apply(x, ndim) method, got {mollifier!r}")
        if int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"'chunk_size' must be a positive int, got {chunk_size}")
        self.mollifier = mollifier
        self.num_items = int(num_items)
        self.dtype = dtype
        self.key = {"dataset": repr(dataset), "mollifier": repr(mollifier),
                    "num_items": self.num_items, "dtype": str(dtype)}
        self.labels: list[Any] | None = None
        self.build_seconds = 0.0
        self.loaded = False
        stored = self._load(Path(path)) if path is not None else None
        if stored is not None:
            self.images, self.labels = stored["images"], stored["labels"]
            self.loaded = True
        else:
            start = time.perf_counter()
            self.images = self._build(dataset, int(chunk_size), int(num_workers))
            self.build_seconds = time.perf_counter() - start
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                torch.save({"key": self.key, "images": self.images, "labels": self.labels},
                           path)
        if verbose:
            how = f"loaded from {path}" if self.loaded else f"built in {self.build_seconds:.1f} s"
            print(f"{self!r}: {self.nbytes / 2**20:.1f} MiB, {how}", flush=True)

    def _load(self, path: Path) -> dict | None:
        if not path.exists():
            return None
        stored = torch.load(path, weights_only=True)
        return stored if stored.get("key") == self.key else None

    def _build(self, dataset: Dataset, chunk_size: int, num_workers: int) -> Tensor:
        indices = range(self.num_items)
        loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=chunk_size,
                            num_workers=num_workers, collate_fn=list)
        images: Tensor | None = None
        labels: list[Any] = []
        start = 0
        for items in loader:
            pairs = [_split(item) for item in items]
            chunk = [p[0] for p in pairs]
            if any(not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2
                   for x in chunk):
                raise ValueError("Expected float images of shape [C, n_1, ..., n_d]")
            try:
                chunk_t = torch.stack(chunk)
            except RuntimeError as err:
                raise ValueError(f"All images must have one shape to be cached: {err}") from None
            if self.mollifier is not None:
                chunk_t = self.mollifier.apply(chunk_t, chunk_t.dim() - 2)
            if images is None:
                images = torch.empty((self.num_items, *chunk_t.shape[1:]), dtype=self.dtype)
            elif chunk_t.shape[1:] != images.shape[1:]:
                raise ValueError(f"All images must have one shape to be cached, got "
                                 f"{tuple(images.shape[1:])} and {tuple(chunk_t.shape[1:])}")
            images[start : start + len(chunk)] = _encode(chunk_t, self.dtype)
            start += len(chunk)
            labels.extend(p[1] for p in pairs)
        if any(lb is None for lb in labels) and not all(lb is None for lb in labels):
            raise ValueError("Either every item or none must carry a label")
        self.labels = None if labels[0] is None else labels
        assert images is not None
        return images

    @property
    def shape(self) -> tuple[int, ...]:
        r"""The shape :math:`(C, *)` of one item."""
        return tuple(self.images.shape[1:])

    @property
    def nbytes(self) -> int:
        r"""The memory the stored images take, in bytes."""
        return self.images.numel() * self.images.element_size()

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Any]:
        image = _decode(self.images[index])
        return image if self.labels is None else (image, self.labels[index])

    def take(self, indices: Sequence[int] | Tensor) -> Tensor:
        r"""Several items as one float32 tensor :math:`(B, C, *)` (images only)."""
        return _decode(self.images[torch.as_tensor(indices, dtype=torch.long)])

    def __repr__(self) -> str:
        shape = "x".join(str(n) for n in self.shape)
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"{self.__class__.__name__}({self.num_items} items of {shape}, {dtype}, "
                f"mollifier={self.mollifier!r})")
