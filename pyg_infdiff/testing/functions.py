r"""Smooth test functions on :math:`[0, 1]^d`: the continuous objects whose discretisations
the invariance checks compare."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import lattice


@dataclass(frozen=True)
class FourierFunction:
    r"""A vector-valued trigonometric polynomial on :math:`[0, 1]^d`,

    .. math::
        f_c(\mathbf{u}) = \sum_{\mathbf{k}} a_{c, \mathbf{k}}
        \cos\left(2 \pi \, \mathbf{k} \cdot \mathbf{u} + \varphi_{c, \mathbf{k}}\right),

    evaluated in float64 and returned in the dtype of the coordinates. Callable as
    ``f(pos) -> values``, so it can be handed to
    :func:`pyg_infdiff.testing.assert_discretization_invariant`.

    Args:
        frequencies (torch.Tensor): Integer frequency vectors :math:`\mathbf{k}`, shape
            :math:`(K, d)`.
        amplitudes (torch.Tensor): :math:`a`, shape :math:`(C, K)`.
        phases (torch.Tensor): :math:`\varphi`, shape :math:`(C, K)`.

    Shapes:
        - **input:** :math:`(N, d)`
        - **output:** :math:`(N, C)`
    """

    frequencies: Tensor
    amplitudes: Tensor
    phases: Tensor

    @property
    def ndim(self) -> int:
        r"""The dimension :math:`d` of the domain."""
        return self.frequencies.size(1)

    @property
    def channels(self) -> int:
        r"""The number of output channels :math:`C`."""
        return self.amplitudes.size(0)

    def __call__(self, pos: Tensor) -> Tensor:
        if pos.dim() != 2 or pos.size(1) != self.ndim:
            raise ValueError(
                f"Expected coordinates of shape [N, {self.ndim}], got {tuple(pos.shape)}"
            )
        freq = self.frequencies.to(pos.device, torch.float64)
        angle = 2 * math.pi * pos.to(torch.float64) @ freq.t()  # [N, K]
        amp = self.amplitudes.to(pos.device, torch.float64)
        phase = self.phases.to(pos.device, torch.float64)
        # sum_k a cos(angle + phi) = cos(angle) @ (a cos phi)^T - sin(angle) @ (a sin phi)^T
        out = torch.cos(angle) @ (amp * torch.cos(phase)).t()
        out = out - torch.sin(angle) @ (amp * torch.sin(phase)).t()
        dtype = pos.dtype if pos.is_floating_point() else torch.get_default_dtype()
        return out.to(dtype)

    def on_lattice(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        r"""The function sampled at the pixel centres of a lattice, as an image
        :math:`(C, n_1, \dots, n_d)`."""
        values = self(lattice(shape, dtype=torch.float64))
        return values.t().reshape(self.channels, *shape).to(dtype)


def random_smooth_function(
    ndim: int,
    channels: int = 1,
    *,
    max_freq: int = 3,
    decay: float = 2.0,
    generator: torch.Generator | None = None,
) -> FourierFunction:
    r"""Draws a random smooth function :math:`[0, 1]^d \to \mathbb{R}^C`: a
    :class:`FourierFunction` with the frequency vectors :math:`\mathbf{k} \in
    \{-K, \dots, K\}^d` (one of each pair :math:`\pm\mathbf{k}`), amplitudes
    :math:`a_{c,\mathbf{k}} \sim \mathcal{N}(0, 1) / (1 + \|\mathbf{k}\|^2)^{\text{decay}/2}`
    and uniform phases, scaled to unit mean square
    :math:`\int_{[0,1]^d} f_c^2 = 1` per channel.

    Args:
        ndim (int): The dimension :math:`d \ge 1`.
        channels (int, optional): The number of channels :math:`C`. (default: :obj:`1`)
        max_freq (int, optional): The largest frequency :math:`K \ge 0` per axis; the function
            varies on scales of about :math:`1 / K`. (default: :obj:`3`)
        decay (float, optional): How fast the amplitudes fall with frequency. (default:
            :obj:`2.0`)
        generator (torch.Generator, optional): The source of randomness. (default:
            :obj:`None`)
    """
    if ndim < 1:
        raise ValueError(f"'ndim' must be >= 1, got ndim={ndim}")
    if channels < 1:
        raise ValueError(f"'channels' must be >= 1, got channels={channels}")
    if max_freq < 0:
        raise ValueError(f"'max_freq' must be >= 0, got max_freq={max_freq}")
    axis = range(-max_freq, max_freq + 1)
    # One of each pair k, -k (the first non-zero entry positive) and k = 0: distinct modes.
    freq = [k for k in itertools.product(axis, repeat=ndim) if k > (0,) * ndim or not any(k)]
    freq = torch.tensor(freq, dtype=torch.long).view(-1, ndim)
    norm2 = freq.double().pow(2).sum(-1)
    amp = torch.randn(channels, freq.size(0), generator=generator, dtype=torch.float64)
    amp = amp / (1 + norm2).pow(decay / 2)
    phase = torch.rand(channels, freq.size(0), generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * phase
    # The exact mean square: a^2 / 2 per oscillating mode, (a cos phi)^2 for the constant.
    const = norm2 == 0
    mean_square = amp[:, ~const].pow(2).sum(-1) / 2
    mean_square = mean_square + (amp[:, const] * torch.cos(phase[:, const])).pow(2).sum(-1)
    amp = amp / mean_square.sqrt().clamp_min(1e-12)[:, None]
    return FourierFunction(freq, amp, phase)
