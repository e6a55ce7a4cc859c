r"""The spectral convolution of Fourier neural operators: a learned multiplier on the lowest
Fourier modes of a lattice, the alternative to the :math:`3^d` convolutions of the dense U-Net
(the official ∞-Diff code's ``conv_type="spectral"``)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != ndim:
        raise ValueError(f"'{name}' needs {ndim} entries (one per axis), got {value}")
    return values


def fit_modes(modes: int | Sequence[int], *sizes: Sequence[int]) -> tuple[int, ...]:
    r"""The modes of a :class:`SpectralConv` on lattices of the given sizes: per axis, the
    smaller of :obj:`modes` and :math:`\lceil n / 2 \rceil`, the most that every lattice of
    :obj:`sizes` holds below its Nyquist frequency (:math:`2m - 1 \le n`).

    Args:
        modes (int or Sequence[int]): The modes wanted, for every axis or per axis.
        *sizes (Sequence[int]): Lattice sizes :math:`(n_1, \dots, n_d)` (input and output
            of a resampling convolution, for instance).
    """
    if not sizes:
        raise ValueError("fit_modes needs at least one lattice size")
    ndim = len(sizes[0])
    wanted = _per_axis(modes, ndim, "modes")
    return tuple(min(m, *((s[j] + 1) // 2 for s in sizes)) for j, m in enumerate(wanted))


class SpectralConv(nn.Module):
    r"""The spectral convolution of `"Fourier Neural Operator for Parametric Partial
    Differential Equations" <https://arxiv.org/abs/2010.08895>`_ (Li et al., ICLR 2021), the
    ``conv_type="spectral"`` layer of the dense U-Net of `"Infinite Resolution Diffusion with
    Subsampled Mollified States" <https://arxiv.org/abs/2303.18242>`_.

    .. math::
        \mathbf{y}(\mathbf{p}) &= \mathbf{b} + \sum_{\mathbf{k} \in K_m}
        \mathbf{R}_{\mathbf{k}}\, \hat{\mathbf{x}}_{\mathbf{k}}\,
        e^{2 \pi i\, \mathbf{k} \cdot \mathbf{p}} \\
        \hat{\mathbf{x}}_{\mathbf{k}} &= \frac{1}{N} \sum_{\mathbf{j}}
        \mathbf{x}(\mathbf{p}_{\mathbf{j}})\,
        e^{-2 \pi i\, \mathbf{k} \cdot \mathbf{p}_{\mathbf{j}}}

    with :math:`K_m = \{\mathbf{k} \in \mathbb{Z}^d : |k_j| < m_j\}` the lowest modes (both
    signs on every axis; the weights of :math:`k_d < 0` on the last axis, that of the real
    FFT, are the conjugates of those of :math:`-\mathbf{k}`, so the output is real),
    :math:`\mathbf{R}_{\mathbf{k}} \in \mathbb{C}^{C_{out} \times C_{in}}` a learned
    matrix per mode and :math:`N` the number of lattice points
    :math:`\mathbf{p}_{\mathbf{j}}` (cell centres :math:`(j_i + \frac{1}{2}) / n_i`, as every
    lattice of :mod:`pyg_infdiff`). The coefficients :math:`\hat{\mathbf{x}}_{\mathbf{k}}`
    are a mean over the lattice (``norm="forward"``), the exact Fourier coefficients of a
    function whose band lies below the Nyquist frequency: the same weights give the same
    function on every lattice that resolves the input, and the output can be sampled on
    another lattice (:obj:`size`), which resamples exactly (the strided and transposed
    convolutions of the official code). The lattice is periodic: the layer commutes with
    circular shifts.

    The complex weights are stored as real tensors with a trailing axis of size 2 (real and
    imaginary parts), so state dicts hold real tensors only. The transforms run in float32
    (float64 for float64 inputs) with autocast disabled, as :mod:`torch.fft` has no bfloat16
    kernels; the output has the dtype of the input.

    Args:
        in_channels (int): Input channels :math:`C_{in}`.
        out_channels (int): Output channels :math:`C_{out}`.
        modes (int or tuple[int, ...]): The modes :math:`m_j` kept on each axis (one int for
            all); an input or output lattice needs :math:`n_j \ge 2 m_j - 1` points.
        ndim (int): Spatial dimension :math:`d \in \{1, 2, 3\}`.
        bias (bool, optional): Whether to add a learned bias :math:`\mathbf{b}`.
            (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(B, C_{in}, n_1, \dots, n_d)`
        - **output:** :math:`(B, C_{out}, n'_1, \dots, n'_d)`, with :math:`n'` the given
          :obj:`size`, :math:`n` by default
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int | tuple[int, ...],
        ndim: int,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if ndim not in (1, 2, 3):
            raise ValueError(f"SpectralConv supports ndim in (1, 2, 3), got ndim={ndim}")
        self.modes = _per_axis(modes, ndim, "modes")
        if any(m < 1 for m in self.modes):
            raise ValueError(f"'modes' must be positive, got {modes}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ndim = ndim
        kept = [2 * m - 1 for m in self.modes[:-1]] + [self.modes[-1]]
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, *kept, 2))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # |R_k| has variance 1 / C_in, so a band-limited input keeps its scale.
        nn.init.normal_(self.weight, std=math.sqrt(0.5 / self.in_channels))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check(self, size: Sequence[int], what: str) -> None:
        for axis, (n, m) in enumerate(zip(size, self.modes, strict=True)):
            if n < 2 * m - 1:
                raise ValueError(
                    f"SpectralConv keeps {m} modes on axis {axis} (frequencies |k| < {m}), "
                    f"which needs an {what} lattice of at least {2 * m - 1} points on that "
                    f"axis; got {tuple(size)}. Use fewer modes (fit_modes) or a finer lattice."
                )

    def forward(self, x: Tensor, size: Sequence[int] | None = None) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): The input lattice values.
            size (Sequence[int], optional): The output lattice :math:`(n'_1, \dots,
                n'_d)`. (default: :obj:`None`, the input lattice)
        """
        if x.dim() != self.ndim + 2 or x.size(1) != self.in_channels:
            raise ValueError(f"Expected an input of shape [B, {self.in_channels}, n_1..n_"
                             f"{self.ndim}], got {tuple(x.shape)}")
        in_size = tuple(x.shape[2:])
        out_size = in_size if size is None else tuple(int(n) for n in size)
        self._check(in_size, "input")
        if out_size != in_size:
            self._check(out_size, "output")
        dims = tuple(range(-self.ndim, 0))
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfftn(x.to(dtype), dim=dims, norm="forward")
            low = self._lowest(spectrum)
            weight = torch.view_as_complex(self.weight.to(dtype))
            low = torch.einsum("bi...,io...->bo...", low, weight)
            if out_size != in_size:
                low = low * self._shift(in_size, out_size, low.device, low.dtype)
            y = torch.fft.irfftn(self._place(low, out_size), s=out_size, dim=dims,
                                 norm="forward")
            if self.bias is not None:
                y = y + self.bias.to(dtype).view(-1, *(1,) * self.ndim)
        return y.to(x.dtype)

    def _lowest(self, spectrum: Tensor) -> Tensor:
        # The modes |k| < m of every axis, ordered 0..m-1, -(m-1)..-1 (FFT order).
        for axis, m in enumerate(self.modes[:-1]):
            dim, n = axis + 2, spectrum.size(axis + 2)
            spectrum = torch.cat([spectrum.narrow(dim, 0, m),
                                  spectrum.narrow(dim, n - m + 1, m - 1)], dim=dim)
        return spectrum.narrow(-1, 0, self.modes[-1])

    def _place(self, low: Tensor, size: tuple[int, ...]) -> Tensor:
        # The inverse of _lowest: the kept modes in the zero spectrum of a lattice of `size`.
        for axis, m in enumerate(self.modes[:-1]):
            dim = axis + 2
            gap = list(low.shape)
            gap[dim] = size[axis] - (2 * m - 1)
            low = torch.cat([low.narrow(dim, 0, m), low.new_zeros(gap),
                             low.narrow(dim, m, m - 1)], dim=dim)
        gap = list(low.shape)
        gap[-1] = size[-1] // 2 + 1 - self.modes[-1]
        return torch.cat([low, low.new_zeros(gap)], dim=-1)

    def _shift(self, in_size: tuple[int, ...], out_size: tuple[int, ...],
               device: torch.device, dtype: torch.dtype) -> Tensor:
        # exp(i pi k (1/n' - 1/n)) per axis: moves the phase reference from the input's cell
        # centres to the output's, so resampling maps centre samples to centre samples.
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        factor = None
        for axis, m in enumerate(self.modes):
            last = axis == self.ndim - 1
            k = torch.arange(m, device=device, dtype=real)
            if not last:
                k = torch.cat([k, torch.arange(-(m - 1), 0, device=device, dtype=real)])
            phase = math.pi * (1.0 / out_size[axis] - 1.0 / in_size[axis]) * k
            term = torch.polar(torch.ones_like(phase), phase)
            term = term.view(-1, *(1,) * (self.ndim - 1 - axis))
            factor = term if factor is None else factor * term
        return factor.to(dtype)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"modes={self.modes})")
