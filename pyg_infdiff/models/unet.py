r"""The multiscale operator U-Net of ∞-Diff: sparse operator blocks on the raw nodes, a dense
U-Net on a fixed lattice in the middle. Composition of :mod:`pyg_infdiff.nn` only."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.typing import OptTensor

from pyg_infdiff._validation import validation, validation_enabled
from pyg_infdiff.graph import LatticeIndex, check_nodes, context_graph, radius_graph
from pyg_infdiff.models.config import UNetConfig
from pyg_infdiff.nn.dense import (
    Downsample,
    GridConv,
    ResBlock,
    SelfAttention,
    Upsample,
    conv_nd,
    group_norm,
)
from pyg_infdiff.nn.embedding import TimeEmbedding
from pyg_infdiff.nn.kernel_conv import EdgeKernel
from pyg_infdiff.nn.operator_block import OperatorBlock
from pyg_infdiff.nn.pool import GridPool, GridUnpool
from pyg_infdiff.nn.spectral import fit_modes


@torch.compiler.disable
def _radius_edges(pos: Tensor, radius: float, batch: Tensor) -> Tensor:
    # The one graph break of a compiled forward, on purpose: torch_cluster's neighbour search
    # cannot be traced (no meta kernel; its output size depends on the data), so it runs eagerly
    # between two graphs. Passing edge_index (GraphCollator(radius=...) does) or a full lattice
    # avoids it: the forward is then one graph (tests/models/test_compile.py).
    return radius_graph(pos, radius, batch, loop=True)


def num_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    r"""The number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class _Lattices:
    r"""The convolutions of a dense U-Net's levels (:data:`~pyg_infdiff.nn.dense.GridConv`)
    and, for spectral ones, the modes that the lattices of the levels hold
    (:func:`~pyg_infdiff.nn.spectral.fit_modes`; each level halves the last, rounding up)."""

    def __init__(self, grid_conv: GridConv, modes: int,
                 grid_shape: tuple[int, ...] | None, levels: int) -> None:
        if grid_conv == "spectral" and grid_shape is None:
            raise ValueError("A spectral dense U-Net needs 'grid_shape' (the lattice it runs "
                             "on) to fit the modes of each level")
        self.grid_conv, self.modes = grid_conv, modes
        self.sizes = [tuple(grid_shape or ())]
        for _ in range(levels - 1):
            self.sizes.append(tuple((n + 1) // 2 for n in self.sizes[-1]))

    def at(self, *levels: int) -> dict:
        r"""The keyword arguments of a block on (or between) the lattices of :obj:`levels`."""
        modes = (None if self.grid_conv == "conv"
                 else fit_modes(self.modes, *(self.sizes[lv] for lv in levels)))
        return {"grid_conv": self.grid_conv, "modes": modes}


def _stage(in_ch: int, out_ch: int, level: int, attention_levels: tuple[int, ...],
           time_ch: int, ndim: int, heads: int, dropout: float,
           lattices: _Lattices) -> nn.ModuleList:
    r"""One stage of a dense level: a :class:`ResBlock`, and :class:`SelfAttention` at the
    attention levels."""
    layers = [ResBlock(in_ch, out_ch, time_ch, ndim, dropout, **lattices.at(level))]
    if level in attention_levels:
        layers.append(SelfAttention(out_ch, heads))
    return nn.ModuleList(layers)


def _run_stage(stage: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
    r"""Runs the layers of a stage, giving the time (or condition) embedding to the
    :class:`ResBlock` s."""
    for layer in stage:
        h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
    return h


def _down_path(channels: int, channel_mults: tuple[int, ...], num_res_blocks: int,
               attention_levels: tuple[int, ...], time_channels: int, ndim: int,
               num_heads: int, dropout: float, lattices: _Lattices | None = None,
               ) -> tuple[nn.ModuleList, nn.ModuleList, list[int]]:
    r"""The down path (stages and :class:`Downsample` s) and the middle block (ResBlock,
    attention, ResBlock) of a DDPM-style dense U-Net, shared by :class:`DenseUNet` and the
    encoder of functions (which keeps :math:`3^d` convolutions: :obj:`lattices` :obj:`None`);
    returns them with the widths of the skips (the last is the width of the middle block)."""
    lattices = lattices or _Lattices("conv", 0, None, len(channel_mults))
    down = nn.ModuleList()
    skip_widths, width = [channels], channels
    for level, mult in enumerate(channel_mults):
        for _ in range(num_res_blocks):
            down.append(_stage(width, channels * mult, level, attention_levels, time_channels,
                               ndim, num_heads, dropout, lattices))
            width = channels * mult
            skip_widths.append(width)
        if level < len(channel_mults) - 1:
            down.append(Downsample(width, ndim, **lattices.at(level, level + 1)))
            skip_widths.append(width)
    last = len(channel_mults) - 1
    mid = nn.ModuleList([
        ResBlock(width, width, time_channels, ndim, dropout, **lattices.at(last)),
        SelfAttention(width, num_heads),
        ResBlock(width, width, time_channels, ndim, dropout, **lattices.at(last)),
    ])
    return down, mid, skip_widths


def _cell_centres(x: Tensor) -> Tensor:
    r"""The coordinates :math:`(j + \frac{1}{2}) / n` of the cells of a lattice batch
    :math:`(B, C, n_1, \dots, n_d)`, as :math:`(B, d, n_1, \dots, n_d)`."""
    axes = [(torch.arange(n, device=x.device, dtype=x.dtype) + 0.5) / n for n in x.shape[2:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return grid.unsqueeze(0).expand(x.size(0), *grid.shape)


class DenseUNet(nn.Module):
    r"""A time-conditioned convolutional U-Net on a lattice (DDPM layout): per level
    :obj:`num_res_blocks` :class:`~pyg_infdiff.nn.dense.ResBlock` (plus
    :class:`~pyg_infdiff.nn.dense.SelfAttention` at the attention levels) and a
    :class:`~pyg_infdiff.nn.dense.Downsample`; a middle block (ResBlock, attention,
    ResBlock); the mirrored up path with skip concatenations and
    :class:`~pyg_infdiff.nn.dense.Upsample` to the size of the skip (odd sizes work).

    With :obj:`grid_conv="spectral"` (the official code's ``conv_type="spectral"``), the
    :math:`3^d` convolutions of the residual blocks and the down- and upsampling become
    :class:`~pyg_infdiff.nn.SpectralConv` s, with :obj:`spectral_modes` modes per axis, or
    fewer on a level whose lattice holds fewer (:func:`~pyg_infdiff.nn.spectral.fit_modes`:
    14², 7², 4² levels keep 4, 4, 2 of the default 4); the input and output convolutions
    become pointwise, the input one also reading the :math:`d` coordinates of the cells, as
    the official model's ``fc0``, ``fc1`` (a spectral convolution treats the lattice as
    periodic, so it does not see where the borders are). The 1×1 skips of the residual
    blocks and the attention are unchanged.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        channels (int): Base width.
        channel_mults (tuple[int, ...]): Width multiplier per level.
        num_res_blocks (int): Residual blocks per level on the down path.
        attention_levels (tuple[int, ...]): Levels with self-attention.
        time_channels (int): Size of the time embedding.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        num_heads (int, optional): Attention heads. (default: :obj:`4`)
        dropout (float, optional): Dropout in the residual blocks. (default: :obj:`0.0`)
        grid_conv (str, optional): :obj:`"conv"` or :obj:`"spectral"`
            (:data:`~pyg_infdiff.nn.dense.GridConv`). (default: :obj:`"conv"`)
        spectral_modes (int, optional): Fourier modes per axis of the spectral convolutions.
            (default: :obj:`4`)
        grid_shape (tuple[int, ...], optional): The lattice of the first level; required
            with :obj:`grid_conv="spectral"`, to fit the modes of every level.
            (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(B, C_{in}, n_1, \dots, n_d)`, time embedding :math:`(B, T)`
        - **output:** :math:`(B, C_{out}, n_1, \dots, n_d)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        attention_levels: tuple[int, ...],
        time_channels: int,
        ndim: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        *,
        grid_conv: GridConv = "conv",
        spectral_modes: int = 4,
        grid_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        lattices = _Lattices(grid_conv, spectral_modes, grid_shape, len(channel_mults))
        self.grid_conv = grid_conv
        # spectral: pointwise in and out (the official fc0, fc1), the cells' coordinates in
        coordinates = ndim if grid_conv == "spectral" else 0
        kernel = 1 if grid_conv == "spectral" else 3
        self.conv_in = conv_nd(ndim, in_channels + coordinates, channels, kernel,
                               padding=kernel // 2)
        self.down, self.mid, skip_widths = _down_path(
            channels, channel_mults, num_res_blocks, attention_levels, time_channels, ndim,
            num_heads, dropout, lattices)
        width = skip_widths[-1]
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(num_res_blocks + 1):
                self.up.append(_stage(width + skip_widths.pop(), channels * mult, level,
                                      attention_levels, time_channels, ndim, num_heads, dropout,
                                      lattices))
                width = channels * mult
                if level > 0 and i == num_res_blocks:
                    self.up.append(Upsample(width, ndim, **lattices.at(level, level - 1)))
        self.norm_out = group_norm(width)
        self.conv_out = conv_nd(ndim, width, out_channels, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.grid_conv == "spectral":
            x = torch.cat([x, _cell_centres(x)], dim=1)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            h = stage(h) if isinstance(stage, Downsample) else _run_stage(stage, h, emb)
            skips.append(h)
        h = _run_stage(self.mid, h, emb)
        for stage in self.up:
            if isinstance(stage, Upsample):
                h = stage(h, size=tuple(skips[-1].shape[2:]))
            else:
                h = _run_stage(stage, torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class MultiscaleOperatorUNet(nn.Module):
    r"""The multiscale operator U-Net of `"Infinite Resolution Diffusion with Subsampled
    Mollified States" <https://arxiv.org/abs/2303.18242>`_ (Bond-Taylor & Willcocks,
    ICLR 2024), a denoiser of functions given at arbitrary points of :math:`[0, 1]^d`.

    1. **Lift**: a linear map of the node features (and, if
       :obj:`config.coordinate_features`, the node coordinates).
    2. **Down path**: :obj:`num_operator_blocks` :class:`~pyg_infdiff.nn.OperatorBlock` on
       the raw nodes (kernel integral operators over radius neighbourhoods), outputs kept as
       skips.
    3. :class:`~pyg_infdiff.nn.GridPool` to the fixed lattice :obj:`config.grid_shape` (by
       :obj:`config.pool`: tent-window averages by default, the transpose of the unpooling),
       then a :class:`DenseUNet` on it, then :class:`~pyg_infdiff.nn.GridUnpool` back to the
       nodes.
    4. **Up path**: operator blocks on the concatenation of the features and the skips.
    5. **Projection**: layer norm, SiLU and a zero-initialised linear map (the output is zero
       at initialisation).

    **Conditioning** (:obj:`config.cond_dim` :math:`= D > 0`): the model takes a vector
    :math:`\mathbf{z}_b` per graph (``cond``, e.g. the latent of a
    :class:`~pyg_infdiff.models.FunctionEncoder`) and adds
    :math:`\mathbf{W}_2\, \mathrm{SiLU}(\mathbf{W}_1 \mathbf{z}_b + \mathbf{b}_1) + \mathbf{b}_2`
    to the time embedding :math:`\mathbf{e}(t_b)`, which every operator block and residual
    block reads (scale and shift), as the diffusion autoencoder of the paper conditions every
    block on :math:`\mathbf{z}`. With :obj:`cond_dim=0` (the default) the model has no such
    parameters and takes no ``cond``.

    Every part is defined on functions (kernels in domain units, normalised integrals,
    pooling to a fixed lattice), so the same weights run at any resolution and on any point
    set. On full lattices (a :obj:`lattice` that :meth:`~LatticeIndex.is_full`) the kernel
    convolutions run as dense convolutions and pooling by slicing; on subsampled nodes
    through radius edges, which are built here (:func:`pyg_infdiff.graph.radius_graph` with
    self-loops) when :obj:`edge_index` is not given.

    Args:
        config (UNetConfig): The hyper-parameters.

    Shapes:
        - **input:** noisy values :math:`(N, C_{in})`, positions :math:`(N, d)`, time steps
          :math:`(B,)`, batch vector :math:`(N,)` (sorted), optional edges :math:`(2, E)`,
          condition :math:`(B, D)` when :obj:`config.cond_dim` :math:`= D > 0`
        - **output:** :math:`(N, C_{out})`
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, ch = config, config.operator_channels
        time_channels = 4 * c.time_embed_dim
        self.time_embed = TimeEmbedding(c.time_embed_dim, time_channels)
        self.cond_embed = None if c.cond_dim == 0 else nn.Sequential(
            nn.Linear(c.cond_dim, time_channels), nn.SiLU(),
            nn.Linear(time_channels, time_channels),
        )
        lift_in = c.in_channels + (c.ndim if c.coordinate_features else 0)
        self.lift = nn.Linear(lift_in, ch)

        def block(in_ch: int) -> OperatorBlock:
            return OperatorBlock(
                in_ch, ch, c.radius, time_channels, dim=c.ndim, num_basis=c.kernel_num_basis,
                hidden_channels=c.kernel_hidden_channels, mlp_ratio=c.mlp_ratio,
                dropout=c.dropout,
            )

        self.down_blocks = nn.ModuleList([block(ch) for _ in range(c.num_operator_blocks)])
        self.pool = GridPool(c.grid_shape, k=c.pool_k, method=c.pool)
        self.dense = DenseUNet(
            ch, ch, c.channels, c.channel_mults, c.num_res_blocks, c.attention_levels,
            time_channels, c.ndim, num_heads=c.num_heads, dropout=c.dropout,
            grid_conv=c.grid_conv, spectral_modes=c.spectral_modes, grid_shape=c.grid_shape,
        )
        self.unpool = GridUnpool()
        self.up_blocks = nn.ModuleList([block(2 * ch) for _ in range(c.num_operator_blocks)])
        self.norm_out = nn.LayerNorm(ch)
        self.proj = nn.Linear(ch, c.out_channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(
        self,
        x_t: Tensor,
        pos: Tensor,
        t: Tensor,
        batch: OptTensor = None,
        edge_index: OptTensor = None,
        lattice: LatticeIndex | None = None,
        cond: OptTensor = None,
        context: OptTensor = None,
        kernels: Sequence[EdgeKernel] | None = None,
    ) -> Tensor:
        r"""
        Args:
            x_t (torch.Tensor): Node values of the noisy state.
            pos (torch.Tensor): Node coordinates in :math:`[0, 1]^d`.
            t (torch.Tensor): Diffusion time step of each graph.
            batch (torch.Tensor, optional): Graph index of each node. (default: :obj:`None`)
            edge_index (torch.Tensor, optional): Radius edges of radius
                :obj:`config.radius` with self-loops; built if needed. (default: :obj:`None`)
            lattice (LatticeIndex, optional): Lattice positions of the nodes, enabling the
                dense paths. (default: :obj:`None`)
            cond (torch.Tensor, optional): The conditioning vector of each graph,
                :math:`(B, D)`; required if and only if :obj:`config.cond_dim` is positive.
                (default: :obj:`None`)
            context (torch.Tensor, optional): Sorted indices of the *context* nodes: the
                kernel integrals and the pooling then read only them (and each node itself),
                so every node sees the context's density whatever the number of nodes, and
                the outputs at the context nodes do not depend on the other nodes. Pass the
                matching :obj:`edge_index` from :meth:`context_graph` (built here if not);
                not with :obj:`lattice`. :func:`~pyg_infdiff.diffusion.sample` uses it to
                read any point set through a context of the training density.
                (default: :obj:`None`, every node is a context node)
            kernels (Sequence[EdgeKernel], optional): The operator blocks' kernels on
                :obj:`edge_index`, computed once by :meth:`edge_kernels` for many calls on the
                same nodes (as in sampling). (default: :obj:`None`, computed at every call)
        """
        c = self.config
        if x_t.dim() != 2 or x_t.size(1) != c.in_channels:
            raise ValueError(
                f"Expected x_t of shape [N, {c.in_channels}], got {tuple(x_t.shape)}"
            )
        if pos.shape != (x_t.size(0), c.ndim):
            raise ValueError(
                f"Expected pos of shape [{x_t.size(0)}, {c.ndim}], got {tuple(pos.shape)}"
            )
        num_graphs = t.numel()
        if batch is None:
            batch = torch.zeros(x_t.size(0), dtype=torch.long, device=x_t.device)
        if validation_enabled():  # the inputs' values, once (the layers inside do not check)
            # one read back for the coordinates, the batch vector and the lattice
            on_lattice = lattice is not None and lattice.pixel.shape == batch.shape
            check_nodes(pos, batch, num_graphs, lattice if on_lattice else None,
                        graphs="entries of 't'")
        if context is not None and lattice is not None:
            raise ValueError("'context' reads the nodes through a subset of them, which is not "
                             "a full lattice: pass 'lattice' or 'context', not both")
        full = lattice is not None and lattice.is_full()  # known, or decided once (cached)
        if edge_index is None and context is not None:
            edge_index = self.context_graph(pos, context, batch)
        elif edge_index is None and not full and c.num_operator_blocks > 0:
            edge_index = _radius_edges(pos, c.radius, batch)
        blocks = len(self.down_blocks) + len(self.up_blocks)
        if kernels is not None and (len(kernels) != blocks or edge_index is None):
            raise ValueError(f"'kernels' must be edge_kernels() of the given 'edge_index': one "
                             f"per operator block ({blocks}), got {len(kernels)}")
        with validation(False):  # checked above: no layer inside reads back from the device
            return self._denoise(x_t, pos, t, batch, edge_index, lattice, num_graphs,
                                 self._check_cond(cond, num_graphs), context, kernels)

    def edge_kernels(self, pos: Tensor, edge_index: Tensor) -> tuple[EdgeKernel, ...]:
        r"""The kernels of the operator blocks (down, then up) on fixed edges, for
        :meth:`forward` with :obj:`kernels`: they depend on the node positions and the weights
        only, so a sampling run on a point set computes them once
        (:meth:`KernelIntegralConv.edge_kernel`).

        Args:
            pos (torch.Tensor): Node coordinates in :math:`[0, 1]^d`.
            edge_index (torch.Tensor): The edges :meth:`forward` will get.
        """
        return tuple(blk.conv.edge_kernel(pos, edge_index)
                     for blk in (*self.down_blocks, *self.up_blocks))

    def context_graph(self, pos: Tensor, context: Tensor, batch: OptTensor = None) -> Tensor:
        r"""The edges of :obj:`config.radius` that read every node through the context nodes
        (:func:`pyg_infdiff.graph.context_graph`), for :meth:`forward` with :obj:`context`;
        build them once when the nodes stay the same over many calls (as in sampling).

        Args:
            pos (torch.Tensor): Node coordinates in :math:`[0, 1]^d`.
            context (torch.Tensor): Sorted indices of the context nodes.
            batch (torch.Tensor, optional): Graph index of each node. (default: :obj:`None`)
        """
        return context_graph(pos, self.config.radius, context, batch)

    def _check_cond(self, cond: OptTensor, num_graphs: int) -> OptTensor:
        # Shapes only (no read back): a conditioned model needs cond [B, cond_dim], others none.
        dim = self.config.cond_dim
        if dim == 0 and cond is not None:
            raise ValueError("This model is unconditioned (config.cond_dim=0) but got 'cond'")
        if dim > 0 and (cond is None or cond.shape != (num_graphs, dim)):
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"Expected 'cond' of shape [{num_graphs}, {dim}] (one row per "
                             f"graph, config.cond_dim={dim}), got {got}")
        return cond

    def _denoise(self, x_t: Tensor, pos: Tensor, t: Tensor, batch: Tensor,
                 edge_index: OptTensor, lattice: LatticeIndex | None, num_graphs: int,
                 cond: OptTensor = None, context: OptTensor = None,
                 kernels: Sequence[EdgeKernel] | None = None) -> Tensor:
        c = self.config
        emb = self.time_embed(t.view(-1))
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(cond.to(emb.dtype))
        h = torch.cat([x_t, pos.to(x_t.dtype)], dim=-1) if c.coordinate_features else x_t
        h = self.lift(h)
        kernels = kernels if kernels is not None else [None] * (2 * len(self.down_blocks))
        skips = []
        for blk, kernel in zip(self.down_blocks, kernels, strict=False):
            h = blk(h, pos, emb, batch, edge_index=edge_index, lattice=lattice,
                    edge_kernel=kernel)
            skips.append(h)
        if context is None:
            grid = self.pool(h, pos, batch, num_graphs=num_graphs, lattice=lattice)
        else:  # the grid reads the context nodes only, as the integrals do
            grid = self.pool(h[context], pos[context], batch[context], num_graphs=num_graphs)
        h = self.unpool(self.dense(grid, emb), pos, batch)
        for blk, kernel in zip(self.up_blocks, kernels[len(self.down_blocks):], strict=True):
            h = blk(torch.cat([h, skips.pop()], dim=-1), pos, emb, batch,
                    edge_index=edge_index, lattice=lattice, edge_kernel=kernel)
        return self.proj(nn.functional.silu(self.norm_out(h)))

    def num_parameters(self) -> int:
        r"""The number of trainable parameters."""
        return num_parameters(self)

    def summary(self) -> str:
        r"""A one-paragraph description: parameter counts per part and the main settings."""
        c = self.config
        parts = {
            "operator": num_parameters(self.down_blocks) + num_parameters(self.up_blocks)
            + num_parameters(self.lift) + num_parameters(self.proj)
            + num_parameters(self.norm_out),
            "dense": num_parameters(self.dense),
            "time": num_parameters(self.time_embed),
            **({"cond": num_parameters(self.cond_embed)} if self.cond_embed is not None else {}),
        }
        detail = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in parts.items())
        return (
            f"MultiscaleOperatorUNet: {self.num_parameters() / 1e6:.2f}M parameters ({detail}); "
            f"{c.num_operator_blocks}+{c.num_operator_blocks} operator blocks of width "
            f"{c.operator_channels}, radius {c.radius:.4f}; grid {'x'.join(map(str, c.grid_shape))}"
            f" ({c.pool} pool), dense widths {[c.channels * m for m in c.channel_mults]}"
            + ("" if c.grid_conv == "conv" else f" (spectral, {c.spectral_modes} modes)")
            + ", "
            f"attention levels {list(c.attention_levels)}"
        )

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_parameters()} parameters)"
