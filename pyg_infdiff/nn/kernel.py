r"""The continuous kernel :math:`\kappa` of the integral-kernel operator, a smooth function of
the offset between two points, in domain units, supported in a ball of radius :math:`r`.

Because :math:`\kappa` is a function of coordinates and not of pixel steps, the same weights
apply at every resolution and on every point set; :meth:`ContinuousKernel.on_lattice` tabulates
it at the offsets of a lattice for dense (convolutional) execution.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

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

_TINY = 1e-15
_BASIS_SCALE = 1.14136 * math.exp(2.0)


def border_tol(radius: float) -> float:
    r"""Offsets whose exact squared length is within this distance of :math:`r^2` are
    *borderline*: float32 rounding of the coordinates decides, pair by pair, whether a radius
    search includes them (bounds the rounding error of ``sum((p_i - p_j)^2)`` for coordinates in
    :math:`[0, 1]`, with a margin)."""
    return 2e-6 * radius * (1.0 + radius)


def bump(s_sq: Tensor) -> Tensor:
    r"""The smooth (:math:`C^\infty`) bump window used as envelope and quadrature window.

    .. math::
        e(s) = \begin{cases} \exp\!\left(1 - \frac{1}{1 - s^2}\right) & s < 1 \\
        0 & s \ge 1 \end{cases}

    with :math:`e(0) = 1`; all derivatives vanish at :math:`s = 1`.

    Args:
        s_sq (torch.Tensor): The squared normalised distance :math:`s^2 = |\delta|^2 / r^2`.
    """
    # exp(1 - 1/t) underflows to exactly 0 long before t reaches _TINY; clamping instead of
    # masking keeps gradients finite (1/_TINY^2 does not overflow in float32).
    return torch.exp(1.0 - 1.0 / (1.0 - s_sq).clamp_min(_TINY))


def smooth_basis(s: Tensor, num_basis: int) -> Tensor:
    r"""The smooth finite radial basis of e3nn on :math:`[0, 1]` with cutoff,
    ``e3nn.math.soft_one_hot_linspace(s, 0, 1, num_basis, basis="smooth_finite", cutoff=True)``
    (`"e3nn: Euclidean Neural Networks" <https://arxiv.org/abs/2207.09453>`_, Geiger & Smidt,
    2022), in closed form:

    .. math::
        \varphi_k(s) = 1.14136\, e^2\, u(1 + d_k)\, u(1 - d_k)
        = 1.14136\, e^2 \exp\!\left(-\frac{2}{1 - d_k^2}\right),
        \quad d_k = \frac{s - c_k}{h}, \quad |d_k| < 1,

    with :math:`u(x) = \exp(-1/x)` for :math:`x > 0` (else 0), centres :math:`c_k = k h`,
    :math:`h = 1 / (\text{num\_basis} + 1)`, :math:`k = 1, \dots, \text{num\_basis}`; zero
    elsewhere. Each :math:`\varphi_k` is :math:`C^\infty` and vanishes with all its
    derivatives at :math:`s = c_k \pm h`, so the last one ends exactly at :math:`s = 1`.

    **Why not e3nn itself** (issue 16): e3nn is not a dependency. Its implementation computes
    the same function with two exponentials, masks and a custom autograd function; measured
    (forward + backward, 1 CPU thread, medians of interleaved repeats, shared 2-core machine,
    e3nn 0.6.0): the basis alone 1.35× to 1.63× slower than this closed form on 441 to 200,000
    distances, the whole :class:`ContinuousKernel` 0.97× to 1.27×. It also differs from today's
    numbers by up to :math:`2 \cdot 10^{-6}` in float32 (centres from ``linspace``,
    :math:`e^2` rounded to float32). The formula above is tested against its definition, and
    against e3nn where e3nn is installed (``tests/nn/test_kernel.py``).

    Args:
        s (torch.Tensor): Normalised distances :math:`s = |\delta| / r`.
        num_basis (int): The number of basis functions.

    Shapes:
        - **input:** :math:`(E,)`, **output:** :math:`(E, \text{num\_basis})`
    """
    step = 1.0 / (num_basis + 1)
    centres = torch.arange(1, num_basis + 1, dtype=s.dtype, device=s.device) * step
    d = (s.unsqueeze(-1) - centres) * (1.0 / step)
    return _BASIS_SCALE * torch.exp(-2.0 / (1.0 - d * d).clamp_min(_TINY))


def bump_mean(dim: int) -> float:
    r"""The average :math:`\frac{1}{|B_1|}\int_{B_1} e(|\mathbf{s}|)\,d\mathbf{s}` of the
    :func:`bump` over the unit ball of :math:`\mathbb{R}^d` (0.60 for :math:`d=1`, 0.40 for
    :math:`d=2`)."""
    s = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
    return float(dim * (bump(s * s) * s ** (dim - 1)).mean())


class ContinuousKernel(torch.nn.Module):
    r"""A learnable continuous kernel :math:`\kappa : \mathbb{R}^d \to \mathbb{R}^F` supported
    in the ball :math:`B_r(0)`, as used by the integral-kernel operators of ∞-Diff
    (`"Infinite Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_, Bond-Taylor & Willcocks, ICLR 2024).

    .. math::
        \kappa(\delta) = e\!\left(\tfrac{|\delta|}{r}\right)\,
        \mathrm{MLP}\!\left(\left[\varphi\!\left(\tfrac{|\delta|}{r}\right),
        \tfrac{\delta}{r}\right]\right)

    where :math:`\varphi` is the smooth finite radial basis of e3nn (:func:`smooth_basis`,
    :math:`C^\infty`, zero beyond :math:`r`), the MLP has one hidden SiLU layer and :math:`e` is
    the :func:`bump` envelope, so :math:`\kappa` and all its derivatives vanish at
    :math:`|\delta| = r`. The envelope is also exposed as :meth:`window`, the quadrature window
    of the self-normalised operator.

    The last layer is initialised with weights :math:`\mathcal{N}(0, g^2 / H)` and biases
    :math:`\mathcal{N}(0, g^2)`, so the window-weighted mean of every output over the ball has
    variance close to :math:`g^2` (the *gain*).

    Args:
        dim (int): The dimension :math:`d` of the domain.
        out_features (int): The number of kernel values :math:`F` per offset.
        radius (float): The support radius :math:`r` in domain units.
        num_basis (int, optional): The number of radial basis functions. (default: :obj:`8`)
        hidden_channels (int, optional): The hidden width :math:`H` of the MLP.
            (default: :obj:`32`)
        gain (float, optional): The initial scale :math:`g` of the kernel. (default: :obj:`1.0`)

    Shapes:
        - **input:** offsets :math:`\delta` of shape :math:`(E, d)`, domain units
        - **output:** :math:`(E, F)`
    """

    def __init__(
        self,
        dim: int,
        out_features: int,
        radius: float,
        *,
        num_basis: int = 8,
        hidden_channels: int = 32,
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"'dim' must be at least 1, got {dim}")
        if not radius > 0 or not math.isfinite(radius):
            raise ValueError(f"'radius' must be positive and finite, got {radius}")
        if out_features < 1 or num_basis < 2 or hidden_channels < 1:
            raise ValueError(
                f"Need out_features >= 1, num_basis >= 2 and hidden_channels >= 1, got "
                f"{out_features}, {num_basis} and {hidden_channels}"
            )
        self.dim = dim
        self.out_features = out_features
        self.radius = float(radius)
        self.num_basis = num_basis
        self.hidden_channels = hidden_channels
        self.gain = float(gain)
        self.lin1 = torch.nn.Linear(num_basis + dim, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.lin1.reset_parameters()
        with torch.no_grad():
            self.lin2.weight.normal_(0.0, self.gain / math.sqrt(self.hidden_channels))
            self.lin2.bias.normal_(0.0, self.gain)

    def window(self, offset: Tensor) -> Tensor:
        r"""The fixed quadrature window :math:`w(\delta) = e(|\delta| / r)`, shape :math:`(E,)`."""
        return bump(offset.pow(2).sum(-1) / self.radius**2)

    def forward(self, offset: Tensor) -> Tensor:
        if offset.size(-1) != self.dim:
            raise ValueError(
                f"Expected offsets with {self.dim} coordinates, got shape {tuple(offset.shape)}"
            )
        s_sq = offset.pow(2).sum(-1) / self.radius**2
        env = bump(s_sq)
        s = s_sq.clamp_min(1e-30).sqrt()
        radial = smooth_basis(s, self.num_basis)
        hidden = F.silu(self.lin1(torch.cat([radial, offset / self.radius], dim=-1)))
        # env * (W h + b) as one matmul: [env * h, env] @ [W, b]^T.
        weight = torch.cat([self.lin2.weight, self.lin2.bias.unsqueeze(-1)], dim=-1)
        return torch.cat([hidden * env.unsqueeze(-1), env.unsqueeze(-1)], dim=-1) @ weight.t()

    def on_lattice(self, shape: Sequence[int]) -> LatticeStencil:
        r"""The offsets :math:`\mathbf{k} / \mathbf{n}` of the lattice :obj:`shape` in the box
        around the ball of radius :math:`r`, as a :class:`LatticeStencil` on the device and
        dtype of the parameters; the kernel tabulated on them is ``self(stencil.offset)``
        (exactly zero outside the ball)."""
        p = self.lin1.weight
        return LatticeStencil(tuple(shape), self.radius, p.device, p.dtype)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(dim={self.dim}, out_features={self.out_features}, "
            f"radius={self.radius:.4f}, num_basis={self.num_basis}, "
            f"hidden_channels={self.hidden_channels})"
        )


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
