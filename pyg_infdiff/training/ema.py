r"""Exponential moving average (EMA) of model weights, built on
:class:`torch.optim.swa_utils.AveragedModel` with a warmed-up decay (:func:`ema_decay`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from pyg_infdiff.training.distributed import unwrap_model

__all__ = ["create_ema", "ema_decay", "update_ema"]


def ema_decay(decay: float, num_averaged: int, warmup: bool = True) -> float:
    r"""The decay of the :math:`n`-th update of an average of :math:`n` weights,
    :math:`\min(\beta, (1 + n) / (10 + n))` with warm-up, else :math:`\beta`.

    Without warm-up the average of a short run is dominated by the initial weights (with
    :math:`\beta = 0.999` they keep a weight :math:`\beta^{n}`: 37% after 1,000 steps, and a
    zero-initialised output layer makes such a model predict too little); with it the average
    spans roughly the last :math:`n / 9` updates until :math:`\beta` takes over (after about
    :math:`9 / (1 - \beta)` updates), as in the EMA of ``diffusers`` and TensorFlow.
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


def _multi_avg_fn(decay: float, warmup: bool):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               num_averaged: torch.Tensor) -> None:
        beta = ema_decay(decay, int(num_averaged), warmup)
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - beta)
        else:  # integer buffers (e.g. batch-norm counters)
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * beta + c * (1.0 - beta))

    return update


def create_ema(
    model: nn.Module,
    decay: float = 0.999,
    *,
    warmup: bool = True,
    use_buffers: bool = True,
    device: torch.device | str | None = None,
) -> AveragedModel:
    r"""Creates an exponential moving average of :obj:`model`'s weights.

    .. math::
        \theta^{\mathrm{EMA}}_{n} = \beta_n\, \theta^{\mathrm{EMA}}_{n-1}
        + (1 - \beta_n)\, \theta_{n},
        \qquad \beta_n = \min\left(\beta, \frac{1 + n}{10 + n}\right)

    with decay :math:`\beta` and warm-up (:func:`ema_decay`; :math:`\beta_n = \beta` without
    it), :math:`n` counting the updates since the average was (re)started. The first
    :func:`update_ema` copies the weights. The averaged copy is kept in evaluation mode with
    gradients off; use :obj:`ema.module` as the model.

    Args:
        model (torch.nn.Module): The trained model (a
            :class:`~torch.nn.parallel.DistributedDataParallel` wrapper is unwrapped).
        decay (float, optional): The decay :math:`\beta \in [0, 1]`. (default: :obj:`0.999`)
        warmup (bool, optional): Whether early updates use the smaller decay
            :math:`(1 + n) / (10 + n)`. (default: :obj:`True`)
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
        multi_avg_fn=_multi_avg_fn(decay, warmup),
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
