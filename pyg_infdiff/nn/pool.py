r"""Pooling of graph nodes onto a fixed lattice and interpolation back to the nodes.

These two maps join the sparse operator layers (on the raw, possibly subsampled, nodes) to the
dense U-Net (on a fixed lattice) of the multiscale operator U-Net. Both follow the pixel-centre
convention of :mod:`pyg_infdiff.graph.lattice`: grid point :math:`\mathbf{j}` of a lattice of
shape :math:`(g_1, \dots, g_d)` sits at :math:`(\mathbf{j} + 0.5) / \mathbf{g}`.

:class:`GridUnpool` is multilinear interpolation: node :math:`i` reads the lattice through the
tent (hat) functions :math:`\Lambda_{\mathbf{j}}` (:func:`multilinear_weights`).
:class:`GridPool` with :obj:`method="tent"` is its transpose, normalised: grid point
:math:`\mathbf{j}` takes the :math:`\Lambda_{\mathbf{j}}`-weighted average of the nodes, a
quadrature of one window integral of the function whatever the nodes are (full lattices of any
resolution, random subsets). :obj:`method="idw"` is the inverse-distance interpolation of the
official model.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from pyg_infdiff._validation import validation_enabled
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.nn._idw import (
    idw_lattice_stencil,
    idw_pool_full_lattice,
    idw_pool_knn,
    idw_stencil,
)

PoolMethod = Literal["tent", "box", "idw"]
POOL_METHODS: tuple[str, ...] = ("tent", "box", "idw")


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


def _strides(shape: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor([math.prod(shape[k + 1:]) for k in range(len(shape))], device=device)


def multilinear_weights(pos: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    r"""The :math:`2^d` lattice points around each position and their multilinear
    interpolation weights :math:`\Lambda_{\mathbf{j}}(\mathbf{p}_i)`, as used by
    :class:`GridUnpool` (and, transposed, by :class:`GridPool` with :obj:`method="tent"`).

    With :math:`\mathbf{s} = \mathbf{p} \odot \mathbf{g} - 0.5` clamped to
    :math:`[0, g_k - 1]` per axis (constant continuation in the border half-pixels), the
    weights are products of :math:`1 - |s_k - j_k|` and sum to one for every position.

    Args:
        pos (torch.Tensor): Positions in :math:`[0, 1]^d`.
        shape (Sequence[int]): The lattice shape :math:`(g_1, \dots, g_d)`.

    Shapes:
        - **output:** flat row-major lattice indices :math:`(N, 2^d)` and weights
          :math:`(N, 2^d)` (dtype of :obj:`pos`); corners in :func:`itertools.product` order.
    """
    shape = tuple(int(g) for g in shape)
    sizes = torch.tensor(shape, device=pos.device, dtype=pos.dtype)
    s = (pos * sizes - 0.5).clamp(min=torch.zeros_like(sizes), max=sizes - 1)
    lower = s.floor().clamp(max=sizes - 2).clamp(min=0)
    frac = s - lower
    lower = lower.long()
    upper = torch.minimum(lower + 1, sizes.long() - 1)
    corners = torch.tensor(list(itertools.product((0, 1), repeat=len(shape))),
                           dtype=torch.bool, device=pos.device)
    index = torch.where(corners, upper[:, None], lower[:, None])
    weight = torch.where(corners, frac[:, None], 1 - frac[:, None]).prod(dim=-1)
    return (index * _strides(shape, pos.device)).sum(-1), weight


def _box_weights(pos: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    sizes = torch.tensor(shape, device=pos.device, dtype=pos.dtype)
    cell = (pos * sizes).floor().clamp(min=torch.zeros_like(sizes), max=sizes - 1).long()
    index = (cell * _strides(shape, pos.device)).sum(-1, keepdim=True)
    return index, torch.ones_like(index, dtype=pos.dtype)


def _widen(t: Tensor, dilation: int) -> Tensor:
    r"""Binomial smoothing :math:`(1, 2, 1) / 4` along every lattice axis of :math:`(B, C,
    g_1, \dots, g_d)`, taps :obj:`dilation` apart, zero outside the lattice."""
    for axis in range(2, t.dim()):
        n = t.size(axis)
        if dilation >= n:
            continue
        pad = list(t.shape)
        pad[axis] = dilation
        zeros = t.new_zeros(pad)
        ahead = torch.cat([t.narrow(axis, dilation, n - dilation), zeros], dim=axis)
        behind = torch.cat([zeros, t.narrow(axis, 0, n - dilation)], dim=axis)
        t = 0.5 * t + 0.25 * (ahead + behind)
    return t


class GridPool(nn.Module):
    r"""Pools node features onto a fixed lattice: a normalised window average of the nodes
    (:obj:`method="tent"` or :obj:`"box"`), or inverse-distance weighting of the :math:`k`
    nearest nodes of the same graph (:obj:`method="idw"`, the feature propagation of
    `"PointNet++" <https://arxiv.org/abs/1706.02413>`_, as in the official ∞-Diff model).

    **Window average** (:obj:`"tent"`, :obj:`"box"`). For the nodes :math:`i` of one graph,

    .. math::
        \mathbf{y}_{\mathbf{j}} = \frac{\sum_i \Lambda_{\mathbf{j}}(\mathbf{p}_i)\,
        \mathbf{x}_i}{\sum_i \Lambda_{\mathbf{j}}(\mathbf{p}_i)}
        \;\approx\; \frac{\int \Lambda_{\mathbf{j}}(\mathbf{u})\, x(\mathbf{u})\,
        d\mathbf{u}}{\int \Lambda_{\mathbf{j}}(\mathbf{u})\, d\mathbf{u}},
        \qquad \Lambda_{\mathbf{j}}(\mathbf{p}) = \prod_{k=1}^d
        \max\left(0, 1 - |p_k g_k - 0.5 - j_k|\right)

    for :obj:`"tent"`: the multilinear hat function of grid point :math:`\mathbf{j}`
    (support :math:`2^d` cells), exactly the weights with which :class:`GridUnpool` reads
    the lattice at :math:`\mathbf{p}_i`, so that the numerator is the transpose of
    :class:`GridUnpool` and :class:`GridUnpool` is the matching unpooling. In the border
    half-cells the weights follow :class:`GridUnpool`'s clamping, which is the hat reflected
    at the face of the domain (the mollifier's reflecting boundary): exact for functions
    with zero slope across the face; for a slope :math:`a` across it, the border values
    read the function :math:`1/24` of a cell inside (an error of :math:`a / (24 g)` on
    fine lattices). :obj:`"box"` takes
    :math:`\Lambda_{\mathbf{j}}` the indicator of cell :math:`\mathbf{j}` (the cell average).
    Numerator and denominator are quadratures over the same nodes, so the node density
    cancels: full lattices of any resolution (any multiple of the grid or not) and random
    subsets estimate the same integral, exactly for constants, and for functions affine in
    each coordinate inside the domain on lattices that are multiples of the grid. Each node
    scatters to its :math:`2^d` surrounding grid points (:math:`O(N 2^d)`, no neighbour
    search); sums accumulate in at least float32.

    **Empty windows.** Where no node of a graph falls in the support of
    :math:`\Lambda_{\mathbf{j}}` (sparse subsets: 1.4% of the grid points for a 32² lattice at
    rate 4 pooled onto 16², about 4 nodes per tent), numerator and denominator are widened
    together by binomial :math:`(1, 2, 1)/4` smoothing along every axis with taps
    :math:`1, 2, 4, \dots` grid cells apart, until the window holds a node. A graph with at
    least one node fills every grid point. The number of widening steps is fixed by the grid
    (:math:`\lceil \log_2 \max_k g_k \rceil`, after which a window spans the whole grid),
    each applied only where the window is still empty, so the layer never reads back from the
    device whether a window is empty; full lattices at least as fine as the grid (a
    :obj:`lattice` that says so) skip it, as their windows are never empty.

    **Inverse distance** (:obj:`"idw"`). For the pixel centre :math:`\mathbf{u}_{\mathbf{j}}`
    and the set :math:`\mathcal{N}_k(\mathbf{j})` of its :math:`k` nearest nodes in the same
    graph, at distances :math:`d_{ij} = \lVert \mathbf{p}_i - \mathbf{u}_{\mathbf{j}} \rVert`,

    .. math::
        \mathbf{y}_{\mathbf{j}} = \frac{\sum_{i \in \mathcal{N}_k(\mathbf{j})} w_{ij}\,
        \mathbf{x}_i}{\sum_{i \in \mathcal{N}_k(\mathbf{j})} w_{ij}}, \qquad
        w_{ij} = \frac{1}{d_{ij}^2}.

    This is a point value near the centre, not a window integral: on random nodes it is a
    noisy value of the nearest nodes, on a full lattice twice the grid the mean of a
    :math:`2 \times 2` block, on one four times the grid the central :math:`2 \times 2` of
    a :math:`4 \times 4` block, so it estimates a different quantity at each
    discretisation. Distances are resolved to :math:`\epsilon` (:obj:`eps`, domain units): a
    node within :math:`\epsilon` of the centre is a hit, and the centre then takes the mean
    of its hits (the value of the coinciding node, the limit of the formula); distances
    within :math:`\epsilon` of the :math:`k`-th are ties, all included in
    :math:`\mathcal{N}_k(\mathbf{j})`. Ties are common on lattices (the 4 nodes around the
    centre of a 2x2 block), and including them all makes the result well defined and
    independent of node order. If :obj:`lattice` says that the nodes form full lattices
    whose shape is an integer multiple :math:`\mathbf{m}` of :obj:`grid_shape`, the same
    estimator is a fixed stencil inside each block (the central pixel for odd
    :math:`\mathbf{m}`, the mean of the central :math:`2^d` pixels for even
    :math:`\mathbf{m}` when :math:`k \le 2^d`), applied by strided slicing instead of a
    neighbour search with the same numbers; where the :math:`k` nearest pixels of a centre
    are not inside its block, the neighbour search is used.

    Args:
        grid_shape (Sequence[int]): The lattice shape :math:`(g_1, \dots, g_d)`.
        k (int, optional): The number of nearest nodes of :obj:`"idw"`. (default: :obj:`3`)
        eps (float, optional): The distance resolution :math:`\epsilon` of :obj:`"idw"`
            (domain units). (default: :obj:`1e-6`)
        method (str, optional): :obj:`"tent"`, :obj:`"box"` or :obj:`"idw"`.
            :class:`~pyg_infdiff.models.MultiscaleOperatorUNet` takes it from
            :obj:`UNetConfig.pool`. (default: :obj:`"tent"`)

    Shapes:
        - **input:** node features :math:`(N, C)`, positions :math:`(N, d)` in
          :math:`[0, 1]^d`, batch vector :math:`(N,)` (optional)
        - **output:** :math:`(B, C, g_1, \dots, g_d)`, dtype of the node features
    """

    def __init__(
        self,
        grid_shape: Sequence[int],
        k: int = 3,
        eps: float = 1e-6,
        method: PoolMethod = "tent",
    ) -> None:
        super().__init__()
        self.grid_shape = tuple(int(g) for g in grid_shape)
        if len(self.grid_shape) == 0 or any(g <= 0 for g in self.grid_shape):
            raise ValueError(f"'grid_shape' must be non-empty and positive, got {grid_shape}")
        if k < 1:
            raise ValueError(f"'k' must be positive, got {k}")
        if eps <= 0:
            raise ValueError(f"'eps' must be positive, got {eps}")
        if method not in POOL_METHODS:
            raise ValueError(f"'method' must be one of {POOL_METHODS}, got {method!r}")
        self.k = k
        self.eps = eps
        self.method = method

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
                fast path of :obj:`"idw"` for full lattices (the window averages need none).
                It must describe :obj:`pos`. (default: :obj:`None`)
        """
        batch = _check_inputs(x, pos, batch, self.ndim)
        if num_graphs is None:  # a read back to the host: pass num_graphs to avoid it
            num_graphs = int(batch.max()) + 1
        if validation_enabled():
            counts = torch.bincount(batch, minlength=num_graphs)
            if counts.numel() != num_graphs or bool((counts == 0).any()):
                raise ValueError(
                    f"Every one of the {num_graphs} graphs needs at least one node, got node "
                    f"counts {counts.tolist()}"
                )
        if self.method != "idw":
            dense = lattice is not None and lattice.is_full() and all(
                n >= g for n, g in zip(lattice.shape, self.grid_shape, strict=True))
            return self._pool_window(x, pos, batch, num_graphs, fill=not dense)
        # The inverse-distance pool searches neighbours (torch_cluster) and reads node counts
        # back to the host: it is the official model's pooling, kept for saved configurations.
        counts = torch.bincount(batch, minlength=num_graphs)
        stencil = idw_lattice_stencil(lattice, num_graphs, self.grid_shape, self.k, self.eps)
        if stencil is not None:
            return idw_pool_full_lattice(x, lattice, self.grid_shape, stencil)
        return idw_pool_knn(x, pos, batch, num_graphs, counts, self.grid_shape, self.k, self.eps)

    def _pool_window(self, x: Tensor, pos: Tensor, batch: Tensor, num_graphs: int,
                     fill: bool = True) -> Tensor:
        acc = torch.promote_types(x.dtype, torch.float32)
        pos = pos.to(torch.promote_types(pos.dtype, torch.float32))
        if self.method == "tent":
            index, weight = multilinear_weights(pos, self.grid_shape)
        else:
            index, weight = _box_weights(pos, self.grid_shape)
        num_cells = math.prod(self.grid_shape)
        index = index + (batch * num_cells)[:, None]
        weight = weight.to(acc)
        xs = x.to(acc)
        num = xs.new_zeros(num_graphs * num_cells, x.size(-1))
        den = xs.new_zeros(num_graphs * num_cells)
        for c in range(index.size(1)):
            num.index_add_(0, index[:, c], xs * weight[:, c, None])
            den.index_add_(0, index[:, c], weight[:, c])
        num = num.view(num_graphs, num_cells, -1).transpose(1, 2)
        num = num.reshape(num_graphs, -1, *self.grid_shape)
        den = den.view(num_graphs, 1, *self.grid_shape)
        if not fill:  # no empty window: the plain ratio
            return (num / den).to(x.dtype)
        return self._fill_empty(num, den).to(x.dtype)

    def _fill_empty(self, num: Tensor, den: Tensor) -> Tensor:
        r""":math:`\text{num} / \text{den}`, widening both where the window is empty.

        Widening with taps :math:`1, 2, \dots, 2^{k-1}` cells apart reaches every offset
        below :math:`2^k` along each axis (the binomial weights are positive there), so
        :math:`k = \lceil \log_2 \max_a g_a \rceil` steps fill every grid point of a graph
        with a node. All :math:`k` steps run (no read back of whether a window is still empty:
        no host synchronisation, one compiled graph); each changes only the empty points."""
        filled = den > 0
        out = num / torch.where(filled, den, torch.ones_like(den))  # finite gradients
        dilation = 1
        while dilation < max(self.grid_shape):  # a fixed number of steps, from the grid only
            num, den = _widen(num, dilation), _widen(den, dilation)
            now = den > 0
            wide = num / torch.where(now, den, torch.ones_like(den))
            out = torch.where(filled, out, wide)
            filled = filled | now
            dilation *= 2
        return out

    def _stencil(self, shape: tuple[int, ...]) -> dict[tuple[int, ...], float] | None:
        r"""The fixed :obj:`"idw"` weights of the fine pixels of one block of a full lattice
        of shape :obj:`shape`, or :obj:`None` where the neighbour search is needed."""
        return idw_stencil(shape, self.grid_shape, self.k, self.eps)

    def __repr__(self) -> str:
        if self.method == "idw":
            return f"{self.__class__.__name__}(grid_shape={self.grid_shape}, k={self.k})"
        return f"{self.__class__.__name__}(grid_shape={self.grid_shape}, method={self.method!r})"


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

    where :math:`b_i` is the graph of node :math:`i`: the lattice read through the tent
    functions :math:`\Lambda_{\mathbf{j}}`
    (:func:`~pyg_infdiff.nn.pool.multilinear_weights`). This equals
    :func:`torch.nn.functional.grid_sample` with :obj:`align_corners=False` and
    :obj:`padding_mode="border"`, for any :math:`d`, and reproduces functions that are affine
    in each coordinate exactly away from the border half-pixels. It is the transpose of
    :class:`GridPool` with :obj:`method="tent"` before that normalises, so the two form the
    matching pair: pooling averages with the tents that unpooling interpolates with.

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
        if validation_enabled() and batch.numel() > 0:
            last = int(batch.max())
            if last >= num_graphs:
                raise ValueError(f"'batch' refers to graph {last} but the grid holds {num_graphs}")
        num_cells = math.prod(shape)
        flat = grid.reshape(num_graphs, channels, num_cells).transpose(1, 2)
        flat = flat.reshape(num_graphs * num_cells, channels)
        index, weight = multilinear_weights(pos, shape)
        index = index + (batch * num_cells)[:, None]
        weight = weight.to(grid.dtype)
        out = grid.new_zeros(pos.size(0), channels)
        for c in range(index.size(1)):
            out = out + weight[:, c, None] * flat[index[:, c]]
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"
