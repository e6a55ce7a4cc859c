r"""An encoder of functions: any discretisation of a function on :math:`[0, 1]^d` to one latent
vector, the first stage of the diffusion autoencoder of ∞-Diff. Composition of
:mod:`pyg_infdiff.nn` only, from the same parts as the U-Net."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.typing import OptTensor

from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models.config import _check_common, _from_dict, _to_dict
from pyg_infdiff.models.unet import _down_path, _radius_edges, _run_stage, num_parameters
from pyg_infdiff.nn.dense import Downsample, conv_nd, group_norm
from pyg_infdiff.nn.operator_block import OperatorBlock
from pyg_infdiff.nn.pool import GridPool

# The encoder has no diffusion time: its blocks get a constant zero conditioning vector of
# this size, so their conditioning projections reduce to learned biases.
_COND_CHANNELS = 1


@dataclass
class EncoderConfig:
    r"""Hyper-parameters of :class:`FunctionEncoder`.

    Lengths are in domain units of :math:`[0, 1]^d` (as in
    :class:`~pyg_infdiff.models.UNetConfig`), so one configuration describes the same encoder
    at every resolution. The defaults are those of :obj:`preset(28)`. :meth:`to_dict` and
    :meth:`from_dict` round-trip through plain Python types.

    Args:
        in_channels (int, optional): Channels of the data. (default: :obj:`1`)
        latent_dim (int, optional): Size :math:`D` of the latent vector :math:`z`.
            (default: :obj:`64`)
        operator_channels (int, optional): Width of the operator blocks on the nodes.
            (default: :obj:`32`)
        num_operator_blocks (int, optional): Operator blocks on the nodes before pooling.
            (default: :obj:`1`)
        radius (float, optional): Support radius of the kernel integral operators.
            (default: :obj:`5 / 28`)
        kernel_hidden_channels (int, optional): Hidden width of the kernel network.
            (default: :obj:`32`)
        kernel_num_basis (int, optional): Radial basis functions of the kernel.
            (default: :obj:`4`)
        mlp_ratio (int, optional): Width of the pointwise MLP of an operator block, relative
            to :obj:`operator_channels`. (default: :obj:`2`)
        coordinate_features (bool, optional): Whether the node coordinates are concatenated
            to the input features before lifting. (default: :obj:`True`)
        grid_shape (tuple[int, ...], optional): The lattice the nodes are pooled onto (by
            tent windows); its length is the dimension :math:`d`. (default: :obj:`(14, 14)`)
        channels (int, optional): Base width of the dense encoder. (default: :obj:`32`)
        channel_mults (tuple[int, ...], optional): Width multiplier of each level of the
            dense encoder; every level after the first halves the lattice.
            (default: :obj:`(1, 2, 2)`)
        num_res_blocks (int, optional): Residual blocks per level. (default: :obj:`1`)
        attention_levels (tuple[int, ...], optional): Levels with self-attention; the middle
            block always has it. (default: :obj:`()`)
        num_heads (int, optional): Attention heads. (default: :obj:`4`)
        dropout (float, optional): Dropout in the residual blocks. (default: :obj:`0.0`)
    """

    in_channels: int = 1
    latent_dim: int = 64
    operator_channels: int = 32
    num_operator_blocks: int = 1
    radius: float = 5 / 28
    kernel_hidden_channels: int = 32
    kernel_num_basis: int = 4
    mlp_ratio: int = 2
    coordinate_features: bool = True
    grid_shape: tuple[int, ...] = (14, 14)
    channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    num_heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self, ("in_channels", "latent_dim", "operator_channels",
                             "kernel_hidden_channels", "mlp_ratio", "channels",
                             "num_res_blocks", "num_heads"))

    @property
    def ndim(self) -> int:
        r"""The dimension :math:`d` of the domain, :obj:`len(grid_shape)`."""
        return len(self.grid_shape)

    def to_dict(self) -> dict[str, Any]:
        r"""The configuration as a dictionary of Python primitives (tuples become lists)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        r"""The inverse of :meth:`to_dict`; unknown keys raise a :class:`ValueError`."""
        return _from_dict(cls, data)

    @classmethod
    def preset(cls, resolution: int, **overrides: Any) -> EncoderConfig:
        r"""Documented defaults for square images of a training resolution, with the pooling
        lattice of :meth:`UNetConfig.preset <pyg_infdiff.models.UNetConfig.preset>` of the
        same resolution.

        ==========  ========  ======  =====  ======  =====  ============  ========
        resolution  channels  latent  grid   radius  basis  dense widths  params
        ==========  ========  ======  =====  ======  =====  ============  ========
        28          1         64      14²    5/28    4      32, 64, 64    0.38 M
        32          3         128     16²    5/32    4      32, 64, 64    0.39 M
        ==========  ========  ======  =====  ======  =====  ============  ========

        Both: one operator block of width 32, one residual block per level, attention in the
        middle block only. (The official model uses :math:`D = 256` at 128² and 1,024 at
        256².) The kernels are wider and smoother than the U-Net's (5 pixels of the training
        resolution and 4 radial basis functions, against 3.57 pixels and 8): a kernel resolved
        by about one pixel per basis function keeps the quadrature of its integrals accurate
        on the training lattice itself, which is what makes :math:`z` agree between a 28²
        image and its 56² render. With random weights (``tests/models/test_encoder.py``),
        the relative difference of :math:`z` between 28² and 56² falls from a median of 1.5%
        (2.5 pixels, 8 basis functions) to 0.25%.

        Args:
            resolution (int): The training resolution, 28 or 32.
            **overrides: Fields to change after applying the preset.
        """
        presets: dict[int, dict[str, Any]] = {
            28: dict(in_channels=1, latent_dim=64, grid_shape=(14, 14), radius=5 / 28),
            32: dict(in_channels=3, latent_dim=128, grid_shape=(16, 16), radius=5 / 32),
        }
        if resolution not in presets:
            raise ValueError(
                f"No preset for resolution {resolution}; available: {sorted(presets)}"
            )
        return cls(**{**presets[resolution], **overrides})


class FunctionEncoder(nn.Module):
    r"""An encoder of functions, the first stage of the diffusion autoencoder of
    `"Infinite Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_ (Bond-Taylor & Willcocks, ICLR 2024): it reads a
    function given at any points of :math:`[0, 1]^d` (a full lattice of any resolution, a
    random subset of its pixels, irregular points) and returns one latent vector per graph.

    .. math::
        \mathbf{z}_b = \mathbf{W}_z \, \frac{1}{|G|} \sum_{\mathbf{j} \in G}
        \mathrm{SiLU}\big(\mathrm{GN}(E[\mathcal{P}(\mathcal{K}_L \circ \dots \circ
        \mathcal{K}_1 (\mathbf{W}_{in} [\mathbf{x}, \mathbf{p}]))])\big)_{\mathbf{j}}
        + \mathbf{b}_z

    1. **Lift**: a linear map of the node features (and, if
       :obj:`config.coordinate_features`, the coordinates).
    2. :obj:`num_operator_blocks` :class:`~pyg_infdiff.nn.OperatorBlock`
       :math:`\mathcal{K}_l` on the nodes (kernel integrals with the window-normalised
       Monte-Carlo mean over radius neighbourhoods).
    3. :class:`~pyg_infdiff.nn.GridPool` :math:`\mathcal{P}` onto the lattice
       :obj:`config.grid_shape` with :obj:`method="tent"`: at every discretisation, a
       quadrature of one window integral per grid point.
    4. A dense downsampling encoder :math:`E` on that lattice
       (:class:`~pyg_infdiff.nn.ResBlock`, :class:`~pyg_infdiff.nn.SelfAttention`,
       :class:`~pyg_infdiff.nn.Downsample`; a middle block with attention).
    5. Group norm, SiLU, the mean over the lattice :math:`G` and a linear map to :math:`D`.

    Every part before the lattice is an estimate of an integral that does not depend on the
    discretisation, and everything after it sees a fixed lattice, so :math:`\mathbf{z}` is
    the same, up to quadrature error, for every discretisation of one function; random
    subsets give it in expectation (the tent windows are ratio estimates, unbiased up to
    :math:`O(1/n)`). The blocks have no diffusion time: their conditioning input is a
    constant zero vector, so their conditioning projections act as learned biases. The
    official model's encoder has the same layout (sparse blocks, interpolation to a grid at
    half the resolution, a dense encoder, a spatial mean, a linear map).

    On full lattices (a :obj:`lattice` that :meth:`~LatticeIndex.is_full`) the kernel
    integrals run as dense convolutions; otherwise over radius edges, which are built here
    (:func:`pyg_infdiff.graph.radius_graph` with self-loops) when :obj:`edge_index` is not
    given.

    .. code-block:: python

        import torch
        from pyg_infdiff.graph import lattice
        from pyg_infdiff.models import EncoderConfig, FunctionEncoder

        encoder = FunctionEncoder(EncoderConfig.preset(28)).eval()
        pos = lattice((28, 28))
        x = torch.sin(6 * pos[:, :1]) * pos[:, 1:]
        z = encoder(x, pos)  # [1, 64]
        half = torch.randperm(pos.size(0))[: pos.size(0) // 2]
        z_half = encoder(x[half], pos[half])  # the same z in expectation
        assert z.shape == z_half.shape == (1, 64)

    Args:
        config (EncoderConfig): The hyper-parameters.

    Shapes:
        - **input:** node values :math:`(N, C_{in})`, positions :math:`(N, d)`, batch
          vector :math:`(N,)` (optional), edges :math:`(2, E)` (optional)
        - **output:** :math:`(B, D)`
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c, ch = config, config.operator_channels
        lift_in = c.in_channels + (c.ndim if c.coordinate_features else 0)
        self.lift = nn.Linear(lift_in, ch)
        self.blocks = nn.ModuleList([
            OperatorBlock(ch, ch, c.radius, _COND_CHANNELS, dim=c.ndim,
                          num_basis=c.kernel_num_basis,
                          hidden_channels=c.kernel_hidden_channels, mlp_ratio=c.mlp_ratio,
                          dropout=c.dropout)
            for _ in range(c.num_operator_blocks)
        ])
        self.pool = GridPool(c.grid_shape, method="tent")
        self.conv_in = conv_nd(c.ndim, ch, c.channels, 3, padding=1)
        self.down, self.mid, widths = _down_path(
            c.channels, c.channel_mults, c.num_res_blocks, c.attention_levels, _COND_CHANNELS,
            c.ndim, c.num_heads, c.dropout)
        width = widths[-1]
        self.norm_out = group_norm(width)
        self.out = nn.Linear(width, c.latent_dim)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        batch: OptTensor = None,
        edge_index: OptTensor = None,
        lattice: LatticeIndex | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): Node values (clean, mollified data).
            pos (torch.Tensor): Node coordinates in :math:`[0, 1]^d`.
            batch (torch.Tensor, optional): Graph index of each node (sorted); all nodes
                belong to graph 0 if :obj:`None`. (default: :obj:`None`)
            edge_index (torch.Tensor, optional): Radius edges of radius :obj:`config.radius`
                with self-loops; built if needed. (default: :obj:`None`)
            lattice (LatticeIndex, optional): Lattice positions of the nodes, enabling the
                dense paths. (default: :obj:`None`)
            num_graphs (int, optional): The number of graphs :math:`B`; from :obj:`batch`
                if :obj:`None`. (default: :obj:`None`)
        """
        c = self.config
        if x.dim() != 2 or x.size(1) != c.in_channels:
            raise ValueError(f"Expected x of shape [N, {c.in_channels}], got {tuple(x.shape)}")
        if pos.shape != (x.size(0), c.ndim):
            raise ValueError(
                f"Expected pos of shape [{x.size(0)}, {c.ndim}], got {tuple(pos.shape)}"
            )
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 1
        full = lattice is not None and lattice.is_full()
        if edge_index is None and not full and c.num_operator_blocks > 0:
            edge_index = _radius_edges(pos, c.radius, batch)
        emb = x.new_zeros(num_graphs, _COND_CHANNELS)
        h = torch.cat([x, pos.to(x.dtype)], dim=-1) if c.coordinate_features else x
        h = self.lift(h)
        for block in self.blocks:
            h = block(h, pos, emb, batch, edge_index=edge_index, lattice=lattice)
        h = self.conv_in(self.pool(h, pos, batch, num_graphs=num_graphs, lattice=lattice))
        for stage in self.down:
            h = stage(h) if isinstance(stage, Downsample) else _run_stage(stage, h, emb)
        h = _run_stage(self.mid, h, emb)
        h = nn.functional.silu(self.norm_out(h))
        return self.out(h.flatten(2).mean(-1))

    def num_parameters(self) -> int:
        r"""The number of trainable parameters."""
        return num_parameters(self)

    def __repr__(self) -> str:
        c = self.config
        return (f"{self.__class__.__name__}({c.in_channels}, latent_dim={c.latent_dim}, "
                f"{self.num_parameters()} parameters)")
