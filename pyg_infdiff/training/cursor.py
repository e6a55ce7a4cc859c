r"""An endless, resumable walk over an iterable of batches (epochs of a data loader)."""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

__all__ = ["DataCursor", "epoch_seed", "move_to_device"]

_END = object()


def move_to_device(obj: Any, device: torch.device | str) -> Any:
    r"""Moves a batch to :obj:`device`: tensors and anything with a ``.to`` method (PyG
    :class:`~torch_geometric.data.Data`/:class:`~torch_geometric.data.Batch`) directly, dicts,
    lists and tuples element-wise; anything else is returned unchanged."""
    if isinstance(obj, torch.Tensor) or callable(getattr(obj, "to", None)):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device) for v in obj)
    return obj


def epoch_seed(seed: int, epoch: int) -> int:
    r"""The data-order seed of :obj:`epoch` (a fixed mix of the run seed and the epoch)."""
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + 1) % (2**63)


class DataCursor:
    r"""Cycles over the data given to :meth:`next` forever and remembers where it is, as ``(epoch,
    batch_in_epoch)``, so that a resumed run sees the same batches as an uninterrupted one.

    At the start of every epoch it calls ``set_epoch(epoch)`` on the data, its sampler, its batch
    sampler and the batch sampler's sampler
    (e.g. :class:`~torch.utils.data.DistributedSampler`) when they have one, and reseeds the
    data loader's :obj:`generator` (if it has a :class:`torch.Generator`) with
    :func:`epoch_seed`, so the order of an epoch depends only on the seed and the epoch. After
    :meth:`seek`, the next epoch replays its first ``batch_in_epoch`` batches and throws them
    away, with the global RNG and the :obj:`protect` generators left as they were (their saved
    states already account for those batches).

    Args:
        seed (int, optional): The data-order seed. (default: :obj:`0`)
        reseed (bool, optional): Reseed the loader's generator per epoch. (default: :obj:`True`)
        protect (Mapping[str, torch.Generator], optional): Generators that replayed batches must
            not advance. (default: :obj:`None`)
        device (torch.device, optional): The training device (its CUDA RNG is protected too).
            (default: :obj:`None`)
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        reseed: bool = True,
        protect: Mapping[str, torch.Generator] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.seed = seed
        self.reseed = reseed
        self.protect = dict(protect or {})
        self.device = device
        self.epoch = 0
        self.batch_in_epoch = 0
        self._data: Iterable[Any] | None = None
        self._iter: Iterator[Any] | None = None

    def seek(self, epoch: int, batch_in_epoch: int) -> None:
        r"""Moves to batch :obj:`batch_in_epoch` of :obj:`epoch` (applied on the next fetch)."""
        if epoch < 0 or batch_in_epoch < 0:
            raise ValueError(f"Invalid data position: epoch={epoch}, batch={batch_in_epoch}")
        self.epoch, self.batch_in_epoch, self._iter = epoch, batch_in_epoch, None

    def next(self, data: Iterable[Any]) -> Any:
        r"""Returns the next batch of :obj:`data`, starting a new epoch when one ends."""
        if data is not self._data:
            self._data, self._iter = data, None
            self._warn_if_not_replayable(data)
        while True:
            if self._iter is None:
                self._begin_epoch(data)
            batch = next(self._iter, _END)
            if batch is _END:
                if self.batch_in_epoch == 0:
                    raise ValueError("The training data yielded no batches")
                self.epoch, self.batch_in_epoch, self._iter = self.epoch + 1, 0, None
                continue
            self.batch_in_epoch += 1
            return batch

    def _begin_epoch(self, data: Iterable[Any]) -> None:
        seen: set[int] = set()
        batch_sampler = getattr(data, "batch_sampler", None)
        for obj in (data, getattr(data, "sampler", None), batch_sampler,
                    getattr(batch_sampler, "sampler", None)):
            if obj is not None and id(obj) not in seen and callable(
                getattr(obj, "set_epoch", None)
            ):
                obj.set_epoch(self.epoch)
            seen.add(id(obj))
        generator = getattr(data, "generator", None)
        if self.reseed and isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed(self.seed, self.epoch))
        if self.batch_in_epoch == 0:
            self._iter = iter(data)
            return
        saved = {k: g.get_state() for k, g in self.protect.items()}
        devices = [self.device] if self.device is not None and self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self._iter = iter(data)  # may draw a worker base seed: already in the saved state
            for i in range(self.batch_in_epoch):
                if next(self._iter, _END) is _END:
                    raise ValueError(
                        f"Cannot resume at batch {self.batch_in_epoch} of epoch {self.epoch}: "
                        f"the data has only {i} batches per epoch now"
                    )
        for k, g in self.protect.items():
            g.set_state(saved[k])

    @staticmethod
    def _warn_if_not_replayable(data: Iterable[Any]) -> None:
        if not isinstance(data, DataLoader):
            return
        if data.generator is None and (
            isinstance(data.sampler, RandomSampler) or data.num_workers > 0
        ):
            warnings.warn(
                "The DataLoader has no generator, so its shuffling and worker seeds come from "
                "the global RNG and a resumed run will not replay the data exactly; pass "
                "generator=torch.Generator() (the trainer reseeds it every epoch)",
                stacklevel=4,
            )
        if data.num_workers > 0 and data.persistent_workers:
            warnings.warn(
                "persistent_workers=True keeps each worker's RNG across epochs, so random "
                "augmentation or subsampling in the workers will not replay exactly on resume",
                stacklevel=4,
            )

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(epoch={self.epoch}, "
                f"batch_in_epoch={self.batch_in_epoch}, seed={self.seed})")
