r"""Building blocks of the dense (lattice) U-Net in the middle of the multiscale operator U-Net.

They work on tensors of shape :math:`(B, C, n_1, \dots, n_d)` for :math:`d \in \{1, 2, 3\}`;
the convolution type is chosen from :obj:`ndim`. They follow the blocks of
`"Denoising Diffusion Probabilistic Models" <https://arxiv.org/abs/2006.11239>`_ with the
scale-shift time conditioning of
`"Improved Denoising Diffusion Probabilistic Models" <https://arxiv.org/abs/2102.09672>`_.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_nd(ndim: int, *args, **kwargs) -> nn.Module:
    r"""Returns :class:`torch.nn.Conv1d`, :class:`~torch.nn.Conv2d` or
    :class:`~torch.nn.Conv3d` for :obj:`ndim` 1, 2 or 3, built with the remaining arguments."""
    if ndim not in _CONV:
        raise ValueError(f"Dense blocks support ndim in (1, 2, 3), got ndim={ndim}")
    return _CONV[ndim](*args, **kwargs)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    r"""A :class:`torch.nn.GroupNorm` with the largest number of groups
    :math:`\le` :obj:`max_groups` that divides :obj:`channels`."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


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
    (or a :math:`1 \times 1` projection when the channel counts differ).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        time_channels (int): Size of the time embedding :math:`\mathbf{e}`.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        dropout (float, optional): Dropout probability. (default: :obj:`0.0`)

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
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ndim = ndim
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv_nd(ndim, in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_channels, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_nd(ndim, out_channels, out_channels, 3, padding=1)
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
            f"ndim={self.ndim})"
        )


class Downsample(nn.Module):
    r"""Halves each spatial size (rounding up) with a strided :math:`3^d` convolution.

    Args:
        channels (int): Input and output channels.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.

    Shapes:
        - **input:** :math:`(B, C, n_1, \dots, n_d)`
        - **output:** :math:`(B, C, \lceil n_1/2 \rceil, \dots, \lceil n_d/2 \rceil)`
    """

    def __init__(self, channels: int, ndim: int) -> None:
        super().__init__()
        self.channels = channels
        self.ndim = ndim
        self.conv = conv_nd(ndim, channels, channels, 3, stride=2, padding=1)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, ndim={self.ndim})"


class Upsample(nn.Module):
    r"""Nearest-neighbour upsampling followed by a :math:`3^d` convolution.

    Args:
        channels (int): Input and output channels.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.

    Shapes:
        - **input:** :math:`(B, C, n_1, \dots, n_d)`
        - **output:** :math:`(B, C, m_1, \dots, m_d)` with :math:`m` the given :obj:`size`,
          :math:`2n` by default.
    """

    def __init__(self, channels: int, ndim: int) -> None:
        super().__init__()
        self.channels = channels
        self.ndim = ndim
        self.conv = conv_nd(ndim, channels, channels, 3, padding=1)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, size: tuple[int, ...] | None = None) -> Tensor:
        if size is None:
            size = tuple(2 * n for n in x.shape[2:])
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, ndim={self.ndim})"


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
