r"""Pooling of graph nodes onto a fixed lattice and interpolation back to the nodes.

These two maps join the sparse operator layers (on the raw, possibly subsampled, nodes) to the
dense U-Net (on a fixed lattice) of the multiscale operator U-Net. Both follow the pixel-centre
convention of :mod:`pyg_infdiff.graph.lattice`: grid point :math:`\mathbf{j}` of a lattice of
shape :math:`(g_1, \dots, g_d)` sits at :math:`(\mathbf{j} + 0.5) / \mathbf{g}`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyg_infdiff.graph import LatticeIndex, knn, lattice


def _check_inputs(x: Tensor, pos: Tensor, batch: Tensor | None, ndim: int) -> Tensor:
    if x.dim() != 2 or pos.dim() != 2 or x.size(0) != pos.size(0):
        raise ValueError(
            f"Expected x [N, C] and pos [N, d] with equal N, got {tuple(x.shape)} and "
            f"{tuple(pos.shape)}"
        )
    if pos.size(1) != ndim:
        raise ValueError(f"Expected pos with {ndim} columns, got pos of shape {tuple(pos.shape)}")
    if x.size(0) == 0:
        raise ValueError("Cannot pool an empty set of nodes (N=0)")
    if batch is None:
        return pos.new_zeros(pos.size(0), dtype=torch.long)
    if batch.shape != (pos.size(0),):
        raise ValueError(
            f"'batch' must have shape [N]=[{pos.size(0)}], got {tuple(batch.shape)}"
        )
    return batch


class GridPool(nn.Module):
    r"""Pools node features onto a fixed lattice by inverse-distance weighting of the
    :math:`k` nearest nodes of the same graph, as the feature propagation of
    `"PointNet++" <https://arxiv.org/abs/1706.02413>`_.

    For the pixel centre :math:`\mathbf{u}_{\mathbf{j}}` of the lattice and the set
    :math:`\mathcal{N}_k(\mathbf{j})` of its :math:`k` nearest nodes in the same graph, at
    distances :math:`d_{ij} = \lVert \mathbf{p}_i - \mathbf{u}_{\mathbf{j}} \rVert`,

    .. math::
        \mathbf{y}_{\mathbf{j}} = \frac{\sum_{i \in \mathcal{N}_k(\mathbf{j})} w_{ij}\,
        \mathbf{x}_i}{\sum_{i \in \mathcal{N}_k(\mathbf{j})} w_{ij}}, \qquad
        w_{ij} = \frac{1}{d_{ij}^2}.

    Distances are resolved to :math:`\epsilon` (:obj:`eps`, domain units): a node within
    :math:`\epsilon` of the centre is a hit, and the centre then takes the mean of its hits
    (the value of the coinciding node, the limit of the formula); distances within
    :math:`\epsilon` of the :math:`k`-th are ties, all included in
    :math:`\mathcal{N}_k(\mathbf{j})`. Ties are common on lattices (the 4 nodes around the
    centre of a 2x2 block), and including them all makes the result well defined and
    independent of node order.

    **Fast path.** If :obj:`lattice` says that the nodes form full lattices whose shape is an
    integer multiple :math:`\mathbf{m}` of :obj:`grid_shape`, the same estimator is a fixed
    stencil inside each :math:`m_1 \times \dots \times m_d` block: the central pixel for odd
    :math:`\mathbf{m}` (a hit), the mean of the central :math:`2^d` pixels for even
    :math:`\mathbf{m}` when :math:`k \le 2^d`. It is applied by strided slicing instead of a
    neighbour search and gives the same numbers (up to float rounding). Where the :math:`k`
    nearest pixels of a centre are not inside its block, the neighbour search is used.

    Args:
        grid_shape (Sequence[int]): The lattice shape :math:`(g_1, \dots, g_d)`.
        k (int, optional): The number of nearest nodes. (default: :obj:`3`)
        eps (float, optional): The distance resolution :math:`\epsilon` (domain units).
            (default: :obj:`1e-6`)

    Shapes:
        - **input:** node features :math:`(N, C)`, positions :math:`(N, d)` in
          :math:`[0, 1]^d`, batch vector :math:`(N,)` (optional)
        - **output:** :math:`(B, C, g_1, \dots, g_d)`
    """

    def __init__(self, grid_shape: Sequence[int], k: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.grid_shape = tuple(int(g) for g in grid_shape)
        if len(self.grid_shape) == 0 or any(g <= 0 for g in self.grid_shape):
            raise ValueError(f"'grid_shape' must be non-empty and positive, got {grid_shape}")
        if k < 1:
            raise ValueError(f"'k' must be positive, got {k}")
        if eps <= 0:
            raise ValueError(f"'eps' must be positive, got {eps}")
        self.k = k
        self.eps = eps

    @property
    def ndim(self) -> int:
        r"""The dimension :math:`d` of the lattice."""
        return len(self.grid_shape)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
        lattice: LatticeIndex | None = None,
    ) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): Node features.
            pos (torch.Tensor): Node positions in :math:`[0, 1]^d`.
            batch (torch.Tensor, optional): Graph index of each node. (default: :obj:`None`)
            num_graphs (int, optional): The number of graphs :math:`B`; inferred from
                :obj:`batch` if :obj:`None`. (default: :obj:`None`)
            lattice (LatticeIndex, optional): Where the nodes sit on a lattice; enables the
                fast path for full lattices. It must describe :obj:`pos`.
                (default: :obj:`None`)
        """
        batch = _check_inputs(x, pos, batch, self.ndim)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1
        counts = torch.bincount(batch, minlength=num_graphs)
        if counts.numel() != num_graphs or bool((counts == 0).any()):
            raise ValueError(
                f"Every one of the {num_graphs} graphs needs at least one node, got node "
                f"counts {counts.tolist()}"
            )
        stencil = self._lattice_stencil(lattice, num_graphs)
        if stencil is not None:
            return self._pool_full_lattice(x, lattice, stencil)
        return self._pool_knn(x, pos, batch, num_graphs, counts)

    def _stencil(self, shape: tuple[int, ...]) -> dict[tuple[int, ...], float] | None:
        r"""Weights of the fine pixels of one block, or :obj:`None` where the :math:`k`
        nearest pixels of a block centre are not all inside the block."""
        mult = [n // g for n, g in zip(shape, self.grid_shape, strict=True)]
        offsets = [
            (torch.arange(m, dtype=torch.float64) + 0.5 - m / 2) / n
            for m, n in zip(mult, shape, strict=True)
        ]
        grids = torch.meshgrid(*offsets, indexing="ij")
        dist = torch.stack([g.reshape(-1) for g in grids], -1).norm(dim=-1)
        if float(dist.min()) <= self.eps:  # odd multiples: the central pixel is a hit
            keep = (dist <= self.eps).nonzero().view(-1)
            w = torch.ones(keep.numel(), dtype=torch.float64)
        else:
            if dist.numel() < self.k:
                return None
            threshold = float(dist.sort().values[self.k - 1]) + self.eps
            escape = min((m / 2 + 0.5) / n for m, n in zip(mult, shape, strict=True))
            if threshold >= escape - self.eps:
                return None
            keep = (dist <= threshold).nonzero().view(-1)
            w = 1.0 / dist[keep].pow(2)
        w = w / w.sum()
        return {
            tuple(int(i) for i in torch.unravel_index(j, tuple(mult))): float(wj)
            for j, wj in zip(keep, w, strict=True)
        }

    def _lattice_stencil(
        self, lattice: LatticeIndex | None, num_graphs: int
    ) -> dict[tuple[int, ...], float] | None:
        if lattice is None or lattice.ndim != self.ndim or lattice.num_graphs != num_graphs:
            return None
        if any(n % g != 0 for n, g in zip(lattice.shape, self.grid_shape, strict=True)):
            return None
        if not lattice.is_full():
            return None
        return self._stencil(lattice.shape)

    def _pool_full_lattice(
        self, x: Tensor, lattice: LatticeIndex, stencil: dict[tuple[int, ...], float]
    ) -> Tensor:
        b, c = lattice.num_graphs, x.size(-1)
        fine = x.reshape(b, lattice.num_pixels, c).transpose(1, 2).reshape(b, c, *lattice.shape)
        mult = [n // g for n, g in zip(lattice.shape, self.grid_shape, strict=True)]
        out = None
        for start, w in stencil.items():
            index = (slice(None), slice(None)) + tuple(
                slice(s, None, m) for s, m in zip(start, mult, strict=True)
            )
            term = fine[index] * w
            out = term if out is None else out + term
        return out

    def _pool_knn(
        self, x: Tensor, pos: Tensor, batch: Tensor, num_graphs: int, counts: Tensor
    ) -> Tensor:
        if bool((batch[1:] < batch[:-1]).any()):  # neighbour search wants sorted batches
            perm = torch.argsort(batch, stable=True)
            x, pos, batch = x[perm], pos[perm], batch[perm]
        centres = lattice(self.grid_shape, device=pos.device, dtype=pos.dtype)
        num_cells = centres.size(0)
        pos_dst = centres.repeat(num_graphs, 1)
        batch_dst = torch.arange(num_graphs, device=pos.device).repeat_interleave(num_cells)
        src, dst, w = self._weights(pos, pos_dst, batch, batch_dst, counts)
        norm = torch.zeros(pos_dst.size(0), dtype=w.dtype, device=w.device).index_add_(0, dst, w)
        w = (w / norm[dst]).to(x.dtype)
        out = x.new_zeros(pos_dst.size(0), x.size(-1)).index_add_(0, dst, x[src] * w[:, None])
        out = out.view(num_graphs, num_cells, -1).transpose(1, 2)
        return out.reshape(num_graphs, -1, *self.grid_shape)

    def _weights(
        self, pos: Tensor, pos_dst: Tensor, batch: Tensor, batch_dst: Tensor, counts: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Tie-inclusive :math:`k` nearest nodes (or the hits) of every centre and their
        unnormalised weights (float64)."""
        max_count = int(counts.max())
        k_query = min(self.k + 2**self.ndim, max_count)
        num_dst = pos_dst.size(0)
        while True:
            src, dst = knn(pos, pos_dst, k_query, batch, batch_dst)
            dist = (pos[src].double() - pos_dst[dst].double()).norm(dim=-1)
            order = torch.argsort(dist)
            order = order[torch.argsort(dst[order], stable=True)]
            src, dst, dist = src[order], dst[order], dist[order]
            found = torch.bincount(dst, minlength=num_dst)
            start = torch.cumsum(found, 0) - found
            nearest = dist[start]
            kth = dist[start + (found.clamp(max=self.k) - 1)]
            threshold = torch.where(nearest <= self.eps, self.eps, kth + self.eps)
            last = dist[start + found - 1]
            more = (found == k_query) & (last <= threshold) & (found < counts[batch_dst])
            if not bool(more.any()) or k_query >= max_count:
                break
            k_query = min(2 * k_query, max_count)
        keep = dist <= threshold[dst]
        src, dst, dist = src[keep], dst[keep], dist[keep]
        hit = (nearest <= self.eps)[dst]
        w = torch.where(hit, torch.ones_like(dist), 1.0 / dist.clamp_min(self.eps).pow(2))
        return src, dst, w

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(grid_shape={self.grid_shape}, k={self.k})"


class GridUnpool(nn.Module):
    r"""Interpolates a batch of lattices at arbitrary node positions by multilinear
    interpolation (bilinear for :math:`d = 2`, trilinear for :math:`d = 3`).

    With the pixel-centre convention, node position :math:`p` falls at the continuous index
    :math:`s = p\,g - 0.5` of an axis of size :math:`g`; :math:`s` is clamped to
    :math:`[0, g - 1]` (constant continuation at the borders) and

    .. math::
        \mathbf{y}_i = \sum_{\mathbf{c} \in \{0, 1\}^d} \prod_{k=1}^d
        \left(c_k \lambda_{ik} + (1 - c_k)(1 - \lambda_{ik})\right)
        \mathbf{G}_{b_i}[\lfloor \mathbf{s}_i \rfloor + \mathbf{c}],
        \qquad \boldsymbol{\lambda}_i = \mathbf{s}_i - \lfloor \mathbf{s}_i \rfloor,

    where :math:`b_i` is the graph of node :math:`i`. This equals
    :func:`torch.nn.functional.grid_sample` with :obj:`align_corners=False` and
    :obj:`padding_mode="border"`, for any :math:`d`, and reproduces functions that are affine
    in each coordinate exactly away from the border half-pixels.

    Shapes:
        - **input:** lattices :math:`(B, C, g_1, \dots, g_d)`, positions :math:`(N, d)` in
          :math:`[0, 1]^d`, batch vector :math:`(N,)` (optional)
        - **output:** :math:`(N, C)`
    """

    def forward(self, grid: Tensor, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        r"""
        Args:
            grid (torch.Tensor): The lattice values.
            pos (torch.Tensor): The node positions.
            batch (torch.Tensor, optional): Graph index of each node. (default: :obj:`None`)
        """
        if grid.dim() < 3:
            raise ValueError(f"Expected grid [B, C, *shape], got {tuple(grid.shape)}")
        num_graphs, channels, shape = grid.size(0), grid.size(1), tuple(grid.shape[2:])
        ndim = len(shape)
        if pos.dim() != 2 or pos.size(1) != ndim:
            raise ValueError(
                f"Expected pos [N, {ndim}] for a grid of shape {tuple(grid.shape)}, "
                f"got {tuple(pos.shape)}"
            )
        if batch is None:
            batch = pos.new_zeros(pos.size(0), dtype=torch.long)
        elif batch.shape != (pos.size(0),):
            raise ValueError(f"'batch' must have shape [{pos.size(0)}], got {tuple(batch.shape)}")
        if batch.numel() > 0 and int(batch.max()) >= num_graphs:
            raise ValueError(
                f"'batch' refers to graph {int(batch.max())} but the grid holds {num_graphs}"
            )
        num_cells = math.prod(shape)
        flat = grid.reshape(num_graphs, channels, num_cells).transpose(1, 2)
        flat = flat.reshape(num_graphs * num_cells, channels)
        sizes = torch.tensor(shape, device=pos.device, dtype=pos.dtype)
        s = (pos * sizes - 0.5).clamp(min=torch.zeros_like(sizes), max=sizes - 1)
        lower = s.floor().clamp(max=sizes - 2).clamp(min=0)
        frac = (s - lower).to(grid.dtype)
        lower = lower.long()
        upper = torch.minimum(lower + 1, sizes.long() - 1)
        strides = torch.tensor(
            [math.prod(shape[k + 1:]) for k in range(ndim)], device=pos.device
        )
        base = batch * num_cells
        out = grid.new_zeros(pos.size(0), channels)
        for corner in itertools.product((0, 1), repeat=ndim):
            mask = torch.tensor(corner, device=pos.device, dtype=torch.bool)
            index = torch.where(mask, upper, lower)
            weight = torch.where(mask, frac, 1 - frac).prod(dim=-1)
            out = out + weight[:, None] * flat[base + (index * strides).sum(-1)]
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"
