r"""Building blocks of the dense (lattice) U-Net in the middle of the multiscale operator U-Net.

They work on tensors of shape :math:`(B, C, n_1, \dots, n_d)` for :math:`d \in \{1, 2, 3\}`;
the convolution type is chosen from :obj:`ndim`. Their :math:`3^d` convolutions can be
:class:`~pyg_infdiff.nn.SpectralConv` instead (:data:`GridConv`). They follow the blocks of
`"Denoising Diffusion Probabilistic Models" <https://arxiv.org/abs/2006.11239>`_ with the
scale-shift time conditioning of
`"Improved Denoising Diffusion Probabilistic Models" <https://arxiv.org/abs/2102.09672>`_.
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from pyg_infdiff.nn.spectral import SpectralConv

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

#: The convolutions of the dense blocks on their lattice: :math:`3^d` convolutions
#: (``"conv"``) or :class:`~pyg_infdiff.nn.SpectralConv` (``"spectral"``, the official
#: ∞-Diff code's ``conv_type="spectral"``).
GridConv = Literal["conv", "spectral"]

#: The values of :data:`GridConv`.
GRID_CONVS: tuple[str, ...] = ("conv", "spectral")


def conv_nd(ndim: int, *args, **kwargs) -> nn.Module:
    r"""Returns :class:`torch.nn.Conv1d`, :class:`~torch.nn.Conv2d` or
    :class:`~torch.nn.Conv3d` for :obj:`ndim` 1, 2 or 3, built with the remaining arguments."""
    if ndim not in _CONV:
        raise ValueError(f"Dense blocks support ndim in (1, 2, 3), got ndim={ndim}")
    return _CONV[ndim](*args, **kwargs)


def grid_conv_nd(grid_conv: GridConv, ndim: int, in_channels: int, out_channels: int,
                 modes: int | tuple[int, ...] | None = None) -> nn.Module:
    r"""The :math:`3^d` convolution of a dense block (padding 1, same size) for
    :obj:`grid_conv="conv"`, or a :class:`~pyg_infdiff.nn.SpectralConv` keeping :obj:`modes`
    for :obj:`grid_conv="spectral"`.

    Args:
        grid_conv (str): :obj:`"conv"` or :obj:`"spectral"` (:data:`GridConv`).
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        modes (int or tuple[int, ...], optional): The modes of a spectral convolution
            (required for it, unused by the other). (default: :obj:`None`)
    """
    if grid_conv not in GRID_CONVS:
        raise ValueError(f"'grid_conv' must be one of {GRID_CONVS}, got {grid_conv!r}")
    if grid_conv == "conv":
        return conv_nd(ndim, in_channels, out_channels, 3, padding=1)
    if modes is None:
        raise ValueError("A spectral convolution needs 'modes'")
    return SpectralConv(in_channels, out_channels, modes, ndim)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    r"""A :class:`torch.nn.GroupNorm` with the largest number of groups
    :math:`\le` :obj:`max_groups` that divides :obj:`channels`."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _kind(grid_conv: str) -> str:
    return "" if grid_conv == "conv" else f", grid_conv='{grid_conv}'"


def _zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    r"""A residual convolution block with scale-shift time conditioning.

    .. math::
        \mathbf{h} &= \mathrm{Conv}_1(\mathrm{SiLU}(\mathrm{GN}_1(\mathbf{x}))) \\
        (\mathbf{s}, \mathbf{b}) &= \mathbf{W}\,\mathrm{SiLU}(\mathbf{e}) \\
        \mathbf{y} &= \mathrm{Skip}(\mathbf{x}) + \mathrm{Conv}_2\big(\mathrm{Drop}(
        \mathrm{SiLU}(\mathrm{GN}_2(\mathbf{h}) \odot (1 + \mathbf{s}) + \mathbf{b}))\big)

    :math:`\mathrm{Conv}_2` is zero-initialised, so the block starts as the identity
    (or a :math:`1 \times 1` projection when the channel counts differ). The two
    convolutions are :math:`3^d` convolutions or, with :obj:`grid_conv="spectral"`,
    :class:`~pyg_infdiff.nn.SpectralConv` s (the skip stays a :math:`1 \times 1` map).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        time_channels (int): Size of the time embedding :math:`\mathbf{e}`.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        dropout (float, optional): Dropout probability. (default: :obj:`0.0`)
        grid_conv (str, optional): :obj:`"conv"` or :obj:`"spectral"` (:data:`GridConv`).
            (default: :obj:`"conv"`)
        modes (int or tuple[int, ...], optional): The modes of the spectral convolutions
            (required with :obj:`grid_conv="spectral"`). (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(B, C_{in}, n_1, \dots, n_d)`, time embedding :math:`(B, T)`
        - **output:** :math:`(B, C_{out}, n_1, \dots, n_d)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_channels: int,
        ndim: int,
        dropout: float = 0.0,
        grid_conv: GridConv = "conv",
        modes: int | tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ndim = ndim
        self.grid_conv = grid_conv
        self.norm1 = group_norm(in_channels)
        self.conv1 = grid_conv_nd(grid_conv, ndim, in_channels, out_channels, modes)
        self.time_proj = nn.Linear(time_channels, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = grid_conv_nd(grid_conv, ndim, out_channels, out_channels, modes)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else conv_nd(ndim, in_channels, out_channels, 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.norm1, self.conv1, self.time_proj, self.norm2, self.conv2):
            module.reset_parameters()
        if not isinstance(self.skip, nn.Identity):
            self.skip.reset_parameters()
        _zero_(self.conv2)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time_proj(F.silu(emb)).chunk(2, dim=-1)
        view = (h.size(0), h.size(1)) + (1,) * self.ndim
        h = self.norm2(h) * (1 + scale.view(view)) + shift.view(view)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"ndim={self.ndim}{_kind(self.grid_conv)})"
        )


class Downsample(nn.Module):
    r"""Halves each spatial size (rounding up) with a strided :math:`3^d` convolution, or with
    a :class:`~pyg_infdiff.nn.SpectralConv` whose output is sampled on the coarser lattice
    (:obj:`grid_conv="spectral"`, as the official code's ``out_mult=0.5``).

    Args:
        channels (int): Input and output channels.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        grid_conv (str, optional): :obj:`"conv"` or :obj:`"spectral"` (:data:`GridConv`).
            (default: :obj:`"conv"`)
        modes (int or tuple[int, ...], optional): The modes of the spectral convolution
            (required with :obj:`grid_conv="spectral"`; both lattices must hold them).
            (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(B, C, n_1, \dots, n_d)`
        - **output:** :math:`(B, C, \lceil n_1/2 \rceil, \dots, \lceil n_d/2 \rceil)`
    """

    def __init__(self, channels: int, ndim: int, grid_conv: GridConv = "conv",
                 modes: int | tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.ndim = ndim
        self.grid_conv = grid_conv
        if grid_conv == "conv":
            self.conv = conv_nd(ndim, channels, channels, 3, stride=2, padding=1)
        else:
            self.conv = grid_conv_nd(grid_conv, ndim, channels, channels, modes)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if self.grid_conv == "spectral":
            return self.conv(x, size=tuple((n + 1) // 2 for n in x.shape[2:]))
        return self.conv(x)

    def __repr__(self) -> str:
        kind = _kind(self.grid_conv)
        return f"{self.__class__.__name__}({self.channels}, ndim={self.ndim}{kind})"


class Upsample(nn.Module):
    r"""Nearest-neighbour upsampling followed by a :math:`3^d` convolution, or a
    :class:`~pyg_infdiff.nn.SpectralConv` whose output is sampled on the finer lattice
    (:obj:`grid_conv="spectral"`, as the official code's ``out_mult=2``).

    Args:
        channels (int): Input and output channels.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        grid_conv (str, optional): :obj:`"conv"` or :obj:`"spectral"` (:data:`GridConv`).
            (default: :obj:`"conv"`)
        modes (int or tuple[int, ...], optional): The modes of the spectral convolution
            (required with :obj:`grid_conv="spectral"`; both lattices must hold them).
            (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(B, C, n_1, \dots, n_d)`
        - **output:** :math:`(B, C, m_1, \dots, m_d)` with :math:`m` the given :obj:`size`,
          :math:`2n` by default.
    """

    def __init__(self, channels: int, ndim: int, grid_conv: GridConv = "conv",
                 modes: int | tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.ndim = ndim
        self.grid_conv = grid_conv
        self.conv = grid_conv_nd(grid_conv, ndim, channels, channels, modes)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, size: tuple[int, ...] | None = None) -> Tensor:
        if size is None:
            size = tuple(2 * n for n in x.shape[2:])
        if self.grid_conv == "spectral":
            return self.conv(x, size=tuple(size))
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))

    def __repr__(self) -> str:
        kind = _kind(self.grid_conv)
        return f"{self.__class__.__name__}({self.channels}, ndim={self.ndim}{kind})"


class SelfAttention(nn.Module):
    r"""Multi-head self-attention over all lattice sites, with a residual connection.

    .. math::
        \mathbf{y} = \mathbf{x} + \mathbf{W}_o\, \mathrm{MHA}(\mathrm{GN}(\mathbf{x}))

    :math:`\mathbf{W}_o` is zero-initialised. Works for any number of spatial dimensions.

    Args:
        channels (int): Input and output channels.
        num_heads (int, optional): Number of heads; must divide :obj:`channels`.
            (default: :obj:`4`)

    Shapes:
        - **input:** :math:`(B, C, n_1, \dots, n_d)`
        - **output:** :math:`(B, C, n_1, \dots, n_d)`
    """

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(
                f"'num_heads' ({num_heads}) must divide 'channels' ({channels})"
            )
        self.channels = channels
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.qkv.reset_parameters()
        _zero_(self.out)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, L, C]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for z in (q, k, v))
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, C/heads]
        h = self.out(h.transpose(1, 2).reshape(b, -1, c))
        return x + h.transpose(1, 2).reshape(x.shape)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, num_heads={self.num_heads})"
