r"""Reading a point set through a *context*: a second set of nodes, of the training density,
through which the model integrates and pools while it is evaluated at any number of points.

A model trained on :math:`M` random nodes per function computes every kernel integral and
its pooling as a Monte-Carlo quadrature over about :math:`M` nodes. On a denser point set the
same quadratures are more accurate, which is a different input distribution: where the
mollified noise varies on a scale below the training nodes' spacing, the network sees sums of
much smaller spread than in training, and a model trained at 16× subsampling samples flat
colour fields on its full lattice. Sampling with a context of :math:`M` points keeps the
training statistics at every resolution. The context nodes evolve as a sample of their own
(their values do not depend on the other nodes), and every other node reads their features
through its own ball. So two resolutions that share a context share the whole trajectory of
the context and agree wherever their nodes meet.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import check_nodes, lattice
from pyg_infdiff.graph.subsample import subsample_size

__all__ = ["ContextNodes", "LatticeSubset", "context_for", "training_nodes"]


@dataclass(frozen=True)
class LatticeSubset:
    r"""A context of :obj:`num` pixel centres of the lattice :obj:`shape`, drawn at random
    without replacement for every sample: the nodes of a model trained with
    ``GraphCollator(rate=...)`` on images of that lattice, so that sampling reads at exactly
    the statistics of training. Uniform random points in the domain come close, but differ
    where it shows: a few more of them have no neighbour in a kernel ball, and some fall
    within half a pixel of a face, where the mollified noise has more variance than at any
    pixel centre (``bench/discretisation_audit.py``, :doc:`/concepts`).

    Args:
        shape (Sequence[int]): The training lattice, :math:`(n_1, \dots, n_d)`.
        num (int): Pixels per sample, at most :math:`\prod_k n_k`.
    """

    shape: tuple[int, ...]
    num: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"'shape' must be positive sizes, got {self.shape}")
        if not 1 <= self.num <= math.prod(self.shape):
            raise ValueError(f"'num' must be between 1 and the {math.prod(self.shape)} pixels "
                             f"of {self.shape}, got {self.num}")

    def draw(self, num_graphs: int, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> Tensor:
        r"""The pixel centres of every sample, :math:`(B, M, d)`, drawn from
        :obj:`generator` (on its device)."""
        device = generator.device if generator is not None else device
        keys = torch.rand(num_graphs, math.prod(self.shape), generator=generator, device=device)
        index = keys.argsort(dim=1)[:, :self.num].sort(dim=1).values
        return lattice(self.shape, device=device)[index]


def training_nodes(shape: Sequence[int], rate: float) -> LatticeSubset | Tensor:
    r"""The nodes per function of a model trained on images of the lattice :obj:`shape` at
    subsampling rate :obj:`rate` (``GraphCollator(rate=...)``), as a context: a
    :class:`LatticeSubset` of :math:`\prod_k n_k / s` random pixels for :math:`s > 1`, the
    pixel centres of the whole lattice, :math:`(\prod_k n_k, d)`, otherwise.

    Args:
        shape (Sequence[int]): The training lattice, :math:`(n_1, \dots, n_d)`.
        rate (float): The subsampling rate :math:`s` of training.
    """
    shape = tuple(int(n) for n in shape)
    if rate <= 1.0:
        return lattice(shape)
    return LatticeSubset(shape, subsample_size(math.prod(shape), rate=rate))


def context_for(context: int | Tensor | LatticeSubset | None,
                num_points: int) -> int | Tensor | LatticeSubset | None:
    r""":obj:`context` where it helps a point set of :obj:`num_points` points per sample, else
    :obj:`None` (the points are their own context): a number of points or a
    :class:`LatticeSubset` on point sets with at least that many points (on fewer its integrals
    would need the missing nodes; on as many, every lattice of a zoom shares it); given points,
    such as the whole training lattice of a model that saw every pixel
    (:func:`training_nodes`), on point sets with more points than it (its own lattice, read
    through itself, gives the plain call's numbers with twice the nodes and a radius graph of
    them instead of the dense path).

    Args:
        context (int, torch.Tensor or LatticeSubset, optional): A context of
            :func:`~pyg_infdiff.diffusion.sample`.
        num_points (int): Points per sample of the point set to read.
    """
    if context is None:
        return None
    if isinstance(context, Tensor):
        return context if num_points > context.size(-2) else None
    size = context.num if isinstance(context, LatticeSubset) else context
    return context if num_points >= size else None


@dataclass
class ContextNodes:
    r"""The query nodes of a sampling run merged with its context nodes, graph by graph: the
    nodes of graph :math:`b` are its queries, then its context points (a sorted batch vector, as
    PyG layers expect).

    Build it with :meth:`build`; :func:`~pyg_infdiff.diffusion.sample` does, given
    ``context=``.

    Args:
        pos (torch.Tensor): Coordinates of all nodes, :math:`(N_q + N_c, d)`.
        batch (torch.Tensor): Graph index of all nodes, sorted.
        query (torch.Tensor): Where the query nodes sit among all nodes, in their own order.
        context (torch.Tensor): Where the context nodes sit among all nodes (sorted).
        context_pos (torch.Tensor): Coordinates of the context nodes, :math:`(N_c, d)`.
        context_batch (torch.Tensor): Graph index of each context node.
    """

    pos: Tensor
    batch: Tensor
    query: Tensor
    context: Tensor
    context_pos: Tensor
    context_batch: Tensor

    @classmethod
    def build(
        cls,
        context: int | Tensor | LatticeSubset,
        pos: Tensor,
        batch: Tensor,
        num_graphs: int,
        generator: torch.Generator | None = None,
    ) -> ContextNodes:
        r"""Merges the query nodes with a context.

        Args:
            context (int, torch.Tensor or LatticeSubset): :math:`M` uniform random points per
                graph in :math:`[0, 1]^d`, drawn from :obj:`generator` (on its device); a
                :class:`LatticeSubset`, random pixel centres of a lattice per graph; or the
                points themselves, :math:`(M, d)` shared by all graphs or :math:`(B, M, d)` one
                set per graph.
            pos (torch.Tensor): Query coordinates :math:`(N_q, d)`.
            batch (torch.Tensor): Sorted graph index of each query node.
            num_graphs (int): :math:`B`.
            generator (torch.Generator, optional): The source of random context points.
                (default: :obj:`None`, the global generator of the device of :obj:`pos`)
        """
        ndim = pos.size(1)
        if isinstance(context, LatticeSubset):
            if len(context.shape) != ndim:
                raise ValueError(f"The context lattice {context.shape} is not {ndim}-D")
            context = context.draw(num_graphs, generator, pos.device)
        if isinstance(context, bool) or not isinstance(context, (int, Tensor)):
            raise TypeError(f"'context' must be a number of points or a tensor of points, got "
                            f"{type(context).__name__}")
        if isinstance(context, int):
            if context < 1:
                raise ValueError(f"'context' must be a positive number of points, got {context}")
            device = generator.device if generator is not None else pos.device
            points = torch.rand(num_graphs, context, ndim, generator=generator, device=device)
        else:
            points = context
            if points.dim() == 2:
                points = points.unsqueeze(0).expand(num_graphs, -1, -1)
            if (points.dim() != 3 or points.size(0) != num_graphs or points.size(2) != ndim
                    or points.size(1) < 1 or not points.is_floating_point()):
                raise ValueError(
                    f"'context' points must be a floating (M, {ndim}) or ({num_graphs}, M, "
                    f"{ndim}) tensor with M >= 1, got {points.dtype} {tuple(points.shape)}")
        points = points.to(device=pos.device, dtype=pos.dtype)
        size = points.size(1)
        context_pos = points.reshape(-1, ndim)
        check_nodes(context_pos)
        context_batch = torch.arange(num_graphs, device=pos.device).repeat_interleave(size)
        all_batch = torch.cat([batch, context_batch])
        order = torch.argsort(all_batch, stable=True)  # queries first within each graph
        where = torch.empty_like(order)
        where[order] = torch.arange(order.numel(), device=order.device)
        num_query = pos.size(0)
        return cls(torch.cat([pos, context_pos])[order], all_batch[order], where[:num_query],
                   where[num_query:], context_pos, context_batch)

    def merge(self, query: Tensor, context: Tensor) -> Tensor:
        r"""Values of all nodes from those of the queries :math:`(N_q, C)` and of the context
        :math:`(N_c, C)`."""
        out = query.new_empty(self.pos.size(0), query.size(1))
        out[self.query] = query
        out[self.context] = context.to(query.dtype)
        return out
