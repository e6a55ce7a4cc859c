r"""Exponential moving average (EMA) of model weights, built on
:class:`torch.optim.swa_utils.AveragedModel` and
:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pyg_infdiff.training.distributed import unwrap_model

__all__ = ["create_ema", "update_ema"]


def create_ema(
    model: nn.Module,
    decay: float = 0.999,
    *,
    use_buffers: bool = True,
    device: torch.device | str | None = None,
) -> AveragedModel:
    r"""Creates an exponential moving average of :obj:`model`'s weights.

    .. math::
        \theta^{\mathrm{EMA}}_{s} = \beta\, \theta^{\mathrm{EMA}}_{s-1}
        + (1 - \beta)\, \theta_{s}

    with decay :math:`\beta`. The first :func:`update_ema` copies the weights. The averaged
    copy is kept in evaluation mode with gradients off; use :obj:`ema.module` as the model.

    Args:
        model (torch.nn.Module): The trained model (a
            :class:`~torch.nn.parallel.DistributedDataParallel` wrapper is unwrapped).
        decay (float, optional): The decay :math:`\beta \in [0, 1]`. (default: :obj:`0.999`)
        use_buffers (bool, optional): Average buffers (e.g. normalisation statistics) too.
            (default: :obj:`True`)
        device (torch.device or str, optional): Where to keep the average; :obj:`None` keeps
            the model's device. (default: :obj:`None`)
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
    ema = AveragedModel(
        unwrap_model(model),
        device=device,
        multi_avg_fn=get_ema_multi_avg_fn(decay),
        use_buffers=use_buffers,
    )
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module, step: int, *, start: int = 0) -> None:
    r"""Updates :obj:`ema` after optimiser step :obj:`step`.

    Up to and including step :obj:`start` the average is reset to a copy of the weights
    (early weights change too fast to be worth averaging); afterwards it is the usual EMA
    update.

    Args:
        ema (AveragedModel): The average from :func:`create_ema`.
        model (torch.nn.Module): The trained model (DDP wrappers are unwrapped).
        step (int): The number of optimiser steps taken so far, counting this one.
        start (int, optional): The last step at which the average is a plain copy.
            (default: :obj:`0`)
    """
    if step <= start:
        ema.n_averaged.zero_()
    ema.update_parameters(unwrap_model(model))
