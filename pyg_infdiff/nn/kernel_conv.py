r"""The integral-kernel operator layer of ∞-Diff, on radius graphs or on (masked) lattices."""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import OptTensor, PairTensor
from torch_geometric.utils import segment

from pyg_infdiff._validation import validation_enabled
from pyg_infdiff.graph.lattice import LatticeIndex, check_nodes
from pyg_infdiff.nn._edge_sum import edge_sum
from pyg_infdiff.nn.kernel import ContinuousKernel, bump_mean
from pyg_infdiff.nn.stencil import LatticeStencil, stencil_conv

#: The quadrature weights of :class:`KernelIntegralConv` (its ``normalization`` argument).
Normalization = Literal["window", "mean"]
#: The execution paths of :class:`KernelIntegralConv` (its ``path`` argument).
Path = Literal["auto", "graph", "dense"]
#: The lattice convolutions of the dense path (its ``dense_method`` argument).
DenseMethod = Literal["auto", "direct", "fft"]

# Seconds per edge x channel of the graph path with the kernel tabulated per lattice offset (the
# graph path that path="auto" weighs against the dense path), fused edge sum included; see
# DIRECT_COST in pyg_infdiff.nn.stencil for the measurement (bench/kernel_conv.py: 4.7e-9 at
# 128² / 4, 3.3e-9 over the radii of the crossover table, one thread).
GRAPH_COST = 5e-9
POS_TOL = 1e-6


class EdgeKernel(NamedTuple):
    r"""The values of a :class:`KernelIntegralConv`'s kernel on fixed edges and the
    normalisation of each target (:meth:`KernelIntegralConv.edge_kernel`).

    Args:
        kappa (torch.Tensor): The kernel of each edge, :math:`(E, C)` (depthwise) or
            :math:`(E, C_{out} C_{in})`.
        denom (torch.Tensor): The window weight sum (or neighbour count) of each target,
            :math:`(N, 1)`.
    """

    kappa: Tensor
    denom: Tensor


class KernelIntegralConv(MessagePassing):
    r"""The integral-kernel operator of ∞-Diff from the `"Infinite Resolution Diffusion with
    Subsampled Mollified States" <https://arxiv.org/abs/2303.18242>`_ paper (Bond-Taylor &
    Willcocks, ICLR 2024): a neural operator layer whose kernel is a continuous function of the
    offset in domain units, so the same weights act on any discretisation of a function.

    .. math::
        (\mathcal{K} v)(\mathbf{x}_i) = \mathbf{W} \,
        \frac{\sum_{j \in \mathcal{N}(i)} \kappa(\mathbf{x}_i - \mathbf{y}_j) \odot
        \mathbf{v}_j}{\sum_{j \in \mathcal{N}(i)} \omega_{ij}} + \mathbf{b}
        \approx \mathbf{W} \frac{\int_{B_r(\mathbf{x})} \kappa(\mathbf{x} - \mathbf{y})
        \odot v(\mathbf{y}) \, d\mathbf{y}}{\int_{B_r(0)} w} + \mathbf{b}

    with the :class:`~pyg_infdiff.nn.ContinuousKernel` :math:`\kappa` (zero, with all its
    derivatives, at :math:`|\delta| = r`) and, for :obj:`normalization="window"`, the fixed
    smooth window :math:`\omega_{ij} = w(\mathbf{x}_i - \mathbf{y}_j)`: a self-normalised
    quadrature that handles domain boundaries and uneven point densities and converges fast
    between discretisations (see ``docs/operator.md``). :obj:`normalization="mean"` uses
    :math:`\omega_{ij} = 1`, the plain neighbour mean. Nodes without neighbours get zero
    (plus bias). With :obj:`depthwise=True` the kernel has one value per input channel and
    :math:`\mathbf{W}` mixes channels; otherwise :math:`\kappa(\delta) \in
    \mathbb{R}^{C_{out} \times C_{in}}` acts as a matrix and there is no :math:`\mathbf{W}`.

    The caller supplies the neighbourhoods: :obj:`edge_index` should be a radius graph of radius
    :math:`r` *with self loops* (e.g. :func:`pyg_infdiff.graph.radius_graph` with
    :obj:`loop=True`), ``edge_index[0]`` the source :math:`j`, ``edge_index[1]`` the target
    :math:`i`. Edges longer than :math:`r` carry zero kernel and window weight (the window
    normalisation is unaffected by them; the mean counts them, so give it a graph of radius
    exactly :math:`r`). When the nodes are pixels of a lattice (full or subsampled, described
    by a :class:`~pyg_infdiff.graph.LatticeIndex` passed as :obj:`lattice`), the layer tabulates
    :math:`\kappa` once per lattice offset instead of evaluating it on every edge, or runs as a
    masked convolution, direct or by FFT (:math:`(\kappa * (v m)) / (w * m)` for the node mask
    :math:`m`), with the same numbers: its neighbour set is exactly that of
    ``torch_cluster.radius_graph`` (float32 squared distance strictly below :math:`r^2`, decided
    pair by pair at the border). :obj:`path="auto"` picks the cheaper of the two with a cost
    model measured by ``bench/kernel_conv.py`` (see ``docs/operator.md``).

    Initialisation gives outputs of variance close to 1 for smooth unit-variance inputs.

    **Host synchronisation.** Checks of values (coordinates in :math:`[0, 1]^d`, :obj:`pos`
    at the pixel centres of :obj:`lattice`) and the test whether the edges are sorted by
    target run only while :func:`pyg_infdiff.validation_enabled` (the default); without
    them the layer reads nothing back from the device and compiles without graph breaks.
    Depthwise kernels on a CPU are summed over edges in cache-sized chunks with a hand-written
    backward that keeps nothing per edge (2-7× faster than message passing, depending on the
    allocator; see ``docs/operator.md``). Otherwise edges sorted by target are summed by
    segments over CSR offsets (deterministic on every device); unsorted edges, and all edges
    while validation is off, by :meth:`index_add_` (atomic adds on CUDA).
    :class:`~pyg_infdiff.models.MultiscaleOperatorUNet` checks its inputs once and runs its
    layers with validation off.

    Args:
        in_channels (int): Input channels :math:`C_{in}`.
        out_channels (int): Output channels :math:`C_{out}`.
        radius (float): Kernel support radius :math:`r` in domain units.
        dim (int, optional): Dimension :math:`d` of the domain. (default: :obj:`2`)
        num_basis (int, optional): Radial basis functions of the kernel. (default: :obj:`8`)
        hidden_channels (int, optional): Hidden width of the kernel MLP. (default: :obj:`32`)
        depthwise (bool, optional): One kernel value per input channel followed by a linear
            channel mixing, instead of a full :math:`C_{out} \times C_{in}` kernel.
            (default: :obj:`True`)
        normalization (str, optional): :obj:`"window"` or :obj:`"mean"`.
            (default: :obj:`"window"`)
        bias (bool, optional): Add a learnable bias. (default: :obj:`True`)
        path (str, optional): :obj:`"graph"` (message passing, needs :obj:`edge_index`),
            :obj:`"dense"` (lattice convolution, needs :obj:`lattice`) or :obj:`"auto"` (the
            cheaper of the two by a measured cost model). (default: :obj:`"auto"`)
        dense_method (str, optional): :obj:`"direct"`, :obj:`"fft"` or :obj:`"auto"` (by
            kernel size) for the dense path. (default: :obj:`"auto"`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(N, C_{in})` or :math:`((N_s, C_{in}), (N_t, *))`
          if bipartite (target features are ignored and may be :obj:`None`), positions
          :math:`(N, d)` or :math:`((N_s, d), (N_t, d))` in :math:`[0, 1]^d`, edge indices
          :math:`(2, E)` (optional), :obj:`lattice` (optional, non-bipartite only)
        - **output:** :math:`(N, C_{out})` or :math:`(N_t, C_{out})` if bipartite
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        radius: float,
        *,
        dim: int = 2,
        num_basis: int = 8,
        hidden_channels: int = 32,
        depthwise: bool = True,
        normalization: Normalization = "window",
        bias: bool = True,
        path: Path = "auto",
        dense_method: DenseMethod = "auto",
        **kwargs,
    ) -> None:
        kwargs.setdefault("aggr", "sum")
        super().__init__(**kwargs)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Channels must be positive, got {in_channels} and {out_channels}")
        if not radius > 0 or not math.isfinite(radius):
            raise ValueError(f"'radius' must be positive and finite, got {radius}")
        if normalization not in ("window", "mean"):
            raise ValueError(f"'normalization' must be 'window' or 'mean', got {normalization!r}")
        if path not in ("auto", "graph", "dense"):
            raise ValueError(f"'path' must be 'auto', 'graph' or 'dense', got {path!r}")
        if dense_method not in ("auto", "direct", "fft"):
            raise ValueError(
                f"'dense_method' must be 'auto', 'direct' or 'fft', got {dense_method!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.radius = float(radius)
        self.dim = dim
        self.depthwise = depthwise
        self.normalization = normalization
        self.path = path
        self.dense_method = dense_method
        features = in_channels if depthwise else in_channels * out_channels
        # O(1) outputs for smooth inputs: the kernel's window-weighted mean has variance 1
        # (depthwise) or 1 / C_in (full); the count mean divides by the ball, not the window.
        gain = 1.0 if depthwise else 1.0 / math.sqrt(in_channels)
        if normalization == "mean":
            gain /= bump_mean(dim)
        self.kernel = ContinuousKernel(
            dim, features, radius, num_basis=num_basis, hidden_channels=hidden_channels, gain=gain
        )
        if depthwise:
            self.lin = torch.nn.Linear(in_channels, out_channels, bias=bias)
            self.register_parameter("bias", None)
        else:
            self.lin = None
            if bias:
                self.bias = torch.nn.Parameter(torch.empty(out_channels))
            else:
                self.register_parameter("bias", None)
        self._stencils: dict[tuple, LatticeStencil] = {}
        self._denominators: dict[tuple, Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        super().reset_parameters()
        self.kernel.reset_parameters()
        with torch.no_grad():
            if self.lin is not None:
                self.lin.weight.normal_(0.0, 1.0 / math.sqrt(self.in_channels))
                if self.lin.bias is not None:
                    self.lin.bias.zero_()
            if self.bias is not None:
                self.bias.zero_()

    def forward(
        self,
        x: Tensor | tuple[Tensor, OptTensor],
        pos: Tensor | PairTensor,
        edge_index: OptTensor = None,
        lattice: LatticeIndex | None = None,
        edge_kernel: EdgeKernel | None = None,
    ) -> Tensor:
        bipartite = isinstance(x, tuple) or isinstance(pos, tuple)
        x_src = x[0] if isinstance(x, tuple) else x
        pos_src, pos_dst = pos if isinstance(pos, tuple) else (pos, pos)
        self._check_nodes(x_src, pos_src, pos_dst)
        if edge_index is not None and (edge_index.dim() != 2 or edge_index.size(0) != 2):
            raise ValueError(f"'edge_index' must have shape [2, E], got {tuple(edge_index.shape)}")
        if lattice is not None and bipartite:
            raise ValueError("A 'lattice' cannot be used with bipartite (source, target) inputs")
        plan = "graph" if edge_kernel is not None else self.plan(edge_index, lattice)
        if edge_kernel is not None:  # the kernel on these edges, computed once before
            if edge_index is None or edge_kernel.kappa.size(0) != edge_index.size(1):
                raise ValueError("'edge_kernel' must come from edge_kernel() on the same "
                                 "'edge_index'")
            if self.depthwise:
                out = edge_sum(x_src, edge_kernel.kappa, edge_index[0], edge_index[1],
                               pos_dst.size(0))
            else:
                out = self.propagate(
                    edge_index, x=(x_src, None), kappa=edge_kernel.kappa, segment_ptr=None,
                    size=(x_src.size(0), pos_dst.size(0)))
            out = self._normalize(out, edge_kernel.denom)
        elif plan == "graph":
            out = self._graph(x_src, pos_src, pos_dst, edge_index, lattice)
        else:
            out = self._dense(x_src, pos_src, lattice, fft=plan == "fft")
        if self.lin is not None:
            return self.lin(out)
        return out if self.bias is None else out + self.bias

    def edge_kernel(self, pos: Tensor | PairTensor, edge_index: Tensor) -> EdgeKernel:
        r"""The kernel values on fixed edges and their normalisation, for :meth:`forward`
        with :obj:`edge_kernel`: they depend on the node positions and this layer's weights
        only, not on the features, so a loop over many inputs on the same nodes (a sampling
        run on a point set) computes them once instead of at every call.

        Args:
            pos (torch.Tensor or (torch.Tensor, torch.Tensor)): Node positions, or (source,
                target) positions.
            edge_index (torch.Tensor): The edges, :math:`(2, E)`.
        """
        pos_src, pos_dst = pos if isinstance(pos, tuple) else (pos, pos)
        src, dst = edge_index[0], edge_index[1]
        offset = pos_dst[dst] - pos_src[src]
        kappa = self.kernel(offset)
        if self.normalization == "window":
            weight = self.kernel.window(offset).unsqueeze(-1)
        else:
            weight = offset.new_ones(dst.numel(), 1)
        return EdgeKernel(kappa, self.aggregate(weight, dst, None, pos_dst.size(0)))

    def _check_nodes(self, x: Tensor, pos_src: Tensor, pos_dst: Tensor) -> None:
        if x.dim() != 2 or x.size(1) != self.in_channels:
            raise ValueError(
                f"Expected node features of shape [N, {self.in_channels}], got {tuple(x.shape)}"
            )
        if x.size(0) == 0 or pos_dst.size(0) == 0:
            raise ValueError(
                f"Empty graph: got {x.size(0)} source and {pos_dst.size(0)} target nodes"
            )
        for name, p in (("pos", pos_src), ("target pos", pos_dst)):
            if p.dim() != 2 or p.size(1) != self.dim:
                raise ValueError(f"Expected {name} of shape [N, {self.dim}], got {tuple(p.shape)}")
        if pos_src.size(0) != x.size(0):
            raise ValueError(f"Got {x.size(0)} node features but {pos_src.size(0)} positions")
        if validation_enabled():
            check_nodes(pos_src, name="pos", tol=POS_TOL)
            if pos_dst is not pos_src:
                check_nodes(pos_dst, name="target pos", tol=POS_TOL)

    def plan(self, edge_index: OptTensor = None, lattice: LatticeIndex | None = None) -> str:
        r"""How :meth:`forward` runs with these arguments: :obj:`"graph"` (message passing),
        :obj:`"direct"` or :obj:`"fft"` (dense path); raises :class:`ValueError` when neither
        path is possible."""
        if self.path == "graph" or (self.path == "auto" and lattice is None):
            if edge_index is None:
                raise ValueError(
                    "The graph path needs 'edge_index' (pass a 'lattice' for the dense path)"
                )
            return "graph"
        if lattice is None:
            raise ValueError("path='dense' needs a 'lattice' (a LatticeIndex of the nodes)")
        dense_cost, fft = self._dense_cost(lattice)
        if self.path == "auto" and edge_index is not None:
            width = self.in_channels if self.depthwise else self.in_channels * self.out_channels
            if GRAPH_COST * edge_index.size(1) * width < dense_cost:
                return "graph"
        return "fft" if fft else "direct"

    # ---------------------------------------------------------------- graph path
    def _graph(
        self,
        x: Tensor,
        pos_src: Tensor,
        pos_dst: Tensor,
        edge_index: Tensor,
        lattice: LatticeIndex | None,
    ) -> Tensor:
        num_dst = pos_dst.size(0)
        src, dst = edge_index[0], edge_index[1]
        # Radius graphs come sorted by target: then sum by segments over CSR offsets
        # (deterministic on every device; within 10-35% of index_add_, faster or slower with the
        # load: bench/sparse_backends.py, docs/operator.md). Knowing the order takes a read back
        # to the host, so only while validating; otherwise index_add_ (any order, no sync).
        # Depthwise kernels on a CPU: the fused sum (cache-sized chunks, or compiled loops for
        # large sums; no per-edge tensors kept for the backward; deterministic there), 2-7x
        # faster than message passing as chunks, 6-7x faster again as loops.
        fused = self.depthwise and x.device.type == "cpu"
        ptr = None
        if (not fused and validation_enabled() and dst.numel() > 0
                and bool((dst[1:] >= dst[:-1]).all())):
            bounds = torch.arange(num_dst + 1, device=dst.device, dtype=dst.dtype)
            ptr = torch.searchsorted(dst, bounds)  # CSR offsets without bincount (a CUDA sync)
        weight = tap = offset = None
        if lattice is not None:
            # Nodes on a lattice: offsets take few values, so tabulate the kernel once per
            # offset and gather per edge instead of evaluating the MLP on every edge.
            self._check_lattice(x, pos_src, lattice)
            st = self._stencil(lattice.shape, x)
            # the offset of every edge: once per forward pass for the layers that share the
            # edges and the stencil (divisions once per node, not per edge)
            tap = lattice.memo(("tap", st.shape, st.half), edge_index,
                               lambda: st.edge_taps(lattice.pixel, src, dst))
            table = F.pad(self.kernel(st.offset), (0, 0, 0, 1))
            if self.normalization == "window":
                weight = F.pad(self.kernel.window(st.offset), (0, 1))[tap].unsqueeze(-1)
        else:  # the offset of every edge, once, for the kernel and the window
            offset = pos_dst[dst] - pos_src[src]
            table = self.kernel(offset)
        if self.depthwise and ptr is None:  # elsewhere one chunk: index_add_, memory-lean
            out = edge_sum(x, table, src, dst, num_dst, tap=tap)
        else:
            out = self.propagate(
                edge_index,
                x=(x, None),
                kappa=table if tap is None else table.index_select(0, tap),
                segment_ptr=ptr,
                size=(x.size(0), num_dst),
            )
        if self.normalization == "window":
            if weight is None:
                weight = self.kernel.window(offset).unsqueeze(-1)
            denom = self.aggregate(weight, dst, ptr, num_dst)
        elif ptr is not None:
            denom = (ptr[1:] - ptr[:-1]).to(x.dtype).unsqueeze(-1)
        else:  # a count by index_add_: bincount reads its maximum back on CUDA
            ones = x.new_ones(dst.numel(), 1)
            denom = self.aggregate(ones, dst, None, num_dst)
        return self._normalize(out, denom)

    def message(self, x_j: Tensor, kappa: Tensor) -> Tensor:
        # kappa: the kernel of every edge, from the caller (tabulated per lattice offset, or
        # evaluated once on the edges' offsets), so the node positions are never gathered here
        if self.depthwise:
            return kappa * x_j
        kappa = kappa.view(-1, self.out_channels, self.in_channels)
        return torch.bmm(kappa, x_j.unsqueeze(-1)).squeeze(-1)

    def aggregate(
        self, inputs: Tensor, index: Tensor, segment_ptr: OptTensor, dim_size: int | None
    ) -> Tensor:
        if segment_ptr is not None:
            return segment(inputs, segment_ptr, reduce="sum")
        return inputs.new_zeros(dim_size, inputs.size(-1)).index_add_(0, index, inputs)

    @staticmethod
    def _normalize(num: Tensor, denom: Tensor) -> Tensor:
        positive = denom > 0
        return torch.where(positive, num / torch.where(positive, denom, 1.0), 0.0)

    # ---------------------------------------------------------------- dense path
    def _stencil(
        self, shape: tuple[int, ...], ref: Tensor, dtype: torch.dtype | None = None
    ) -> LatticeStencil:
        dtype = ref.dtype if dtype is None else dtype
        if torch.compiler.is_compiling():  # built in the graph: no cache mutated while traced
            return LatticeStencil(shape, self.radius, ref.device, dtype)
        key = (shape, ref.device, dtype)
        stencil = self._stencils.get(key)  # get, not `in` then []: a clear() may come between
        if stencil is None:
            if len(self._stencils) >= 16:
                self._stencils.clear()
            stencil = self._stencils[key] = LatticeStencil(shape, self.radius, ref.device, dtype)
        return stencil

    def _dense_cost(self, lattice: LatticeIndex) -> tuple[float, bool]:
        r"""Estimated seconds of the dense path and whether the FFT variant is the cheaper."""
        st = self._stencil(lattice.shape, lattice.pixel, torch.float32)
        width = self.in_channels if self.depthwise else self.in_channels * self.out_channels
        fft_width = width if self.depthwise else self.in_channels + self.out_channels + width
        direct, fft = st.costs(lattice.num_graphs, width, fft_width)
        if self.dense_method != "auto":
            return (fft, True) if self.dense_method == "fft" else (direct, False)
        return min(direct, fft), fft < direct

    def _check_lattice(self, x: Tensor, pos: Tensor, lattice: LatticeIndex) -> None:
        if lattice.ndim != self.dim or lattice.pixel.numel() != x.size(0):
            raise ValueError(
                f"The lattice ({lattice.ndim}-D, {lattice.pixel.numel()} nodes) does not match "
                f"the input ({self.dim}-D, {x.size(0)} nodes)"
            )
        if validation_enabled():
            check_nodes(pos, lattice=lattice, tol=POS_TOL)

    def _dense(self, x: Tensor, pos: Tensor, lattice: LatticeIndex, fft: bool) -> Tensor:
        self._check_lattice(x, pos, lattice)
        st = self._stencil(lattice.shape, x)
        kappa = self.kernel(st.offset)  # exactly zero outside the ball
        if self.depthwise:
            stencil = kappa.t().reshape(self.in_channels, 1, *st.box)
            groups = self.in_channels
        else:
            stencil = kappa.t().reshape(self.out_channels, self.in_channels, *st.box)
            groups = 1
        # Channels-last grids: node features [N, C] are already pixel-major, so a full lattice
        # is a view; torch's convolutions run faster on this layout than on a transposed copy.
        num_graphs, num_pixels, shape = lattice.num_graphs, lattice.num_pixels, lattice.shape
        flat = None if lattice.is_full() else lattice.flat_index()
        if flat is None:
            grid = x.reshape(num_graphs, *shape, x.size(1))
        else:
            grid = x.new_zeros(num_graphs * num_pixels, x.size(1)).index_copy(0, flat, x)
            grid = grid.view(num_graphs, *shape, x.size(1))
        num = stencil_conv(grid.movedim(-1, 1), stencil, st.half, groups, fft)
        num = num.movedim(1, -1).reshape(num_graphs * num_pixels, -1)
        if flat is None:
            mask = torch.ones(1, 1, *shape, dtype=x.dtype, device=x.device)
            denom = self._denominator(mask, st, fft, cache=True).reshape(1, num_pixels, 1)
            return (num.view(num_graphs, num_pixels, -1) / denom).view(x.size(0), -1)
        mask = x.new_zeros(num_graphs * num_pixels).index_fill(0, flat, 1.0)
        denom = self._denominator(mask.view(num_graphs, 1, *shape), st, fft, cache=False)
        return self._normalize(num[flat], denom.reshape(-1, 1)[flat])

    def _denominator(self, mask: Tensor, st: LatticeStencil, fft: bool, cache: bool) -> Tensor:
        r""":meth:`LatticeStencil.denominator`, cached for full lattices (no parameters)."""
        # Not under torch.compile (a constant of the graph there, no dict mutated while traced),
        # nor in inference mode (its tensors cannot be saved for a later backward).
        if torch.compiler.is_compiling():
            return st.denominator(mask, self.normalization, fft)
        cache = cache and not torch.is_inference_mode_enabled()
        key = (st.shape, mask.dtype, mask.device, fft, self.normalization)
        cached = self._denominators.get(key) if cache else None
        if cached is not None:
            return cached
        denom = st.denominator(mask, self.normalization, fft)
        if cache:
            if len(self._denominators) >= 16:
                self._denominators.clear()
            self._denominators[key] = denom
        return denom

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"radius={self.radius:.4f}, depthwise={self.depthwise}, "
            f"normalization='{self.normalization}')"
        )
