r"""Neighbour search in :math:`[0, 1]^d`: radius graphs, bipartite radius edges and k-NN.

Built on :mod:`torch_cluster` directly (PyG 2.8 routes its own ``radius_graph`` through
``pyg-lib``). Two things differ from :mod:`torch_cluster`:

* **Edge orientation** follows PyG's ``source_to_target`` flow everywhere: ``edge_index[0]``
  indexes the *source* points :math:`j` (whose features are aggregated) and ``edge_index[1]`` the
  *target* points :math:`i` (where the result lives).
* **No silent truncation.** :mod:`torch_cluster` keeps at most ``max_num_neighbors`` neighbours per
  target and drops the rest without notice, which biases a Monte-Carlo integral. Here, with
  ``max_num_neighbors=None`` the cap is chosen so that nothing is dropped (exact search); with an
  explicit cap, any target that has more neighbours than the cap raises a :class:`ValueError`
  (``on_truncation="raise"``) or warns and keeps ``max_num_neighbors`` of them (``"warn"``).

:mod:`torch_cluster` is imported on first use, so the rest of :mod:`pyg_infdiff.graph` works where
it is not installed.

A point :math:`j` is a neighbour of :math:`i` when :math:`\|\mathbf{p}_j - \mathbf{p}_i\| < r`
(strictly, up to floating-point rounding). Empty point sets give an empty ``[2, 0]`` edge index.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import _check_shape

#: What a search does when a node has more neighbours than the cap allows.
OnTruncation = Literal["raise", "warn"]

#: How far outside :math:`[0, 1]^d` a coordinate may lie before a search rejects it.
DOMAIN_TOLERANCE = 1e-6

# On the CPU the kd-tree finds every neighbour whatever the cap, so an exact search simply caps at
# the size of the largest graph. Elsewhere (CUDA) memory grows with cap * targets.
_FULL_CAP_DEVICES = ("cpu",)


def _torch_cluster():
    try:
        import torch_cluster
    except ImportError as error:
        raise ImportError(
            "Neighbour search needs 'torch-cluster' (pip install torch-cluster; it builds from "
            "source against the installed torch)"
        ) from error
    return torch_cluster


def _ball_volume(ndim: int) -> float:
    return math.pi ** (ndim / 2) / math.gamma(ndim / 2 + 1)


def max_neighbors_bound(r: float, shape: Sequence[int]) -> int:
    r"""An upper bound on the number of pixel centres of a lattice (or of any subset of it)
    closer than :obj:`r` to any point of the domain.

    The smaller of two rigorous bounds: the pixels of the bounding box,
    :math:`\prod_k (\lfloor 2 r n_k \rfloor + 1)`, and a volume bound: the cells of those pixels
    lie in the ball of radius :math:`r + \tfrac12 \|\mathbf{h}\|`, :math:`h_k = 1 / n_k`, so there
    are at most :math:`V_d (r + \tfrac12\|\mathbf{h}\|)^d \prod_k n_k` of them.

    Args:
        r (float): The search radius in domain units.
        shape (Sequence[int]): The lattice size :math:`(n_1, \dots, n_d)`.
    """
    shape = _check_shape(shape)
    _check_radius(r)
    box = math.prod(math.floor(2 * r * n) + 1 for n in shape)
    half_diag = 0.5 * math.sqrt(sum(1.0 / n**2 for n in shape))
    volume = _ball_volume(len(shape)) * (r + half_diag) ** len(shape) * math.prod(shape)
    return int(min(box, math.floor(volume * (1 + 1e-9)) + 1, math.prod(shape)))


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    *,
    loop: bool = True,
    max_num_neighbors: int | None = None,
    on_truncation: OnTruncation = "raise",
) -> Tensor:
    r"""Connects every point to all points of the same graph closer than :obj:`r`. An empty
    point set gives an empty edge index of shape :math:`(2, 0)`.

    Args:
        pos (torch.Tensor): Coordinates in :math:`[0, 1]^d`.
        r (float): The radius in domain units, :math:`r > 0`.
        batch (torch.Tensor, optional): Sorted graph index of each point. (default: :obj:`None`)
        loop (bool, optional): Whether every point is its own neighbour (a self-loop), as a
            quadrature of :math:`\int \kappa(x - y) v(y) \,dy` should have. (default: :obj:`True`)
        max_num_neighbors (int, optional): The most neighbours (self-loop excluded) a point may
            have. :obj:`None` sizes the search so that nothing is dropped. (default: :obj:`None`)
        on_truncation (str, optional): What to do when a point has more than
            :obj:`max_num_neighbors` neighbours: :obj:`"raise"` a :class:`ValueError`, or
            :obj:`"warn"` and keep :obj:`max_num_neighbors` of them. (default: :obj:`"raise"`)

    Shapes:
        - **pos:** :math:`(N, d)`, **batch:** :math:`(N,)`
        - **output:** :math:`(2, E)`; ``[0]`` source :math:`j`, ``[1]`` target :math:`i`.
    """
    pos = _check_pos(pos, "pos")
    batch = _check_batch(batch, pos, "batch")
    return _radius(pos, pos, r, batch, batch, max_num_neighbors, on_truncation, loop)


def radius(
    pos_src: Tensor,
    pos_dst: Tensor,
    r: float,
    batch_src: Tensor | None = None,
    batch_dst: Tensor | None = None,
    *,
    max_num_neighbors: int | None = None,
    on_truncation: OnTruncation = "raise",
) -> Tensor:
    r"""Bipartite radius edges: links every target point to all source points of the same graph
    closer than :obj:`r` (e.g. to read an operator at query points from the nodes of a graph).

    Args:
        pos_src (torch.Tensor): Source coordinates in :math:`[0, 1]^d`.
        pos_dst (torch.Tensor): Target coordinates in :math:`[0, 1]^d`.
        r (float): The radius in domain units, :math:`r > 0`.
        batch_src (torch.Tensor, optional): Sorted graph index of each source. (default:
            :obj:`None`)
        batch_dst (torch.Tensor, optional): Sorted graph index of each target; give both batch
            vectors or neither. (default: :obj:`None`)
        max_num_neighbors (int, optional): The most sources a target may have. :obj:`None`
            sizes the search so that nothing is dropped. (default: :obj:`None`)
        on_truncation (str, optional): :obj:`"raise"` or :obj:`"warn"`, see
            :func:`radius_graph`. (default: :obj:`"raise"`)

    Shapes:
        - **pos_src:** :math:`(N, d)`, **pos_dst:** :math:`(M, d)`
        - **output:** :math:`(2, E)`; ``[0]`` indexes :obj:`pos_src`, ``[1]`` :obj:`pos_dst`.
    """
    pos_src, pos_dst = _check_pair(pos_src, pos_dst)
    batch_src, batch_dst = _check_batch_pair(batch_src, batch_dst, pos_src, pos_dst)
    return _radius(
        pos_src, pos_dst, r, batch_src, batch_dst, max_num_neighbors, on_truncation, True
    )


_TWIN_TOL = 1e-6  # a node this close to a context node (per coordinate) is the same point


def context_graph(pos: Tensor, r: float, context: Tensor, batch: Tensor | None = None) -> Tensor:
    r"""Radius edges that read every node through a *context* subset of the nodes: each node
    :math:`i` gets the context nodes of its graph closer than :obj:`r` as sources, and itself
    (a self-loop) whether it is a context node or not.

    A node within :math:`10^{-6}` (per coordinate) of a context node, as on lattices nested in a
    context lattice, has no self-loop: that context node stands for it, so the two get the same
    value.

    A quadrature over these edges sees, at every node, the density of the context set and not
    that of the node set. For context nodes it equals :func:`radius_graph` of the context set
    alone, so their values do not depend on the other nodes at all. For a node outside the
    context, drawn independently of it, the context nodes in its ball are distributed as the
    other nodes in the ball of a context node (for i.i.d. uniform context points, by Slivnyak's
    theorem): its integrals are Monte-Carlo quadratures of the same density as training on
    that many nodes. See :class:`~pyg_infdiff.models.MultiscaleOperatorUNet` (:obj:`context`)
    and :func:`~pyg_infdiff.diffusion.sample`.

    Args:
        pos (torch.Tensor): Coordinates of all nodes in :math:`[0, 1]^d`.
        r (float): The radius in domain units, :math:`r > 0`.
        context (torch.Tensor): Indices of the context nodes, sorted, without repeats.
        batch (torch.Tensor, optional): Sorted graph index of each node. (default: :obj:`None`)

    Shapes:
        - **pos:** :math:`(N, d)`, **context:** :math:`(M,)`, **batch:** :math:`(N,)`
        - **output:** :math:`(2, E)`; ``[0]`` source :math:`j` (a context node or :math:`i`
          itself), ``[1]`` target :math:`i`, both indexing :obj:`pos`.
    """
    pos = _check_pos(pos, "pos")
    batch = _check_batch(batch, pos, "batch")
    context = context.to(device=pos.device, dtype=torch.long).view(-1)
    if context.numel() and (int(context.min()) < 0 or int(context.max()) >= pos.size(0)):
        raise ValueError(f"'context' indexes nodes out of range for {pos.size(0)} nodes")
    if context.numel() > 1 and not bool((context[1:] > context[:-1]).all()):
        raise ValueError("'context' must be sorted node indices without repeats")
    batch_ctx = batch[context] if batch is not None else None
    edges = _radius(pos[context], pos, r, batch_ctx, batch, None, "raise", True)
    src, dst = context[edges[0]], edges[1]
    keep = src != dst  # the self-loops of context nodes come back below, with everyone's
    # A node at the very position of a context node (nested lattices) reads that node as itself:
    # no second self-term, so it gets exactly the context node's value.
    twin = keep & ((pos[src] - pos[dst]).abs().amax(dim=-1) <= _TWIN_TOL)
    has_twin = torch.zeros(pos.size(0), dtype=torch.bool, device=pos.device)
    has_twin[dst[twin]] = True
    nodes = torch.arange(pos.size(0), device=pos.device)[~has_twin]
    src, dst = torch.cat([src[keep], nodes]), torch.cat([dst[keep], nodes])
    order = torch.argsort(dst * pos.size(0) + src)  # grouped by target, as radius_graph's
    return torch.stack([src[order], dst[order]])


def knn(
    pos_src: Tensor,
    pos_dst: Tensor,
    k: int,
    batch_src: Tensor | None = None,
    batch_dst: Tensor | None = None,
) -> Tensor:
    r"""Links every target point to its :obj:`k` nearest source points of the same graph (fewer
    where the graph has fewer than :obj:`k` sources). Ties are broken arbitrarily.

    Args:
        pos_src (torch.Tensor): Source coordinates in :math:`[0, 1]^d`.
        pos_dst (torch.Tensor): Target coordinates in :math:`[0, 1]^d`.
        k (int): The number of neighbours, :math:`k \ge 1`.
        batch_src (torch.Tensor, optional): Sorted graph index of each source. (default:
            :obj:`None`)
        batch_dst (torch.Tensor, optional): Sorted graph index of each target; give both batch
            vectors or neither. (default: :obj:`None`)

    Shapes:
        - **output:** :math:`(2, E)`; ``[0]`` indexes :obj:`pos_src`, ``[1]`` :obj:`pos_dst`.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"'k' must be a positive integer, got k={k!r}")
    pos_src, pos_dst = _check_pair(pos_src, pos_dst)
    batch_src, batch_dst = _check_batch_pair(batch_src, batch_dst, pos_src, pos_dst)
    if pos_src.size(0) == 0 or pos_dst.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=pos_src.device)
    out = _torch_cluster().knn(pos_src, pos_dst, int(k), batch_src, batch_dst)
    return out.flip(0)


def _radius(
    pos_src: Tensor,
    pos_dst: Tensor,
    r: float,
    batch_src: Tensor | None,
    batch_dst: Tensor | None,
    max_num_neighbors: int | None,
    on_truncation: OnTruncation,
    loop: bool,
) -> Tensor:
    _check_radius(r)
    if on_truncation not in ("raise", "warn"):
        raise ValueError(f"'on_truncation' must be 'raise' or 'warn', got {on_truncation!r}")
    if max_num_neighbors is not None and (
        isinstance(max_num_neighbors, bool)
        or int(max_num_neighbors) != max_num_neighbors
        or max_num_neighbors < 1
    ):
        raise ValueError(
            f"'max_num_neighbors' must be a positive integer or None, got {max_num_neighbors!r}"
        )
    if pos_src.size(0) == 0 or pos_dst.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=pos_src.device)
    # A self-loop is always found (distance 0) and removed afterwards when loop=False.
    extra = 0 if loop else 1
    if max_num_neighbors is None:
        edge_index = _exact_search(pos_src, pos_dst, r, batch_src, batch_dst)
    else:
        # One more than allowed: a target that reaches it has been truncated, for certain.
        cap = int(max_num_neighbors) + extra
        edge_index = _search(pos_src, pos_dst, r, batch_src, batch_dst, cap + 1)
        degree = torch.bincount(edge_index[1], minlength=pos_dst.size(0))
        over = degree > cap
        if bool(over.any()):
            message = (
                f"{int(over.sum())} of {pos_dst.size(0)} target points have more than "
                f"max_num_neighbors={max_num_neighbors} neighbours within r={r}: the search would "
                f"drop some and bias the aggregation. Pass max_num_neighbors=None for an exact "
                f"search, or a larger cap (a rigorous one for lattice subsets is "
                f"max_neighbors_bound(r, shape))."
            )
            if on_truncation == "raise":
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)
            if not loop:
                edge_index = edge_index[:, edge_index[0] != edge_index[1]]
            return _keep_first(edge_index, int(max_num_neighbors), pos_dst.size(0))
    if not loop:
        edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    return edge_index


def _search(
    pos_src: Tensor,
    pos_dst: Tensor,
    r: float,
    batch_src: Tensor | None,
    batch_dst: Tensor | None,
    cap: int,
) -> Tensor:
    # torch_cluster returns [index into y (targets), index into x (sources)].
    out = _torch_cluster().radius(pos_src, pos_dst, float(r), batch_src, batch_dst, cap)
    return out.flip(0)


def _num_per_graph(batch: Tensor | None, num: int) -> int:
    if batch is None:
        return num
    return int(torch.bincount(batch).max())


def _initial_cap(pos_src: Tensor, batch_src: Tensor | None, r: float) -> int:
    # A guess for the largest neighbourhood: the lattice bound for a lattice with as many points
    # as the largest graph, with a margin for the fluctuations of random subsets.
    num = _num_per_graph(batch_src, pos_src.size(0))
    ndim = pos_src.size(1)
    side = max(1, math.ceil(num ** (1.0 / ndim)))
    bound = max_neighbors_bound(r, (side,) * ndim)
    return min(num, math.ceil(1.5 * bound) + 8)


def _exact_search(
    pos_src: Tensor,
    pos_dst: Tensor,
    r: float,
    batch_src: Tensor | None,
    batch_dst: Tensor | None,
) -> Tensor:
    num = _num_per_graph(batch_src, pos_src.size(0))
    if pos_src.device.type in _FULL_CAP_DEVICES:
        return _search(pos_src, pos_dst, r, batch_src, batch_dst, num)
    # Start from an estimate and double until no target reaches the cap (or the cap covers
    # whole graphs): the result is exact either way.
    cap = _initial_cap(pos_src, batch_src, r)
    while True:
        edge_index = _search(pos_src, pos_dst, r, batch_src, batch_dst, cap)
        if cap >= num:
            return edge_index
        degree = torch.bincount(edge_index[1], minlength=pos_dst.size(0))
        if int(degree.max()) < cap:
            return edge_index
        cap = min(2 * cap, num)


def _keep_first(edge_index: Tensor, cap: int, num_dst: int) -> Tensor:
    # Keeps the first `cap` edges of every target.
    order = torch.sort(edge_index[1], stable=True).indices
    edge_index = edge_index[:, order]
    dst = edge_index[1]
    start = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
    start[1:] = torch.bincount(dst, minlength=num_dst).cumsum(0)
    rank = torch.arange(dst.numel(), device=dst.device) - start[dst]
    return edge_index[:, rank < cap]


def _check_radius(r: float) -> None:
    if isinstance(r, Tensor):
        r = float(r)
    if not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
        raise ValueError(f"The radius must be a finite number > 0, got r={r!r}")


def _check_pos(pos: Tensor, name: str) -> Tensor:
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.size(1) < 1:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"'{name}' must be a [N, d] tensor, got {shape}")
    if not pos.is_floating_point():
        raise ValueError(f"'{name}' must be floating point, got dtype={pos.dtype}")
    if pos.numel() > 0:
        if not bool(torch.isfinite(pos).all()):
            raise ValueError(f"'{name}' has non-finite coordinates")
        low, high = float(pos.min()), float(pos.max())
        if low < -DOMAIN_TOLERANCE or high > 1 + DOMAIN_TOLERANCE:
            raise ValueError(
                f"'{name}' must lie in the domain [0, 1]^d, got coordinates in [{low}, {high}]"
            )
    return pos.contiguous()


def _check_pair(pos_src: Tensor, pos_dst: Tensor) -> tuple[Tensor, Tensor]:
    pos_src = _check_pos(pos_src, "pos_src")
    pos_dst = _check_pos(pos_dst, "pos_dst")
    if pos_src.size(1) != pos_dst.size(1):
        raise ValueError(
            f"'pos_src' and 'pos_dst' must have the same dimension, got {pos_src.size(1)} and "
            f"{pos_dst.size(1)}"
        )
    if pos_src.device != pos_dst.device:
        raise ValueError(f"Points on different devices: {pos_src.device} and {pos_dst.device}")
    dtype = torch.promote_types(pos_src.dtype, pos_dst.dtype)
    return pos_src.to(dtype), pos_dst.to(dtype)


def _check_batch(batch: Tensor | None, pos: Tensor, name: str) -> Tensor | None:
    if batch is None:
        return None
    if batch.dim() != 1 or batch.numel() != pos.size(0):
        raise ValueError(
            f"'{name}' must be 1-D with one entry per point ({pos.size(0)}), got shape "
            f"{tuple(batch.shape)}"
        )
    if batch.dtype != torch.long:
        raise ValueError(f"'{name}' must be a LongTensor, got dtype={batch.dtype}")
    if batch.device != pos.device:
        raise ValueError(f"'{name}' is on {batch.device} but the points are on {pos.device}")
    if batch.numel() > 0:
        if int(batch.min()) < 0:
            raise ValueError(f"'{name}' has negative graph indices")
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(f"'{name}' must be sorted (as in a PyG Batch)")
    return batch.contiguous()


def _check_batch_pair(
    batch_src: Tensor | None, batch_dst: Tensor | None, pos_src: Tensor, pos_dst: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    if (batch_src is None) != (batch_dst is None):
        raise ValueError("Give both 'batch_src' and 'batch_dst' or neither")
    batch_src = _check_batch(batch_src, pos_src, "batch_src")
    batch_dst = _check_batch(batch_dst, pos_dst, "batch_dst")
    return batch_src, batch_dst
