r"""Distributed data parallel helpers on top of :mod:`torch.distributed`.

A job launched with ``torchrun --nproc_per_node=G script.py`` gets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the launcher;
:func:`init_distributed` reads them and starts the process group (NCCL on GPUs, gloo on CPU).
A plain ``python script.py`` run has none of them and stays a single process: every helper
below then degrades to the obvious single-process answer, so scripts need no branches.

Only the main process (rank 0) writes logs, checkpoints and samples; see
:func:`is_main_process`.
"""
from __future__ import annotations

import os
from collections.abc import Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Sampler, SequentialSampler

from pyg_infdiff._dist import get_rank, get_world_size, is_distributed

__all__ = [
    "DistributedContext",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "distributed_sampler",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "unwrap_model",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistributedContext:
    r"""Where this process sits in a (possibly single-process) job.

    Args:
        rank (int): Global rank of this process.
        world_size (int): Number of processes.
        local_rank (int): Rank on this machine (selects the GPU).
        backend (str, optional): The process-group backend, :obj:`None` when not distributed.
        device (torch.device): The device this process should train on.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        r"""Whether this is rank 0."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"Environment variable {name}={value!r} is not an integer") from err


def init_distributed(
    backend: str | None = None,
    *,
    timeout: timedelta = timedelta(minutes=30),
) -> DistributedContext:
    r"""Initialises :mod:`torch.distributed` from the ``torchrun`` environment variables.

    With ``WORLD_SIZE`` unset or ``1`` nothing is initialised and a single-process context is
    returned. Otherwise the default process group is created with ``init_method="env://"``
    (``MASTER_ADDR``/``MASTER_PORT``), and on CUDA the process is bound to GPU
    ``LOCAL_RANK``. Calling it again once the group exists returns the current context.

    Args:
        backend (str, optional): ``"nccl"`` or ``"gloo"``; :obj:`None` picks NCCL when CUDA is
            available and gloo otherwise. (default: :obj:`None`)
        timeout (datetime.timedelta, optional): Collective timeout. Rank 0 samples and writes
            checkpoints while the others wait, so keep it generous.
            (default: :obj:`timedelta(minutes=30)`)
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Invalid distributed environment: RANK={rank}, WORLD_SIZE={world_size}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    use_cuda = backend == "nccl"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size == 1 and not is_distributed():
        if use_cuda:
            device = torch.device("cuda", torch.cuda.current_device())
        return DistributedContext(0, 1, 0, None, device)
    if use_cuda:
        torch.cuda.set_device(device)
    if not is_distributed():
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world_size,
            timeout=timeout,
        )
    return DistributedContext(
        dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), device
    )


def cleanup_distributed() -> None:
    r"""Destroys the default process group if there is one."""
    if is_distributed():
        dist.destroy_process_group()


def is_main_process() -> bool:
    r"""Whether this process is rank 0, the only one that writes files."""
    return get_rank() == 0


def barrier() -> None:
    r"""Waits for all processes; a no-op when not distributed."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    r"""Sums :obj:`tensor` over all processes in place and returns it (identity when not
    distributed)."""
    if is_distributed() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    r"""Gathers one picklable object from every process, in rank order.

    This pickles in memory between the processes of one job; it never reads files.
    """
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def distributed_sampler(
    dataset: Sized,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> Sampler[int]:
    r"""A sampler that gives each process its own shard of :obj:`dataset`.

    When distributed this is a :class:`torch.utils.data.DistributedSampler` (the trainer calls
    its :meth:`set_epoch` at each epoch, so shuffles differ per epoch and replay on resume).
    In a single process it is a :class:`~torch.utils.data.DistributedSampler` over one replica
    as well when :obj:`shuffle` is set (the same permutation a distributed job would split),
    and a :class:`~torch.utils.data.SequentialSampler` otherwise.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool, optional): Shuffle each epoch. (default: :obj:`True`)
        seed (int, optional): The shuffle seed, shared by all processes. (default: :obj:`0`)
        drop_last (bool, optional): Drop the tail that does not divide evenly between the
            processes instead of padding it with repeats. (default: :obj:`False`)
    """
    if is_distributed() and get_world_size() > 1:
        return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    if shuffle:
        return DistributedSampler(
            dataset, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=drop_last
        )
    return SequentialSampler(dataset)


def wrap_ddp(
    model: nn.Module,
    device: torch.device | str,
    *,
    find_unused_parameters: bool = False,
) -> nn.Module:
    r"""Wraps :obj:`model` in :class:`~torch.nn.parallel.DistributedDataParallel` when
    distributed, and returns it unchanged otherwise.

    The model must already be on :obj:`device`. Gradients are averaged over processes, so a
    mean-reduced loss on :math:`G` shards of :math:`b` examples each gives the gradient of the
    mean over the :math:`Gb` examples.

    Args:
        model (torch.nn.Module): The model.
        device (torch.device or str): This process's device.
        find_unused_parameters (bool, optional): Passed to DDP; needed when some parameters
            get no gradient in a step (e.g. an unused branch). (default: :obj:`False`)
    """
    if not is_distributed() or get_world_size() == 1:
        return model
    device = torch.device(device)
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    r"""Returns the module inside a :class:`~torch.nn.parallel.DistributedDataParallel` (or
    :obj:`model` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model

