r"""Collation of images into batches of subsampled, mollified point-cloud graphs, and data loaders
whose batches are reproducible whatever the number of worker processes."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torch_geometric.data import Batch, Data

from pyg_infdiff._dist import get_rank, get_world_size
from pyg_infdiff.graph import pixel_to_pos, radius_graph, subsample
from pyg_infdiff.graph.subsample import SubsampleMethod, check_subsample_options


class Mollifier(Protocol):
    r"""Anything with ``apply(x, ndim)`` smoothing the last :obj:`ndim` axes, such as
    :class:`pyg_infdiff.noise.GaussianMollifier`."""

    def apply(self, x: Tensor, ndim: int) -> Tensor: ...


def _mix(*values: int) -> int:
    text = ":".join(str(int(v)) for v in values)
    digest = hashlib.blake2b(f"pyg_infdiff.collate:{text}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def batch_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    r"""The :class:`torch.Generator` of one batch, seeded by a stable hash of
    ``(seed, epoch, batch_index)``: the same in every process and worker."""
    return torch.Generator().manual_seed(_mix(seed, epoch, batch_index))


class GraphCollator:
    r"""Collates images into a :class:`~torch_geometric.data.Batch` of point-cloud graphs, the
    training states of ∞-Diff (`"Infinite Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_).

    Each image :math:`x_0` is mollified on its full lattice, :math:`T x_0`, then read at a random
    subset of its pixels (the nodes). Per graph the batch holds ``x`` (:math:`T x_0` at the nodes),
    ``pos`` (pixel centres in :math:`[0, 1]^d`), ``pixel`` (flat row-major indices),
    ``lattice_shape`` (:math:`(1, d)`, as :meth:`pyg_infdiff.graph.LatticeIndex.from_data`
    expects), ``edge_index`` with :obj:`radius`, and ``y`` when items are ``(image, label)``.

    **Encoder subsets** (:obj:`encoder_rate`, for training a
    :class:`~pyg_infdiff.models.DiffusionAutoencoder`): each graph also gets a second,
    independent uniform random subset of its image's pixels, the nodes its encoder reads, as in
    the official ∞-Diff training code (there: a fresh uniform subset per image, as many pixels
    as the denoiser's, a quarter of the image; here drawn after the denoiser's). The encoder
    reads the image *as given*, before the mollifier (the official encoder reads the clean
    image; an already-mollified cache such as :class:`~pyg_infdiff.data.MollifiedCache` gives
    mollified values). The batch then holds ``enc_x`` (values), ``enc_pos`` (pixel centres),
    ``enc_pixel`` (flat indices) and ``enc_batch`` (graph index of each encoder node,
    collated by PyG's rule for keys containing ``"batch"``), all drawn from the same
    generator, so that :func:`make_loader` replays them exactly.

    Args:
        mollifier (Mollifier, optional): Applied as ``mollifier.apply(images, d)``, e.g.
            :class:`pyg_infdiff.noise.GaussianMollifier`; :obj:`None` keeps the images as they
            are. (default: :obj:`None`)
        rate (float, optional): Keep :math:`\lceil P / \text{rate} \rceil` of the :math:`P`
            pixels (``rate=4``: a quarter). (default: :obj:`None`)
        num (int, optional): Keep this many pixels per image. Without :obj:`rate` and
            :obj:`num` every pixel is a node, in row-major order. (default: :obj:`None`)
        method (str, optional): The subsampler, :obj:`"uniform"`, :obj:`"halton"` or
            :obj:`"stratified"` (see :func:`pyg_infdiff.graph.subsample`).
            (default: :obj:`"uniform"`)
        radius (float, optional): If set, adds radius edges within each graph (domain units).
            (default: :obj:`None`)
        loop (bool, optional): Whether the radius graph has self-loops. (default: :obj:`True`)
        max_num_neighbors (int, optional): Passed to :func:`pyg_infdiff.graph.radius_graph`
            (:obj:`None`: nothing dropped). (default: :obj:`None`)
        generator (torch.Generator, optional): Used when a call gets no generator (stateful, so
            reproducible only in one process); :func:`make_loader` passes a per-batch generator
            instead. (default: :obj:`None`)
        encoder_rate (float, optional): If set, adds an encoder subset of
            :math:`\lceil P / \text{encoder\_rate} \rceil` uniform random pixels per image,
            sorted (``1``: every pixel, in row-major order). (default: :obj:`None`)

    Shapes:
        - **input:** a list of images :math:`(C, n_1, \dots, n_d)` or of ``(image, label)``.
        - **output:** :class:`~torch_geometric.data.Batch` with ``x`` :math:`(N, C)`, ``pos``
          :math:`(N, d)`, ``pixel`` :math:`(N,)`, ``lattice_shape`` :math:`(B, d)`, ``batch``
          :math:`(N,)`, optional ``edge_index`` :math:`(2, E)` and ``y`` :math:`(B, \dots)`;
          with :obj:`encoder_rate`, ``enc_x`` :math:`(M, C)`, ``enc_pos`` :math:`(M, d)`,
          ``enc_pixel`` :math:`(M,)` and ``enc_batch`` :math:`(M,)`.
    """

    def __init__(
        self,
        mollifier: Mollifier | None = None,
        *,
        rate: float | None = None,
        num: int | None = None,
        method: SubsampleMethod = "uniform",
        radius: float | None = None,
        loop: bool = True,
        max_num_neighbors: int | None = None,
        generator: torch.Generator | None = None,
        encoder_rate: float | None = None,
    ) -> None:
        check_subsample_options(rate, num, method, radius)
        if encoder_rate is not None:
            check_subsample_options(encoder_rate, None, "uniform")
        if mollifier is not None and not callable(getattr(mollifier, "apply", None)):
            raise ValueError(f"'mollifier' needs an apply(x, ndim) method, got {mollifier!r}")
        self.mollifier = mollifier
        self.rate = rate
        self.num = num
        self.method = method
        self.radius = radius
        self.loop = loop
        self.max_num_neighbors = max_num_neighbors
        self.generator = generator
        self.encoder_rate = encoder_rate

    def mollify(self, images: Sequence[Tensor]) -> list[Tensor]:
        r"""Mollifies each image on its full lattice (in one call when the shapes agree)."""
        if self.mollifier is None:
            return list(images)
        shapes = {tuple(img.shape) for img in images}
        if len(shapes) == 1:
            ndim = images[0].dim() - 1
            return list(self.mollifier.apply(torch.stack(list(images)), ndim).unbind(0))
        return [self.mollifier.apply(img, img.dim() - 1) for img in images]

    def nodes(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        r"""The flat pixel indices of one graph's nodes."""
        if self.rate is None and self.num is None:
            return torch.arange(torch.Size(shape).numel())
        return subsample(
            shape, rate=self.rate, num=self.num, method=self.method, generator=generator
        )

    def encoder_nodes(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        r"""The flat pixel indices of one graph's encoder subset (see :obj:`encoder_rate`)."""
        if self.encoder_rate is None:
            raise ValueError("This collator has no encoder subset: pass 'encoder_rate'")
        return subsample(shape, rate=self.encoder_rate, method="uniform", generator=generator)

    def __call__(self, items: Sequence[Any], generator: torch.Generator | None = None) -> Batch:
        if len(items) == 0:
            raise ValueError("Cannot collate an empty list of items")
        generator = self.generator if generator is None else generator
        images, labels = [], []
        for item in items:
            image, label = (item[0], item[1]) if isinstance(item, tuple | list) else (item, None)
            if not isinstance(image, Tensor) or image.dim() < 2 or not image.is_floating_point():
                desc = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(f"Expected float images of shape [C, n_1, ..., n_d], got {desc}")
            images.append(image)
            labels.append(label)
        if any(lb is None for lb in labels) and not all(lb is None for lb in labels):
            raise ValueError("Either every item or none must carry a label")
        data_list = []
        for image, smooth, label in zip(images, self.mollify(images), labels, strict=True):
            shape = tuple(image.shape[1:])
            pixel = self.nodes(shape, generator).to(image.device)
            data = Data(
                x=smooth.reshape(image.size(0), -1)[:, pixel].t().contiguous(),
                pos=pixel_to_pos(pixel, shape, dtype=image.dtype),
                pixel=pixel,
                lattice_shape=torch.tensor([shape], dtype=torch.long, device=image.device),
            )
            if self.encoder_rate is not None:  # drawn after the denoiser's nodes
                enc = self.encoder_nodes(shape, generator).to(image.device)
                data.enc_x = image.reshape(image.size(0), -1)[:, enc].t().contiguous()
                data.enc_pos = pixel_to_pos(enc, shape, dtype=image.dtype)
                data.enc_pixel = enc
                data.enc_batch = torch.zeros_like(enc)  # PyG offsets "batch" keys per graph
            if self.radius is not None:
                data.edge_index = radius_graph(
                    data.pos, self.radius, loop=self.loop, max_num_neighbors=self.max_num_neighbors
                )
            if label is not None:
                y = torch.as_tensor(label)
                data.y = y.view(1) if y.dim() == 0 else y.unsqueeze(0)
            data_list.append(data)
        return Batch.from_data_list(data_list)

    def __repr__(self) -> str:
        size = f"rate={self.rate}" if self.rate is not None else f"num={self.num}"
        encoder = "" if self.encoder_rate is None else f", encoder_rate={self.encoder_rate}"
        return (
            f"{self.__class__.__name__}({self.mollifier!r}, {size}, method={self.method!r}, "
            f"radius={self.radius}{encoder})"
        )


class SeededBatchSampler(Sampler[list[tuple[int, int, int]]]):
    r"""Batches of dataset indices, each index tagged with ``(epoch, batch_index)`` so that the
    collation can seed its randomness from ``(seed, epoch, batch_index)`` rather than from worker
    state. The order of epoch :math:`e` is a permutation drawn from a generator seeded by
    ``(seed, e)``. The epoch advances by one at every pass; :meth:`set_epoch` sets it (e.g. when
    resuming).

    With :obj:`num_replicas` processes (distributed data parallel) every process draws the same
    permutation and takes every :obj:`num_replicas`-th item of it, starting at :obj:`rank`, as
    :class:`~torch.utils.data.DistributedSampler` does: batch :math:`b` of the processes together
    holds the items of batch :math:`b` of one process with :obj:`num_replicas` times the batch
    size, and is tagged ``b * num_replicas + rank``. Without :obj:`drop_last` the permutation is
    padded by wrapping around so that every process gets as many batches of the same size.

    Args:
        num_items (int): The size of the dataset.
        batch_size (int): Items per batch (per process).
        shuffle (bool, optional): Whether to permute the items each epoch. (default: :obj:`True`)
        drop_last (bool, optional): Whether to drop the last incomplete batch.
            (default: :obj:`False`)
        seed (int, optional): The seed. (default: :obj:`0`)
        num_replicas (int, optional): The number of processes sharing the data.
            (default: :obj:`1`)
        rank (int, optional): The index of this process among them. (default: :obj:`0`)
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_items <= 0:
            raise ValueError(f"'num_items' must be positive, got {num_items}")
        if batch_size <= 0:
            raise ValueError(f"'batch_size' must be positive, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"Need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                             f"num_replicas={num_replicas}, rank={rank}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        r"""Sets the epoch of the next pass."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // (self.batch_size * self.num_replicas)
        per_replica = -(-self.num_items // self.num_replicas)
        return -(-per_replica // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch, -1))
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        replicas = self.num_replicas
        if not self.drop_last and len(order) % replicas:  # pad: equal shares for all
            pad = replicas - len(order) % replicas
            order += (order * (pad // len(order) + 1))[:pad]
        mine = order[self.rank :: replicas]
        for b in range(len(self)):
            chunk = mine[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(epoch, b * replicas + self.rank, i) for i in chunk]


class _KeyedDataset(Dataset):
    r"""Reads ``dataset[index]`` for a key ``(epoch, batch_index, index)``, setting the epoch of
    datasets that have :meth:`set_epoch` (e.g. :class:`~pyg_infdiff.data.ImageFolder` flips)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, int, Any]:
        epoch, batch_index, index = key
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch) and getattr(self.dataset, "epoch", None) != epoch:
            set_epoch(epoch)
        return epoch, batch_index, self.dataset[index]


class _KeyedCollate:
    def __init__(self, collator: GraphCollator, seed: int) -> None:
        self.collator = collator
        self.seed = seed

    def __call__(self, keyed: list[tuple[int, int, Any]]) -> Batch:
        epoch, batch_index, _ = keyed[0]
        generator = batch_generator(self.seed, epoch, batch_index)
        return self.collator([item for _, _, item in keyed], generator=generator)


def seed_worker(worker_id: int) -> None:
    r"""A ``worker_init_fn`` that seeds Python's :mod:`random` and torch's global generator in a
    DataLoader worker from :func:`torch.initial_seed` (PyTorch's recommended recipe, for
    third-party transforms that use global random state). The batches of :func:`make_loader` do
    not depend on it: their randomness comes from :func:`batch_generator`."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def make_loader(
    dataset: Dataset,
    collator: GraphCollator,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    **kwargs: Any,
) -> DataLoader:
    r"""A :class:`~torch.utils.data.DataLoader` of graph batches that are identical for any
    :obj:`num_workers`: the order comes from :class:`SeededBatchSampler` and the subsampling of
    batch :math:`b` of epoch :math:`e` from :func:`batch_generator` ``(seed, e, b)``. Each pass
    over the loader is a new epoch; ``loader.batch_sampler.set_epoch(e)`` sets it.

    Args:
        dataset (torch.utils.data.Dataset): A map-style dataset of images or ``(image, label)``.
        collator (GraphCollator): Turns lists of items into batches.
        batch_size (int): Items per batch.
        shuffle (bool, optional): Whether to permute the items each epoch. (default: :obj:`True`)
        seed (int, optional): The seed of the order and of the subsampling. (default: :obj:`0`)
        num_workers (int, optional): Worker processes. (default: :obj:`0`)
        drop_last (bool, optional): Whether to drop the last incomplete batch.
            (default: :obj:`False`)
        num_replicas (int, optional): Processes that share the data (each gets its own part of
            every epoch, see :class:`SeededBatchSampler`); the world size of
            :mod:`torch.distributed` when it is initialised, else :obj:`1`, if :obj:`None`.
            (default: :obj:`None`)
        rank (int, optional): This process's rank among them; the :mod:`torch.distributed`
            rank (or :obj:`0`) if :obj:`None`. (default: :obj:`None`)
        **kwargs (optional): More :class:`~torch.utils.data.DataLoader` arguments (e.g.
            ``pin_memory``, ``prefetch_factor``).
    """
    if num_replicas is None:
        num_replicas = get_world_size()
    if rank is None:
        rank = get_rank()
    sampler = SeededBatchSampler(
        len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
        num_replicas=num_replicas, rank=rank,
    )
    kwargs.setdefault("worker_init_fn", seed_worker)
    return DataLoader(
        _KeyedDataset(dataset),
        batch_sampler=sampler,
        collate_fn=_KeyedCollate(collator, seed),
        num_workers=num_workers,
        **kwargs,
    )
