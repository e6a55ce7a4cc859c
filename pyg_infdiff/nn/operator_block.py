r"""The sparse operator block: a kernel integral operator and a pointwise MLP, each in a
pre-normalised residual branch, conditioned on the diffusion time."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.typing import OptTensor

from pyg_infdiff.graph.lattice import LatticeIndex
from pyg_infdiff.nn.kernel_conv import EdgeKernel, KernelIntegralConv, Path


class OperatorBlock(nn.Module):
    r"""A residual neural-operator block on the nodes of a graph, as used at the top levels of
    the multiscale U-Net of `"Infinite Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_.

    .. math::
        (\mathbf{s}, \mathbf{b}) &= \mathbf{W}_t\, \mathrm{SiLU}(\mathbf{e}_{b_i}) \\
        \mathbf{h}_i &= \mathrm{Skip}(\mathbf{x}_i) + \mathcal{K}\big[
        \mathrm{LN}_1(\mathbf{x}) \odot (1 + \mathbf{s}) + \mathbf{b}\big](\mathbf{p}_i) \\
        \mathbf{y}_i &= \mathbf{h}_i + \mathbf{W}_2\, \mathrm{Drop}(
        \mathrm{GELU}(\mathbf{W}_1 \mathrm{LN}_2(\mathbf{h}_i)))

    where :math:`\mathcal{K}` is the :class:`~pyg_infdiff.nn.KernelIntegralConv` of radius
    :math:`r` (a normalised Monte-Carlo estimate of the integral over the ball, so the block
    does not depend on the discretisation), :math:`\mathbf{e}_{b_i}` is the time embedding of
    the graph of node :math:`i`, :math:`\mathrm{LN}` is a layer norm over the channels of each
    node (pointwise, hence discretisation invariant), and :math:`\mathrm{Skip}` is the identity
    or, when the channel counts differ (e.g. after concatenating a U-Net skip connection), a
    linear map. :math:`\mathbf{W}_2` is zero-initialised.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        radius (float): The support radius of the kernel, in domain units.
        time_channels (int): Size of the time embedding.
        dim (int, optional): Dimension :math:`d` of the domain. (default: :obj:`2`)
        num_basis (int, optional): Radial basis functions of the kernel. (default: :obj:`8`)
        hidden_channels (int, optional): Hidden width of the kernel network.
            (default: :obj:`32`)
        mlp_ratio (int, optional): Hidden width of the pointwise MLP relative to
            :obj:`out_channels`. (default: :obj:`2`)
        dropout (float, optional): Dropout in the MLP. (default: :obj:`0.0`)
        path (str, optional): Execution path of the kernel conv (:obj:`"auto"`,
            :obj:`"graph"` or :obj:`"dense"`). (default: :obj:`"auto"`)

    Shapes:
        - **input:** node features :math:`(N, C_{in})`, positions :math:`(N, d)`, time
          embedding :math:`(B, T)`, batch vector :math:`(N,)`, edge indices :math:`(2, E)`
        - **output:** :math:`(N, C_{out})`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        radius: float,
        time_channels: int,
        *,
        dim: int = 2,
        num_basis: int = 8,
        hidden_channels: int = 32,
        mlp_ratio: int = 2,
        dropout: float = 0.0,
        path: Path = "auto",
    ) -> None:
        super().__init__()
        if mlp_ratio < 1:
            raise ValueError(f"'mlp_ratio' must be at least 1, got {mlp_ratio}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.radius = radius
        self.norm1 = nn.LayerNorm(in_channels)
        self.time_proj = nn.Linear(time_channels, 2 * in_channels)
        self.conv = KernelIntegralConv(
            in_channels,
            out_channels,
            radius,
            dim=dim,
            num_basis=num_basis,
            hidden_channels=hidden_channels,
            path=path,
        )
        self.skip = (
            nn.Identity() if in_channels == out_channels else nn.Linear(in_channels, out_channels)
        )
        self.norm2 = nn.LayerNorm(out_channels)
        self.lin1 = nn.Linear(out_channels, mlp_ratio * out_channels)
        self.dropout = nn.Dropout(dropout)
        self.lin2 = nn.Linear(mlp_ratio * out_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for module in (self.norm1, self.time_proj, self.conv, self.norm2, self.lin1, self.lin2):
            module.reset_parameters()
        if isinstance(self.skip, nn.Linear):
            self.skip.reset_parameters()
        nn.init.zeros_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        emb: Tensor,
        batch: OptTensor = None,
        edge_index: OptTensor = None,
        lattice: LatticeIndex | None = None,
        edge_kernel: EdgeKernel | None = None,
    ) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): Node features.
            pos (torch.Tensor): Node positions in :math:`[0, 1]^d`.
            emb (torch.Tensor): Time embedding, one row per graph.
            batch (torch.Tensor, optional): Graph index of each node; all nodes belong to
                graph 0 if :obj:`None`. (default: :obj:`None`)
            edge_index (torch.Tensor, optional): Radius edges (source, target) for the graph
                path of the conv. (default: :obj:`None`)
            lattice (LatticeIndex, optional): Lattice positions of the nodes for the dense
                path of the conv. (default: :obj:`None`)
            edge_kernel (EdgeKernel, optional): The conv's kernel on :obj:`edge_index`,
                computed once (:meth:`KernelIntegralConv.edge_kernel`). (default: :obj:`None`)
        """
        if x.size(-1) != self.in_channels:
            raise ValueError(
                f"Expected {self.in_channels} input channels, got x of shape {tuple(x.shape)}"
            )
        scale, shift = self.time_proj(F.silu(emb)).chunk(2, dim=-1)
        if batch is None:
            if emb.size(0) != 1:
                raise ValueError(
                    f"Without 'batch' all nodes belong to one graph, but 'emb' has "
                    f"{emb.size(0)} rows"
                )
            scale, shift = scale.expand(x.size(0), -1), shift.expand(x.size(0), -1)
        else:
            scale, shift = scale[batch], shift[batch]
        h = self.norm1(x) * (1 + scale) + shift
        h = self.conv(h, pos, edge_index=edge_index, lattice=lattice, edge_kernel=edge_kernel)
        x = self.skip(x) + h
        h = self.lin2(self.dropout(F.gelu(self.lin1(self.norm2(x)))))
        return x + h

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"radius={self.radius})"
        )
