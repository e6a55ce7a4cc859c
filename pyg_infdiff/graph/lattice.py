r"""Lattices of pixel centres in the unit domain :math:`[0, 1]^d`, and the bookkeeping that
maps graph nodes back onto them.

Conventions (used throughout the library):

* A lattice of shape :math:`(n_1, \dots, n_d)` has its points at pixel centres
  :math:`u_i = (i + 0.5) / n`, one coordinate column per array axis, in array-axis order
  (for an image ``[C, H, W]``, ``pos[:, 0]`` is the row coordinate and ``pos[:, 1]`` the column
  coordinate).
* Nodes are numbered like ``image.reshape(C, -1)``: row-major (C order) flat pixel indices.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0:
        raise ValueError("A lattice needs at least one dimension, got shape=()")
    if any(n <= 0 for n in shape):
        raise ValueError(f"Lattice sizes must be positive, got shape={shape}")
    return shape


def lattice(
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Returns the pixel-centre coordinates of a lattice in :math:`[0, 1]^d`.

    .. math::
        \mathbf{u}_{\mathbf{i}} = \left(\frac{i_1 + 0.5}{n_1}, \dots,
        \frac{i_d + 0.5}{n_d}\right)

    Args:
        shape (Sequence[int]): The lattice size :math:`(n_1, \dots, n_d)`, any :math:`d \ge 1`.
        device (torch.device, optional): The device of the output. (default: :obj:`None`)
        dtype (torch.dtype, optional): The floating point type. (default: :obj:`torch.float32`)

    Shapes:
        - **output:** :math:`(\prod_k n_k, d)`, rows in row-major (C) order of the pixels.
    """
    shape = _check_shape(shape)
    axes = [(torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1).to(dtype)


def pixel_to_pos(
    pixel: Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Converts flat row-major pixel indices of a lattice to domain coordinates.

    Args:
        pixel (torch.Tensor): Flat pixel indices, shape :math:`(N,)`.
        shape (Sequence[int]): The lattice size :math:`(n_1, \dots, n_d)`.
        dtype (torch.dtype, optional): The floating point type. (default: :obj:`torch.float32`)

    Shapes:
        - **output:** :math:`(N, d)`
    """
    shape = _check_shape(shape)
    cols = []
    rest = pixel.long()
    for n in reversed(shape):
        cols.append(rest % n)
        rest = torch.div(rest, n, rounding_mode="floor")
    idx = torch.stack(cols[::-1], dim=-1).to(torch.float64)
    sizes = torch.tensor(shape, dtype=torch.float64, device=pixel.device)
    return ((idx + 0.5) / sizes).to(dtype)


@dataclass(frozen=True)
class LatticeIndex:
    r"""Says where the nodes of a batch of graphs sit on a common lattice.

    Every node ``n`` is the pixel ``pixel[n]`` (flat, row-major) of the lattice of shape
    :obj:`shape` that belongs to graph ``batch[n]``. Nodes may cover each lattice fully
    (sampling on a full grid) or partly (training on subsampled pixels); no pixel may appear
    twice in one graph. Layers use it to switch to dense (convolutional) execution, which gives
    the same numbers as message passing over radius edges.

    Args:
        shape (tuple[int, ...]): The lattice size :math:`(n_1, \dots, n_d)`.
        pixel (torch.Tensor): Flat pixel index of each node, shape :math:`(N,)`.
        batch (torch.Tensor): Graph index of each node, shape :math:`(N,)`.
        num_graphs (int): The number of graphs :math:`B` in the batch.
        known_full (bool, optional): Whether the nodes are known to be the full lattices in
            the order of :meth:`full` (:meth:`full` sets it); :obj:`None` means unknown:
            :meth:`is_full` then decides once and keeps the answer. (default: :obj:`None`)
    """

    shape: tuple[int, ...]
    pixel: Tensor
    batch: Tensor
    num_graphs: int
    known_full: bool | None = field(default=None, compare=False)
    _memo: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _check_shape(self.shape))
        if self.pixel.dim() != 1 or self.batch.shape != self.pixel.shape:
            raise ValueError(
                f"'pixel' and 'batch' must be 1-D of equal length, got {tuple(self.pixel.shape)}"
                f" and {tuple(self.batch.shape)}"
            )

    @classmethod
    def full(
        cls, shape: Sequence[int], num_graphs: int = 1, device: torch.device | str | None = None
    ) -> LatticeIndex:
        r"""The index of :obj:`num_graphs` full lattices, nodes in row-major order, graph after
        graph (the layout of ``images.reshape(B, C, -1).transpose(1, 2).reshape(-1, C)``)."""
        shape = _check_shape(shape)
        n = math.prod(shape)
        pixel = torch.arange(n, device=device).repeat(num_graphs)
        batch = torch.arange(num_graphs, device=device).repeat_interleave(n)
        return cls(shape, pixel, batch, num_graphs, known_full=True)

    @classmethod
    def from_data(cls, data) -> LatticeIndex:
        r"""Builds the index from a :class:`~torch_geometric.data.Data` or
        :class:`~torch_geometric.data.Batch` with attributes ``pixel`` (flat indices) and
        ``lattice_shape`` (shape :math:`(1, d)` per graph, :math:`(B, d)` once batched), as made
        by :class:`pyg_infdiff.graph.ImageToGraph`. All graphs must share one lattice shape."""
        shapes = data.lattice_shape.view(-1, data.lattice_shape.size(-1))
        if not bool((shapes == shapes[0]).all()):
            raise ValueError(
                "All graphs of a batch must share one lattice shape for a LatticeIndex, got "
                f"{shapes.unique(dim=0).tolist()}"
            )
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros_like(data.pixel)
        num_graphs = int(getattr(data, "num_graphs", 1) or 1)
        return cls(tuple(shapes[0].tolist()), data.pixel, batch, num_graphs)

    @property
    def ndim(self) -> int:
        r"""The dimension :math:`d` of the domain."""
        return len(self.shape)

    @property
    def num_pixels(self) -> int:
        r"""Pixels per lattice, :math:`\prod_k n_k`."""
        return math.prod(self.shape)

    @property
    def density(self) -> float:
        r"""The fraction of lattice pixels that are nodes (1.0 for full lattices)."""
        return self.pixel.numel() / max(self.num_graphs * self.num_pixels, 1)

    def flat_index(self) -> Tensor:
        r"""Index of each node into a flattened ``[B * prod(shape)]`` array."""
        return self.batch * self.num_pixels + self.pixel

    def is_full(self) -> bool:
        r"""Whether the nodes are exactly the full lattices in the order of :meth:`full`.

        Free when the node count says no, or when the answer is known (:obj:`known_full`, set by
        :meth:`full`); otherwise it compares the indices once (a read back to the host) and
        keeps the answer, so that layers may ask at every call."""
        if self.known_full is not None:
            return self.known_full
        if self.pixel.numel() != self.num_graphs * self.num_pixels:
            full = False
        else:
            expected = torch.arange(self.pixel.numel(), device=self.pixel.device)
            full = bool((self.flat_index() == expected).all())
        object.__setattr__(self, "known_full", full)  # frozen: the cache of a derived fact
        return full

    def memo(self, key: Hashable, owner: Tensor, compute: Callable[[], Tensor]) -> Tensor:
        r"""A value derived from these nodes and from :obj:`owner` (for example the stencil
        offset of every edge of an ``edge_index``), computed once and kept while this index
        lives: the layers of one forward pass that share the nodes and the edges share it. The
        value is recomputed when :obj:`key` comes with another :obj:`owner` object, and at
        every call under :func:`torch.compile` (no state changes while traced).

        Args:
            key (Hashable): What the value is, with what it depends on besides the nodes.
            owner (torch.Tensor): The tensor the value derives from (compared by identity).
            compute (Callable[[], torch.Tensor]): Computes the value.
        """
        if torch.compiler.is_compiling():
            return compute()
        hit = self._memo.get(key)
        if hit is not None and hit[0] is owner:
            return hit[1]
        value = compute()
        self._memo[key] = (owner, value)
        return value

    def pos(self, dtype: torch.dtype = torch.float32) -> Tensor:
        r"""The domain coordinates of the nodes, shape :math:`(N, d)`."""
        return pixel_to_pos(self.pixel, self.shape, dtype)

    def scatter(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Places node features on the lattices.

        Returns ``(grid, mask)`` with ``grid`` of shape :math:`(B, C, n_1, \dots, n_d)` (zero
        where there is no node) and ``mask`` of shape :math:`(B, 1, n_1, \dots, n_d)`
        (1 at nodes, 0 elsewhere), both of the dtype of :obj:`x`."""
        num_channels = x.size(-1)
        size = self.num_graphs * self.num_pixels
        flat = self.flat_index()
        grid = x.new_zeros(size, num_channels).index_copy(0, flat, x)
        mask = x.new_zeros(size).index_fill(0, flat, 1.0)
        grid = grid.view(self.num_graphs, self.num_pixels, num_channels).transpose(1, 2)
        grid = grid.reshape(self.num_graphs, num_channels, *self.shape)
        mask = mask.view(self.num_graphs, 1, *self.shape)
        return grid, mask

    def gather(self, grid: Tensor) -> Tensor:
        r"""Reads lattice values at the nodes: the inverse of :meth:`scatter`.

        Args:
            grid (torch.Tensor): Shape :math:`(B, C, n_1, \dots, n_d)`.

        Shapes:
            - **output:** :math:`(N, C)`
        """
        num_channels = grid.size(1)
        flat = grid.reshape(self.num_graphs, num_channels, self.num_pixels).transpose(1, 2)
        return flat.reshape(-1, num_channels)[self.flat_index()]


def check_nodes(
    pos: Tensor,
    batch: Tensor | None = None,
    num_graphs: int | None = None,
    lattice: LatticeIndex | None = None,
    *,
    name: str = "pos",
    graphs: str = "graphs",
    tol: float = 1e-6,
) -> None:
    r"""Checks the values of a batch of nodes, reading them back to the host in one transfer
    (one device synchronisation, whatever is checked): the coordinates lie in
    :math:`[0, 1]^d` (up to :obj:`tol`), the :obj:`batch` values in
    :math:`[0, B - 1]` when :obj:`num_graphs` :math:`= B` is given, and :obj:`pos` holds the
    pixel centres of :obj:`lattice` (up to :obj:`tol`) when it is given. Raises
    :class:`ValueError` stating the bad values. Shapes are the caller's to check.

    The layers, the model, the noise fields and the samplers call it where inputs enter, while
    :func:`pyg_infdiff.validation_enabled`.

    Args:
        pos (torch.Tensor): Coordinates, shape :math:`(N, d)`.
        batch (torch.Tensor, optional): Graph index of each node, shape :math:`(N,)`.
            (default: :obj:`None`)
        num_graphs (int, optional): The number of graphs :math:`B` that :obj:`batch` indexes.
            (default: :obj:`None`, not checked)
        lattice (LatticeIndex, optional): The lattice whose pixel centres :obj:`pos` must be.
            (default: :obj:`None`)
        name (str, optional): What to call :obj:`pos` in the message. (default: :obj:`"pos"`)
        graphs (str, optional): What the :obj:`num_graphs` entries are, in the message (e.g.
            ``"entries of 't'"`` where one time step per graph sets the count).
            (default: :obj:`"graphs"`)
        tol (float, optional): The tolerance in domain units. (default: :obj:`1e-6`)
    """
    if pos.numel() == 0:
        return
    values = [pos.min().double(), pos.max().double()]
    check_batch = batch is not None and batch.numel() > 0 and num_graphs is not None
    if check_batch:
        values += [batch.min().double().to(pos.device), batch.max().double().to(pos.device)]
    if lattice is not None:
        values.append((pos - lattice.pos(pos.dtype)).abs().max().double())
    low, high, *rest = torch.stack(values).tolist()
    if not (low >= -tol and high <= 1.0 + tol):
        raise ValueError(f"Coordinates must lie in [0, 1]^{pos.size(-1)} (tolerance {tol:g}), "
                         f"got {name} in [{low:.6g}, {high:.6g}]")
    if check_batch:
        first, last = int(rest[0]), int(rest[1])
        if first < 0 or last >= num_graphs:
            raise ValueError(f"'batch' values must lie in [0, {num_graphs - 1}] ({num_graphs} "
                             f"{graphs}), got values in [{first}, {last}]")
    if lattice is not None and not rest[-1] <= tol:
        raise ValueError("'pos' differs from the pixel centres of 'lattice' (see LatticeIndex)")
