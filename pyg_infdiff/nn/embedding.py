r"""Embeddings of the diffusion time step."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalTimeEmbedding(nn.Module):
    r"""The sinusoidal time-step embedding of the
    `"Attention Is All You Need" <https://arxiv.org/abs/1706.03762>`_ paper, as used by
    DDPM and its successors.

    .. math::
        \mathbf{e}(t) = \left[\cos(t\,\omega_0), \dots, \cos(t\,\omega_{h-1}),
        \sin(t\,\omega_0), \dots, \sin(t\,\omega_{h-1})\right],
        \qquad \omega_j = P^{-j/h}, \quad h = \lfloor D/2 \rfloor,

    with :math:`P` the :obj:`max_period`. An odd :obj:`dim` is padded with one zero.

    Args:
        dim (int): The embedding size :math:`D`.
        max_period (float, optional): The longest period :math:`P`. (default: :obj:`10000.0`)

    Shapes:
        - **input:** time steps :math:`(B,)` (integer or real valued)
        - **output:** :math:`(B, D)`
    """

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"'dim' must be positive, got {dim}")
        if max_period <= 1.0:
            raise ValueError(f"'max_period' must be larger than 1, got {max_period}")
        self.dim = dim
        self.max_period = max_period
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        if t.dim() != 1:
            raise ValueError(f"Expected time steps of shape [B], got {tuple(t.shape)}")
        args = t.float()[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2 == 1:
            emb = torch.cat([emb, emb.new_zeros(emb.size(0), 1)], dim=-1)
        return emb

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim})"


class TimeEmbedding(nn.Module):
    r"""The sinusoidal embedding followed by a two-layer perceptron, the time conditioning
    vector shared by all blocks of a diffusion U-Net.

    .. math::
        \mathbf{h}(t) = \mathbf{W}_2\, \mathrm{SiLU}(\mathbf{W}_1 \mathbf{e}(t) + \mathbf{b}_1)
        + \mathbf{b}_2

    Args:
        dim (int): The size of the sinusoidal embedding :math:`\mathbf{e}(t)`.
        out_dim (int, optional): The output size; :obj:`4 * dim` if :obj:`None`.
            (default: :obj:`None`)

    Shapes:
        - **input:** time steps :math:`(B,)`
        - **output:** :math:`(B, D_{out})`
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = 4 * dim if out_dim is None else out_dim
        self.sinusoidal = SinusoidalTimeEmbedding(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, self.out_dim), nn.SiLU(), nn.Linear(self.out_dim, self.out_dim)
        )

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.sinusoidal(t))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, out_dim={self.out_dim})"
