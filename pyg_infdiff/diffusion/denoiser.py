r"""The model interface of the diffusion code, and the one place that calls models through it."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import LatticeIndex

Denoiser = Callable[..., Tensor]
r"""The model interface, ``model(x_t, pos, t, batch, edge_index=None) -> Tensor``, with
``x_t`` :math:`(N, C)`, ``pos`` :math:`(N, d)`, ``t`` :math:`(B,)` (one step per graph),
``batch`` :math:`(N,)`, returning :math:`(N, C)`. A model that also accepts ``lattice`` (a
:class:`~pyg_infdiff.graph.LatticeIndex`, or ``**kwargs``) gets it whenever the nodes are the
pixels of lattices, for its dense fast path; see :func:`call_denoiser`."""


@functools.lru_cache(maxsize=256)
def _takes_lattice(function: Callable) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature (a builtin): assume it does
        return True
    return any(p.name == "lattice" or p.kind is inspect.Parameter.VAR_KEYWORD
               for p in parameters)


def accepts_lattice(model: Denoiser) -> bool:
    r"""Whether :obj:`model` (or the module a
    :class:`~torch.nn.parallel.DistributedDataParallel` or :func:`torch.compile` wraps) takes
    a ``lattice`` keyword:
    a parameter of that name or ``**kwargs`` in its ``forward`` (or call) signature. The
    answer is cached per ``forward`` function (per class for modules): it is asked at every
    step."""
    target = model
    while True:  # wrappers: DDP-style (.module); torch.compile's OptimizedModule (._orig_mod),
        # whose forward(*args, **kwargs) would otherwise hide the model's own signature
        inner = getattr(target, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(target, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            break
        target = inner
    function = type(target).forward if isinstance(target, torch.nn.Module) else target
    try:
        return _takes_lattice(function)
    except TypeError:  # an unhashable callable: ask without the cache
        return _takes_lattice.__wrapped__(function)


def call_denoiser(model: Denoiser, x_t: Tensor, pos: Tensor, t: Tensor, batch: Tensor,
                  edge_index: Tensor | None = None,
                  lattice: LatticeIndex | None = None,
                  model_kwargs: Mapping[str, Any] | None = None) -> Tensor:
    r"""Calls :obj:`model` with the :obj:`Denoiser` interface,
    ``model(x_t, pos, t, batch, edge_index=edge_index, **model_kwargs)``, adding
    ``lattice=lattice`` when the nodes are lattice pixels and the model accepts it
    (:func:`accepts_lattice`). Training (:meth:`MollifiedDiffusion.training_losses`) and
    sampling (:func:`~pyg_infdiff.diffusion.sample`) call every model through it, so a user's
    model needs nothing beyond the five-argument interface, plus the keywords of
    :obj:`model_kwargs` when the caller passes them (as in improved-diffusion: e.g.
    ``{"cond": z}`` for a :class:`~pyg_infdiff.models.MultiscaleOperatorUNet` with
    :obj:`cond_dim` :math:`> 0`; per-graph values have one row per graph).

    Args:
        model (callable): The denoiser.
        x_t (torch.Tensor): Noisy values at the nodes, :math:`(N, C)`.
        pos (torch.Tensor): Node coordinates, :math:`(N, d)`.
        t (torch.Tensor): Time step per graph, :math:`(B,)`.
        batch (torch.Tensor): Graph index per node, :math:`(N,)`.
        edge_index (torch.Tensor, optional): Edges, :math:`(2, E)`. (default: :obj:`None`)
        lattice (LatticeIndex, optional): Where the nodes sit on a lattice.
            (default: :obj:`None`)
        model_kwargs (Mapping, optional): More keyword arguments of the model, such as a
            condition. (default: :obj:`None`)
    """
    kwargs = dict(model_kwargs) if model_kwargs else {}
    if lattice is not None and accepts_lattice(model):
        kwargs["lattice"] = lattice
    return model(x_t, pos, t, batch, edge_index=edge_index, **kwargs)
