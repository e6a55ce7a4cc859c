r"""The kernel of :class:`~pyg_infdiff.nn.KernelIntegralConv` on a lattice: its offsets in a box
around the ball (:class:`LatticeStencil`), the masked convolution of the dense path
(:func:`stencil_conv`, direct or by FFT) and the unit costs behind the layer's choice of path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_infdiff.nn.kernel import bump

# Unit costs (seconds) of the cost model behind KernelIntegralConv's path="auto" and
# dense_method="auto", fitted to `python bench/kernel_conv.py --threads 1` (speed and crossover
# tables; shared 2-core CPU, C=64, forward + backward; only their ratios matter): per pixel x
# channel, plus per pixel x channel x tap of the box, for the direct convolution; per padded
# pixel x channel x log2(padded size) for the FFT. Direct depthwise convolutions with a box side
# above MAX_DIRECT_SIDE fall off a cliff on CPU (50x slower at 21x21 than at 13x13): FFT there.
DIRECT_COST = 1.5e-8
DIRECT_TAP_COST = 4.0e-10
FFT_COST = 4.2e-9
MAX_DIRECT_SIDE = 15


def border_tol(radius: float) -> float:
    r"""Offsets whose exact squared length is within this distance of :math:`r^2` are
    *borderline*: float32 rounding of the coordinates decides, pair by pair, whether a radius
    search includes them (bounds the rounding error of ``sum((p_i - p_j)^2)`` for coordinates in
    :math:`[0, 1]`, with a margin)."""
    return 2e-6 * radius * (1.0 + radius)


class LatticeStencil:
    r"""The lattice offsets :math:`\mathbf{k}` (integer steps) of a lattice of shape
    :math:`(n_1, \dots, n_d)` in the box :math:`\prod_a [-R_a, R_a]` (C order) around the ball
    of radius :math:`r`, classified as inside / borderline / outside the ball, with the dense
    operations built on them (convolution denominators, tap indices of edges, cost estimates).

    Args:
        shape (tuple[int, ...]): The lattice size :math:`(n_1, \dots, n_d)`.
        radius (float): The radius :math:`r` in domain units.
        device (torch.device): The device of the tensors.
        dtype (torch.dtype): The floating point type of :attr:`offset`.

    Attributes:
        half (tuple[int, ...]): The half widths :math:`R_a`.
        steps (torch.Tensor): Integer offsets, shape :math:`(T, d)`.
        offset (torch.Tensor): Domain offsets :math:`\mathbf{k} / \mathbf{n}`, shape
            :math:`(T, d)`.
        inside (torch.Tensor): Offsets strictly inside the ball for every pair of lattice
            points, bool :math:`(T,)`.
        border (torch.Tensor): Offsets with :math:`|\mathbf{k}/\mathbf{n}| = r` up to float
            rounding, bool :math:`(T,)`.
    """

    def __init__(
        self, shape: tuple[int, ...], radius: float, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.shape = shape
        self.radius = radius
        tol = border_tol(radius)
        reach = math.sqrt(radius**2 + tol)
        self.half = tuple(int(math.floor(reach * n)) for n in shape)
        # Tensor operations only (no read back to the host): torch.compile traces a stencil
        # built inside a compiled forward into the graph.
        axes = [torch.arange(-h, h + 1, device=device) for h in self.half]
        steps = torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")], -1)
        sizes = torch.tensor(shape, dtype=torch.float64, device=device)
        exact = steps.to(torch.float64) / sizes
        d2 = exact.pow(2).sum(-1)
        self.steps = steps
        self.offset = exact.to(dtype)
        self.inside = d2 < radius**2 - tol
        self.border = (d2 - radius**2).abs() <= tol
        self._border_steps: tuple[tuple[int, ...], ...] | None = None

    @property
    def border_steps(self) -> tuple[tuple[int, ...], ...]:
        r"""The integer offsets of :attr:`border`, as Python tuples (read back from the
        device once, then kept)."""
        if self._border_steps is None:
            self._border_steps = tuple(tuple(k) for k in self.steps[self.border].tolist())
        return self._border_steps

    @property
    def box(self) -> tuple[int, ...]:
        r"""The box size :math:`(2R_1 + 1, \dots, 2R_d + 1)`."""
        return tuple(2 * h + 1 for h in self.half)

    def costs(self, num_graphs: int, width: int, fft_width: int) -> tuple[float, float]:
        r"""Estimated seconds of a direct and of an FFT convolution of :obj:`num_graphs`
        lattices with :obj:`width` (FFT: :obj:`fft_width`) channel pairs."""
        taps = math.prod(self.box)
        padded = math.prod([fast_fft_size(n + h) for n, h in zip(self.shape, self.half,
                                                                  strict=True)])
        direct = (DIRECT_COST + DIRECT_TAP_COST * taps) * num_graphs * math.prod(self.shape)
        if max(self.box) > MAX_DIRECT_SIDE or len(self.shape) > 3:
            direct = math.inf
        fft = FFT_COST * num_graphs * padded * math.log2(max(padded, 2)) * fft_width
        return direct * width, fft

    def denominator(self, mask: Tensor, normalization: str, fft: bool) -> Tensor:
        r"""The sum of the window weights (:obj:`"window"`) or the number of nodes
        (:obj:`"mean"`, borderline pairs decided as by :meth:`border_counts`) within the radius
        of every pixel, for a node mask of shape :math:`(B, 1, n_1, \dots, n_d)`."""
        if normalization == "window":
            window = bump(self.offset.pow(2).sum(-1) / self.radius**2).to(mask.dtype)
            return stencil_conv(mask, window.view(1, 1, *self.box), self.half, 1, fft)
        count = self.inside.to(mask.dtype).view(1, 1, *self.box)
        denom = stencil_conv(mask, count, self.half, 1, fft)
        return (denom.round() if fft else denom) + self.border_counts(mask)

    def tap_index(self, src_pixel: Tensor, dst_pixel: Tensor) -> Tensor:
        r"""The box index of the offset :math:`\mathbf{k} = \mathbf{p}_{dst} - \mathbf{p}_{src}`
        (in lattice steps) of each pair of flat pixel indices, or :math:`T` (one past the box)
        where it lies outside the box. Indexes :attr:`offset` and kernel tables built on it."""
        return self.tap_of_steps(self.pixel_steps(dst_pixel) - self.pixel_steps(src_pixel))

    def edge_taps(self, pixel: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        r""":meth:`tap_index` of the edges :math:`(s_e, d_e)` of nodes at the flat pixels
        :obj:`pixel`, with the divisions done once per node instead of once per edge: the
        coordinates of the nodes (:meth:`pixel_steps`), their differences gathered axis by axis
        (1-D gathers are far faster than gathers of rows of :math:`d`), then
        :meth:`tap_of_steps`."""
        cols = self.pixel_steps(pixel).t().contiguous()
        steps = [c.index_select(0, dst) - c.index_select(0, src) for c in cols]
        return self.tap_of_steps(torch.stack(steps, dim=-1))

    def pixel_steps(self, pixel: Tensor) -> Tensor:
        r"""The lattice coordinates :math:`(i_1, \dots, i_d)` of flat pixel indices, int32
        :math:`(N, d)`."""
        cols, rest = [], pixel.to(torch.int32)
        for n in reversed(self.shape):
            cols.append(torch.remainder(rest, n))
            rest = torch.div(rest, n, rounding_mode="floor")
        return torch.stack(cols[::-1], dim=-1)

    def tap_of_steps(self, k: Tensor) -> Tensor:
        r"""The box index of integer offsets :math:`\mathbf{k}` :math:`(E, d)`, or :math:`T`
        (one past the box) where they lie outside it."""
        tap = inside = None
        for axis, h in enumerate(self.half):  # column by column: no reductions over tiny axes
            col = k[:, axis]
            ok = col.abs() <= h
            inside = ok if inside is None else inside & ok
            tap = col + h if tap is None else tap * (2 * h + 1) + (col + h)
        return torch.where(inside, tap, self.steps.size(0)).long()

    def border_counts(self, mask: Tensor) -> Tensor:
        r"""Neighbours at the borderline offsets :math:`|\mathbf{k}/\mathbf{n}| \approx r`,
        included pair by pair with the float test of ``torch_cluster`` (``sum((p_i - p_j)^2)``
        accumulated over axes in the coordinates' dtype, strictly below ``r * r``)."""
        out = torch.zeros_like(mask)
        if not self.border_steps:
            return out
        shape, half = mask.shape[2:], self.half
        r_sq = torch.tensor(self.radius**2, dtype=torch.float64).to(mask.dtype)
        coords = [
            ((torch.arange(n, dtype=torch.float64, device=mask.device) + 0.5) / n).to(mask.dtype)
            for n in shape
        ]
        pad = [w for h in reversed(half) for w in (h, h)]
        padded = F.pad(mask, pad)
        for step in self.border_steps:
            index = [slice(h - k, h - k + n) for h, k, n in zip(half, step, shape, strict=True)]
            shifted = padded[(Ellipsis, *index)]
            dist = None
            for axis, (u, k, n) in enumerate(zip(coords, step, shape, strict=True)):
                src = (torch.arange(n, device=mask.device) - k).clamp(0, n - 1)
                diff = u - u[src]
                view = [1] * len(shape)
                view[axis] = n
                term = (diff * diff).view(view)
                dist = term if dist is None else dist + term
            out = out + shifted * (dist < r_sq).to(mask.dtype)
        return out


def fast_fft_size(n: int) -> int:
    r"""The smallest :math:`2^a 3^b 5^c \ge n` (an efficient FFT length)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def stencil_conv(
    inp: Tensor, stencil: Tensor, half: tuple[int, ...], groups: int, fft: bool
) -> Tensor:
    r"""Zero-padded lattice convolution :math:`y[\mathbf{p}] = \sum_{\mathbf{k}}
    g[\mathbf{k}]\, x[\mathbf{p} - \mathbf{k}]`, directly (``conv1d/2d/3d``) or by FFT.

    Args:
        inp (torch.Tensor): Input of shape :math:`(B, I, n_1, \dots, n_d)`.
        stencil (torch.Tensor): :math:`g` of shape :math:`(O, I / \text{groups}, 2R_1 + 1, \dots)`,
            ``stencil[..., k + R] = g[k]``.
        half (tuple[int, ...]): The half widths :math:`R_a`.
        groups (int): 1 (full) or :math:`I = O` (depthwise).
        fft (bool): Convolve by FFT (zero padding to an efficient size) instead of directly.

    Shapes:
        - **output:** :math:`(B, O, n_1, \dots, n_d)`
    """
    d = len(half)
    if not fft:
        conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1] if d <= 3 else None
        if conv is None:
            raise ValueError(f"Direct dense convolution supports d <= 3, got d={d}")
        weight = stencil.flip(list(range(2, 2 + d)))  # torch convolutions are correlations
        return conv(inp, weight, padding=half, groups=groups)
    dtype, size = inp.dtype, inp.shape[2:]
    if dtype not in (torch.float32, torch.float64):  # half-precision FFTs need powers of 2
        inp, stencil = inp.float(), stencil.float()
    fft_size = [fast_fft_size(n + h) for n, h in zip(size, half, strict=True)]
    dims = tuple(range(-d, 0))
    pad = []
    for length, width in zip(reversed(fft_size), reversed(stencil.shape[2:]), strict=True):
        pad += [0, length - width]
    kernel = torch.roll(F.pad(stencil, pad), [-h for h in half], dims)
    fx = torch.fft.rfftn(inp, s=fft_size, dim=dims)
    fk = torch.fft.rfftn(kernel, dim=dims)
    if groups == 1:
        prod = torch.einsum("bi...,oi...->bo...", fx, fk)
    else:
        prod = fx * fk[:, 0]
    out = torch.fft.irfftn(prod, s=fft_size, dim=dims)
    return out[(Ellipsis, *[slice(0, n) for n in size])].to(dtype)
