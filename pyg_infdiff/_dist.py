r"""Where this process sits in :mod:`torch.distributed`, readable from every subpackage.

The three questions here are all that :mod:`pyg_infdiff.data` needs of a distributed job (how
many processes share the data, and which one this is), so they live below both
:mod:`pyg_infdiff.data` and :mod:`pyg_infdiff.training` and keep the imports one-way. Users reach
them as :func:`pyg_infdiff.training.get_rank` and friends.
"""
from __future__ import annotations

import torch.distributed as dist

__all__ = ["get_rank", "get_world_size", "is_distributed"]


def is_distributed() -> bool:
    r"""Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    r"""The global rank of this process (:obj:`0` when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    r"""The number of processes (:obj:`1` when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1
