r"""The denoiser of the second stage of ∞-Diff: a small MLP with skip connections over the latent
vectors :math:`\mathbf{z}` of a :class:`~pyg_infdiff.models.DiffusionAutoencoder`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pyg_infdiff.models.config import _from_dict, _to_dict
from pyg_infdiff.models.unet import num_parameters
from pyg_infdiff.nn.embedding import SinusoidalTimeEmbedding


@dataclass
class LatentMLPConfig:
    r"""Hyper-parameters of :class:`LatentMLP`. The defaults are the official latent model's
    (``configs/*_latent_config.py`` of the ∞-Diff code: width 2,048, 10 layers, a 128-wide
    time embedding, no dropout; its LSUN Churches model has 20 layers). :meth:`to_dict` and
    :meth:`from_dict` round-trip through plain Python types.

    Args:
        latent_dim (int): Size :math:`D` of the latent vectors.
        hidden_channels (int, optional): Width :math:`H` of the hidden layers.
            (default: :obj:`2048`)
        num_layers (int, optional): Linear layers in all, input and output layers included
            (at least 2). (default: :obj:`10`)
        time_embed_dim (int, optional): Size of the sinusoidal time embedding, at least 2.
            (default: :obj:`128`)
        dropout (float, optional): Dropout after every hidden layer. (default: :obj:`0.0`)
    """

    latent_dim: int
    hidden_channels: int = 2048
    num_layers: int = 10
    time_embed_dim: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden_channels"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be a positive integer, got "
                                 f"{getattr(self, name)!r}")
        if int(self.time_embed_dim) != self.time_embed_dim or self.time_embed_dim < 2:
            raise ValueError(f"'time_embed_dim' must be an integer >= 2 (one cosine and one "
                             f"sine), got {self.time_embed_dim!r}")
        if int(self.num_layers) != self.num_layers or self.num_layers < 2:
            raise ValueError(f"'num_layers' must be an integer >= 2, got {self.num_layers!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        r"""The configuration as a dictionary of Python primitives."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentMLPConfig:
        r"""The inverse of :meth:`to_dict`; unknown keys raise a :class:`ValueError`."""
        return _from_dict(cls, data)


class _ScaledLayer(nn.Module):
    r"""Linear, times :math:`1 + \mathrm{Linear}(\mathrm{GELU}(\mathbf{c}))`, LayerNorm, GELU,
    dropout (``MLPLNAct`` of the official code)."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int,
                 dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)
        self.cond = nn.Linear(cond_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        self.cond.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        h = self.linear(h) * (1.0 + self.cond(nn.functional.gelu(cond)))
        return self.dropout(nn.functional.gelu(self.norm(h)))


class LatentMLP(nn.Module):
    r"""The latent denoiser of `"Infinite Resolution Diffusion with Subsampled Mollified
    States" <https://arxiv.org/abs/2303.18242>`_ (Bond-Taylor & Willcocks, ICLR 2024), the
    ``MLPSkipNet`` of `"Diffusion Autoencoders" <https://arxiv.org/abs/2111.15640>`_
    (Preechakul et al., CVPR 2022): an MLP whose every layer after the first also reads the
    noisy input :math:`\mathbf{z}_t` (a skip connection by concatenation), each hidden layer
    scaled by a projection of the time embedding.

    .. math::
        \mathbf{c} &= \mathbf{W}_2\, \mathrm{GELU}(\mathbf{W}_1 \mathbf{e}(t) + \mathbf{b}_1)
        + \mathbf{b}_2 \in \mathbb{R}^D \\
        \mathbf{h}_1 &= f_1(\mathbf{z}_t), \qquad
        \mathbf{h}_{l} = f_{l}([\mathbf{h}_{l-1}, \mathbf{z}_t]), \quad l = 2, \dots, L - 1 \\
        f_l(\mathbf{u}) &= \mathrm{Dropout}\big(\mathrm{GELU}\big(\mathrm{LN}\big(
        (\mathbf{A}_l \mathbf{u} + \mathbf{a}_l) \odot
        (1 + \mathbf{B}_l\, \mathrm{GELU}(\mathbf{c}) + \mathbf{b}_l)\big)\big)\big) \\
        \hat{\mathbf{y}} &= \mathbf{W}_{out} [\mathbf{h}_{L-1}, \mathbf{z}_t] + \mathbf{b}_{out}

    with :math:`\mathbf{e}(t)` the sinusoidal embedding
    (:class:`~pyg_infdiff.nn.SinusoidalTimeEmbedding`) and :math:`L` = :obj:`num_layers`.
    The output :math:`\hat{\mathbf{y}}` is what the parametrisation of
    :class:`~pyg_infdiff.diffusion.LatentDiffusion` asks for (the noise, by default).

    .. code-block:: python

        import torch
        from pyg_infdiff.models import LatentMLP, LatentMLPConfig

        model = LatentMLP(LatentMLPConfig(latent_dim=64, hidden_channels=256, num_layers=4))
        z_t, t = torch.randn(8, 64), torch.randint(0, 1000, (8,))
        assert model(z_t, t).shape == (8, 64)

    Args:
        config (LatentMLPConfig): The hyper-parameters.

    Shapes:
        - **input:** noisy latents :math:`(B, D)`, time steps :math:`(B,)`
        - **output:** :math:`(B, D)`
    """

    def __init__(self, config: LatentMLPConfig) -> None:
        super().__init__()
        self.config = c = config
        d, h = c.latent_dim, c.hidden_channels
        self.time_embed = SinusoidalTimeEmbedding(c.time_embed_dim)
        self.time_mlp = nn.Sequential(nn.Linear(c.time_embed_dim, d), nn.GELU(),
                                      nn.Linear(d, d))
        self.layers = nn.ModuleList(
            [_ScaledLayer(d, h, d, c.dropout)]
            + [_ScaledLayer(d + h, h, d, c.dropout) for _ in range(c.num_layers - 2)]
        )
        self.out = nn.Linear(d + h, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters (PyTorch's default initialisation, as the official
        model)."""
        for layer in self.time_mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.out.reset_parameters()

    def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
        r"""
        Args:
            z_t (torch.Tensor): Noisy latents :math:`(B, D)`.
            t (torch.Tensor): Time step of each row :math:`(B,)` (integer or real).
        """
        d = self.config.latent_dim
        if z_t.dim() != 2 or z_t.size(1) != d:
            raise ValueError(f"Expected latents of shape [B, {d}], got {tuple(z_t.shape)}")
        if t.shape != (z_t.size(0),):
            raise ValueError(f"Expected one time step per row, shape ({z_t.size(0)},), got "
                             f"{tuple(t.shape)}")
        cond = self.time_mlp(self.time_embed(t).to(z_t.dtype))
        h = self.layers[0](z_t, cond)
        for layer in self.layers[1:]:
            h = layer(torch.cat((h, z_t), dim=-1), cond)
        return self.out(torch.cat((h, z_t), dim=-1))

    @property
    def latent_dim(self) -> int:
        r"""The size :math:`D` of the latent vectors."""
        return self.config.latent_dim

    def num_parameters(self) -> int:
        r"""The number of trainable parameters."""
        return num_parameters(self)

    def __repr__(self) -> str:
        c = self.config
        return (f"{self.__class__.__name__}({c.latent_dim}, hidden_channels={c.hidden_channels}, "
                f"num_layers={c.num_layers}, {self.num_parameters()} parameters)")
