r"""The inverse-distance estimator of :class:`pyg_infdiff.nn.GridPool` (:obj:`method="idw"`):
tie-inclusive :math:`k` nearest nodes of every grid point, and its fixed stencil on full
lattices that are multiples of the grid. Private: use :class:`~pyg_infdiff.nn.GridPool`."""
from __future__ import annotations

import torch
from torch import Tensor

from pyg_infdiff.graph import LatticeIndex, knn, lattice


def idw_stencil(
    shape: tuple[int, ...], grid_shape: tuple[int, ...], k: int, eps: float
) -> dict[tuple[int, ...], float] | None:
    r"""Weights of the fine pixels of one block, or :obj:`None` where the :math:`k`
    nearest pixels of a block centre are not all inside the block."""
    mult = [n // g for n, g in zip(shape, grid_shape, strict=True)]
    offsets = [
        (torch.arange(m, dtype=torch.float64) + 0.5 - m / 2) / n
        for m, n in zip(mult, shape, strict=True)
    ]
    grids = torch.meshgrid(*offsets, indexing="ij")
    dist = torch.stack([g.reshape(-1) for g in grids], -1).norm(dim=-1)
    if float(dist.min()) <= eps:  # odd multiples: the central pixel is a hit
        keep = (dist <= eps).nonzero().view(-1)
        w = torch.ones(keep.numel(), dtype=torch.float64)
    else:
        if dist.numel() < k:
            return None
        threshold = float(dist.sort().values[k - 1]) + eps
        escape = min((m / 2 + 0.5) / n for m, n in zip(mult, shape, strict=True))
        if threshold >= escape - eps:
            return None
        keep = (dist <= threshold).nonzero().view(-1)
        w = 1.0 / dist[keep].pow(2)
    w = w / w.sum()
    return {
        tuple(int(i) for i in torch.unravel_index(j, tuple(mult))): float(wj)
        for j, wj in zip(keep, w, strict=True)
    }


def idw_lattice_stencil(
    lattice_index: LatticeIndex | None,
    num_graphs: int,
    grid_shape: tuple[int, ...],
    k: int,
    eps: float,
) -> dict[tuple[int, ...], float] | None:
    r"""The stencil of :func:`idw_stencil` when :obj:`lattice_index` describes full lattices
    that are multiples of the grid, else :obj:`None`."""
    if (lattice_index is None or lattice_index.ndim != len(grid_shape)
            or lattice_index.num_graphs != num_graphs):
        return None
    if any(n % g != 0 for n, g in zip(lattice_index.shape, grid_shape, strict=True)):
        return None
    if not lattice_index.is_full():
        return None
    return idw_stencil(lattice_index.shape, grid_shape, k, eps)


def idw_pool_full_lattice(
    x: Tensor,
    lattice_index: LatticeIndex,
    grid_shape: tuple[int, ...],
    stencil: dict[tuple[int, ...], float],
) -> Tensor:
    r"""Applies a stencil of :func:`idw_stencil` by strided slicing."""
    b, c = lattice_index.num_graphs, x.size(-1)
    fine = x.reshape(b, lattice_index.num_pixels, c).transpose(1, 2)
    fine = fine.reshape(b, c, *lattice_index.shape)
    mult = [n // g for n, g in zip(lattice_index.shape, grid_shape, strict=True)]
    out = None
    for start, w in stencil.items():
        index = (slice(None), slice(None)) + tuple(
            slice(s, None, m) for s, m in zip(start, mult, strict=True)
        )
        term = fine[index] * w
        out = term if out is None else out + term
    return out


def idw_pool_knn(
    x: Tensor,
    pos: Tensor,
    batch: Tensor,
    num_graphs: int,
    counts: Tensor,
    grid_shape: tuple[int, ...],
    k: int,
    eps: float,
) -> Tensor:
    r"""The estimator by a neighbour search from every grid point."""
    if bool((batch[1:] < batch[:-1]).any()):  # neighbour search wants sorted batches
        perm = torch.argsort(batch, stable=True)
        x, pos, batch = x[perm], pos[perm], batch[perm]
    centres = lattice(grid_shape, device=pos.device, dtype=pos.dtype)
    num_cells = centres.size(0)
    pos_dst = centres.repeat(num_graphs, 1)
    batch_dst = torch.arange(num_graphs, device=pos.device).repeat_interleave(num_cells)
    src, dst, w = _weights(pos, pos_dst, batch, batch_dst, counts, len(grid_shape), k, eps)
    norm = torch.zeros(pos_dst.size(0), dtype=w.dtype, device=w.device).index_add_(0, dst, w)
    w = (w / norm[dst]).to(x.dtype)
    out = x.new_zeros(pos_dst.size(0), x.size(-1)).index_add_(0, dst, x[src] * w[:, None])
    out = out.view(num_graphs, num_cells, -1).transpose(1, 2)
    return out.reshape(num_graphs, -1, *grid_shape)


def _weights(
    pos: Tensor, pos_dst: Tensor, batch: Tensor, batch_dst: Tensor, counts: Tensor,
    ndim: int, k: int, eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Tie-inclusive :math:`k` nearest nodes (or the hits) of every centre and their
    unnormalised weights (float64)."""
    max_count = int(counts.max())
    k_query = min(k + 2**ndim, max_count)
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
        kth = dist[start + (found.clamp(max=k) - 1)]
        threshold = torch.where(nearest <= eps, eps, kth + eps)
        last = dist[start + found - 1]
        more = (found == k_query) & (last <= threshold) & (found < counts[batch_dst])
        if not bool(more.any()) or k_query >= max_count:
            break
        k_query = min(2 * k_query, max_count)
    keep = dist <= threshold[dst]
    src, dst, dist = src[keep], dst[keep], dist[keep]
    hit = (nearest <= eps)[dst]
    w = torch.where(hit, torch.ones_like(dist), 1.0 / dist.clamp_min(eps).pow(2))
    return src, dst, w
