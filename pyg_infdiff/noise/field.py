r"""Mollified noise :math:`T \varepsilon`: Gaussian random fields on :math:`[0, 1]^d` that can
be evaluated at any coordinates, so that one draw gives consistent values on every lattice and
point set."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pyg_infdiff.noise.cosine import (
    check_points,
    compute_dtype,
    cosine_basis,
    evaluate_series,
    evaluate_series_on_lattice,
    lattice_matrix,
)
from pyg_infdiff.noise.mollifier import gaussian_gains, num_freq_above, outer_product

if TYPE_CHECKING:  # only annotations: importing noise does not import graph (nor PyG)
    from pyg_infdiff.graph.lattice import LatticeIndex


@functools.lru_cache(maxsize=32)
def _lattice_factor(n: int, gains: tuple[float, ...], device: torch.device,
                    dtype: torch.dtype) -> Tensor:
    # B with B^T B = A^T A for A = diag(gains) Phi, Phi[k, i] = phi_k(u_i) at the n pixel
    # centres (the synthesis matrix of on_lattice): A itself (K x n) when K <= n, else the
    # n x n triangular factor R of A = QR (float64 on the CPU, once per lattice size).
    g = torch.tensor(gains, dtype=torch.float64)
    a = g[:, None] * lattice_matrix(n, len(gains), dtype=torch.float64).t()
    if len(gains) > n:
        a = torch.linalg.qr(a, mode="r").R
    return a.to(device=device, dtype=dtype)


def _standard_normals(num_graphs: int, channels: int, sizes: tuple[int, ...],
                      generator: torch.Generator | None, device: torch.device | str | None,
                      dtype: torch.dtype) -> Tensor:
    # The draws of MollifiedNoise, (B, C, *sizes): float32 standard normals on the generator's
    # device (so a generator state gives the same numbers for every requested dtype), then
    # moved to `device` (default: where they were drawn) in the compute dtype of `dtype`.
    if num_graphs < 1 or channels < 1:
        raise ValueError(f"'num_graphs' and 'channels' must be positive, got "
                         f"num_graphs={num_graphs}, channels={channels}")
    draw_device = generator.device if generator is not None else device
    z = torch.randn((num_graphs, channels, *sizes), generator=generator, device=draw_device,
                    dtype=torch.float32)
    return z.to(device=z.device if device is None else device, dtype=compute_dtype(dtype))


def _lattice_cost(num_graphs: int, channels: int, freqs: Sequence[int],
                  shape: Sequence[int]) -> int:
    # Multiply-adds of the separable lattice evaluation (last axis first).
    size, cost = num_graphs * channels * math.prod(freqs), 0
    for k, n in zip(reversed(freqs), reversed(shape), strict=True):
        cost += size * n
        size = size // k * n
    return cost


@dataclass(frozen=True)
class NoiseField:
    r"""One drawn mollified noise field per graph and channel, held as cosine coefficients.

    .. math::
        f_{b, c}(\mathbf{u}) = \sum_{\mathbf{k}} a_{b, c, \mathbf{k}} \,
        \phi_{\mathbf{k}}(\mathbf{u})

    Made by :meth:`MollifiedNoise.draw`. It is a function: :meth:`evaluate`,
    :meth:`on_lattice` and :meth:`at` read the same values wherever coordinates coincide.

    Args:
        coeffs (torch.Tensor): Coefficients, shape :math:`(B, C, K, \dots, K)`.
    """

    coeffs: Tensor

    @property
    def num_graphs(self) -> int:
        r"""The number of fields (graphs) :math:`B`."""
        return self.coeffs.size(0)

    @property
    def channels(self) -> int:
        r"""The number of channels :math:`C`."""
        return self.coeffs.size(1)

    @property
    def ndim(self) -> int:
        r"""The dimension :math:`d` of the domain."""
        return self.coeffs.dim() - 2

    def evaluate(
        self, pos: Tensor, batch: Tensor | None = None, *, chunk_size: int | None = None
    ) -> Tensor:
        r"""Evaluates the fields at arbitrary coordinates, node :math:`m` reading the field
        of graph :obj:`batch[m]`.

        Args:
            pos (torch.Tensor): Coordinates in :math:`[0, 1]^d`, shape :math:`(N, d)`.
            batch (torch.Tensor, optional): Graph index of each node, shape :math:`(N,)`;
                required when :math:`B > 1`. (default: :obj:`None`)
            chunk_size (int, optional): Nodes per chunk. (default: :obj:`None`, automatic)

        Shapes:
            - **output:** :math:`(N, C)`
        """
        return evaluate_series(self.coeffs, pos, batch, chunk_size=chunk_size)

    def on_lattice(self, shape: Sequence[int]) -> Tensor:
        r"""Evaluates the fields at the pixel centres of a lattice by separable matrix
        products.

        Args:
            shape (Sequence[int]): The lattice :math:`(n_1, \dots, n_d)`.

        Shapes:
            - **output:** :math:`(B, C, n_1, \dots, n_d)`
        """
        if len(shape) != self.ndim:
            raise ValueError(f"'shape' must have {self.ndim} entries, got {tuple(shape)}")
        return evaluate_series_on_lattice(self.coeffs, shape)

    def at(self, lattice_index: LatticeIndex) -> Tensor:
        r"""Evaluates the fields at the nodes of lattice graphs. Takes the dense path
        (:meth:`on_lattice` then :meth:`~pyg_infdiff.graph.LatticeIndex.gather`) when its cost
        estimate is lower than point evaluation, which is the case unless the nodes are a small
        fraction of the lattices; otherwise :meth:`evaluate` at the node coordinates.

        Args:
            lattice_index (LatticeIndex): Where the nodes sit; its :obj:`num_graphs` must equal
                :math:`B` and its :obj:`ndim` must equal :math:`d`.

        Shapes:
            - **output:** :math:`(N, C)`
        """
        if lattice_index.ndim != self.ndim or lattice_index.num_graphs != self.num_graphs:
            raise ValueError(
                f"The lattice index ({lattice_index.num_graphs} graphs, d="
                f"{lattice_index.ndim}) does not match the field ({self.num_graphs} graphs, "
                f"d={self.ndim})")
        freqs = self.coeffs.shape[2:]
        dense = _lattice_cost(self.num_graphs, self.channels, freqs, lattice_index.shape)
        points = lattice_index.pixel.numel() * self.channels * math.prod(freqs)
        if dense <= points:
            return lattice_index.gather(self.on_lattice(lattice_index.shape))
        pos = lattice_index.pos(torch.float64).to(self.coeffs.device)
        return self.evaluate(pos, lattice_index.batch.to(self.coeffs.device))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_graphs={self.num_graphs}, "
                f"channels={self.channels}, ndim={self.ndim}, "
                f"num_freq={tuple(self.coeffs.shape[2:])})")


class MollifiedNoise:
    r"""Mollified white noise :math:`T \varepsilon` of ∞-Diff (`"Infinite Resolution Diffusion
    with Subsampled Mollified States" <https://arxiv.org/abs/2303.18242>`_) as a Gaussian random
    field on :math:`[0, 1]^d`, normalised to unit average marginal variance.

    .. math::
        f(\mathbf{u}) = \frac{1}{Z} \sum_{\mathbf{k} \in \{0..K-1\}^d} z_{\mathbf{k}} \,
        g_{\mathbf{k}} \, \phi_{\mathbf{k}}(\mathbf{u}), \qquad
        z_{\mathbf{k}} \sim \mathcal{N}(0, 1), \qquad
        Z^2 = \sum_{\mathbf{k}} g_{\mathbf{k}}^2

    with the gains :math:`g_{\mathbf{k}} = \prod_j \exp(-(\pi k_j \sigma)^2 / 2)` of
    :class:`GaussianMollifier` and :math:`K` the number of frequencies whose 1-D gain is at
    least :obj:`cutoff` (box truncation). Because the cosines are orthonormal,
    :math:`\int_{[0,1]^d} \mathrm{Var} f(\mathbf{u}) \, d\mathbf{u} = 1` exactly. As for
    white noise mollified with reflecting boundary, the variance rises within a few
    :math:`\sigma` of the faces (the mirror images add up) and so sits slightly below 1
    elsewhere: with :math:`S = \sum_{k<K} g_k^2 \approx \frac12 + \frac{1}{2 \sqrt{\pi}
    \sigma}`, it is :math:`(1 - \frac{1}{2S})^d \approx 1 - d \sqrt{\pi} \sigma` in the
    interior, :math:`2 - \frac1S` times that factor per other axis on a face, up to
    :math:`2^d` at a corner (:math:`\sigma = 1/128`, :math:`d = 2`: 0.973 inside, 1.95 at
    face centres, 3.8 at corners).

    A draw consumes the generator the same way whatever the coordinates (:math:`B C K^d`
    standard normals, drawn in float32 on the generator's device), so the same generator
    state gives the same function on every lattice and point set, in float32 or float64.

    Args:
        sigma (float): The mollifier width :math:`\sigma` in domain units.
        ndim (int): The dimension :math:`d` of the domain.
        cutoff (float, optional): The 1-D gain below which frequencies are truncated.
            (default: :obj:`1e-3`)
        max_freq (int, optional): An upper bound on :math:`K`. (default: :obj:`None`)
        max_coefficients (int, optional): The largest :math:`K^d` allowed; a smaller
            :math:`\sigma` raises a :class:`ValueError` rather than allocating (and evaluating)
            a huge series. (default: :obj:`2**22`)
    """

    def __init__(
        self,
        sigma: float,
        ndim: int,
        *,
        cutoff: float = 1e-3,
        max_freq: int | None = None,
        max_coefficients: int = 2**22,
    ) -> None:
        sigma = float(sigma)
        if not (sigma > 0.0 and math.isfinite(sigma)):
            raise ValueError(f"'sigma' must be positive and finite, got {sigma}")
        if ndim < 1:
            raise ValueError(f"'ndim' must be at least 1, got {ndim}")
        if not 0.0 < cutoff < 1.0:
            raise ValueError(f"'cutoff' must lie in (0, 1), got {cutoff}")
        if max_freq is not None and max_freq < 1:
            raise ValueError(f"'max_freq' must be at least 1, got {max_freq}")
        num_freq = num_freq_above(sigma, cutoff)
        if max_freq is not None:
            num_freq = min(num_freq, int(max_freq))
        if num_freq**ndim > max_coefficients:
            raise ValueError(
                f"MollifiedNoise(sigma={sigma:g}, ndim={ndim}, cutoff={cutoff:g}) needs "
                f"K={num_freq} frequencies per axis, K^d={num_freq**ndim} coefficients per "
                f"channel, above max_coefficients={max_coefficients}; use a larger sigma or "
                f"cutoff, pass max_freq, or raise max_coefficients")
        self.sigma = sigma
        self.ndim = int(ndim)
        self.cutoff = float(cutoff)
        self.max_freq = max_freq
        self.num_freq = num_freq
        gains = gaussian_gains(sigma, num_freq)
        self._gains = gains / gains.square().sum().sqrt()  # per-axis share of 1 / Z
        self._gain_values = tuple(self._gains.tolist())  # the key of the lattice factors

    def amplitudes(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        r"""The standard deviations :math:`g_{\mathbf{k}} / Z` of the coefficients.

        Args:
            device (torch.device, optional): The device. (default: :obj:`None`)
            dtype (torch.dtype, optional): The dtype. (default: :obj:`torch.float32`)

        Shapes:
            - **output:** :math:`(K, \dots, K)` (:math:`d` axes)
        """
        gains = self._gains.to(device=device, dtype=dtype)
        return outer_product([gains] * self.ndim)

    def draw(
        self,
        num_graphs: int = 1,
        channels: int = 1,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NoiseField:
        r"""Draws one field per graph and channel.

        Args:
            num_graphs (int, optional): The number of fields :math:`B`. (default: :obj:`1`)
            channels (int, optional): The number of channels :math:`C`. (default: :obj:`1`)
            generator (torch.Generator, optional): The source of randomness.
                (default: :obj:`None`, the global generator)
            device (torch.device, optional): The device of the coefficients.
                (default: :obj:`None`, the generator's device, else CPU)
            dtype (torch.dtype, optional): The dtype of the coefficients.
                (default: :obj:`torch.float32`)
        """
        z = _standard_normals(num_graphs, channels, (self.num_freq,) * self.ndim, generator,
                              device, dtype)
        return NoiseField(z * self.amplitudes(z.device, z.dtype))

    def sample_lattice(
        self,
        shape: Sequence[int],
        num_graphs: int = 1,
        channels: int = 1,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r"""Draws the fields' values on one lattice, with the distribution of
        ``draw(num_graphs, channels, ...).on_lattice(shape)`` from fewer random numbers: for
        training noise, which needs its values at the nodes and nothing else.

        On a lattice the field is a Gaussian vector with the separable covariance
        :math:`\bigotimes_j A_j^\top A_j`, where :math:`A_j = \mathrm{diag}(g / \sqrt{Z})\,
        \Phi_j` holds the :math:`K` scaled cosines at the :math:`n_j` pixel centres of axis
        :math:`j`. Where :math:`K > n_j` (a mollifier narrower than the pixels passes more
        frequencies than the axis has pixels, e.g. :math:`K = 303` for half a pixel of
        :math:`128^2`), :math:`A_j = Q_j R_j` with orthonormal columns :math:`Q_j`, and
        :math:`Q_j^\top z` is again standard normal, so :math:`R_j` (:math:`n_j \times n_j`)
        replaces :math:`A_j`. A draw then takes :math:`\prod_j \min(K, n_j)` standard normals
        per graph and channel instead of :math:`K^d` (5.6× fewer at :math:`128^2`), and as
        many fewer multiply-adds. The values are not those of :meth:`draw` for the same
        generator state, and lattices of other shapes do not read one function: draw with
        :meth:`draw` where a field must agree across discretisations (sampling).

        Args:
            shape (Sequence[int]): The lattice :math:`(n_1, \dots, n_d)`.
            num_graphs (int, optional): The number of fields :math:`B`. (default: :obj:`1`)
            channels (int, optional): The number of channels :math:`C`. (default: :obj:`1`)
            generator (torch.Generator, optional): The source of randomness (standard normals
                in float32 on its device). (default: :obj:`None`, the global generator)
            device (torch.device, optional): The device of the values. (default: :obj:`None`,
                the generator's device, else CPU)
            dtype (torch.dtype, optional): The dtype of the values (float64, else computed in
                float32). (default: :obj:`torch.float32`)

        Shapes:
            - **output:** :math:`(B, C, n_1, \dots, n_d)`
        """
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.ndim or min(shape) < 1:
            raise ValueError(f"'shape' must hold {self.ndim} positive sizes, got {shape}")
        out = _standard_normals(num_graphs, channels, tuple(min(self.num_freq, n) for n in shape),
                                generator, device, dtype)
        for n in shape:  # contract the first lattice axis; it comes back as the last one
            factor = _lattice_factor(n, self._gain_values, out.device, out.dtype)
            out = torch.tensordot(out, factor, dims=([2], [0]))
        return out

    def sample(
        self,
        pos: Tensor,
        batch: Tensor | None = None,
        channels: int = 1,
        generator: torch.Generator | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        r"""Draws fields and evaluates them at the nodes: ``draw(...).evaluate(pos, batch)``.

        Args:
            pos (torch.Tensor): Coordinates in :math:`[0, 1]^d`, shape :math:`(N, d)`.
            batch (torch.Tensor, optional): Graph index of each node. (default: :obj:`None`)
            channels (int, optional): The number of channels :math:`C`. (default: :obj:`1`)
            generator (torch.Generator, optional): The source of randomness.
                (default: :obj:`None`)
            num_graphs (int, optional): The number of fields to draw; pass it to consume the
                generator independently of :obj:`batch`. (default: :obj:`None`,
                ``batch.max() + 1``, or 1 without :obj:`batch`)

        Shapes:
            - **output:** :math:`(N, C)`, float64 for float64 :obj:`pos`, else float32.
        """
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch is not None and batch.numel() else 1
        check_points(pos, self.ndim, batch, num_graphs)
        field = self.draw(num_graphs, channels, generator, device=pos.device,
                          dtype=compute_dtype(pos.dtype))
        return field.evaluate(pos, batch)

    def covariance(self, u: Tensor, v: Tensor) -> Tensor:
        r"""The analytic covariance of the field between pairs of points.

        .. math::
            \mathrm{Cov}(f(\mathbf{u}), f(\mathbf{v})) = \prod_{j=1}^d
            \sum_{k < K} \frac{g_k^2}{\sum_{l < K} g_l^2} \phi_k(u_j) \, \phi_k(v_j)

        Args:
            u (torch.Tensor): Points, shape :math:`(M, d)`.
            v (torch.Tensor): Points, shape :math:`(M, d)`.

        Shapes:
            - **output:** :math:`(M,)`, float64.
        """
        check_points(u, self.ndim)
        check_points(v, self.ndim)
        if u.shape != v.shape:
            raise ValueError(f"'u' and 'v' must have equal shapes, got {tuple(u.shape)} and "
                             f"{tuple(v.shape)}")
        weights = self._gains.to(u.device).square()
        out = torch.ones(u.size(0), dtype=torch.float64, device=u.device)
        for j in range(self.ndim):
            bu = cosine_basis(u[:, j], self.num_freq, torch.float64)
            bv = cosine_basis(v[:, j], self.num_freq, torch.float64)
            out = out * (bu * bv * weights).sum(dim=-1)
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(sigma={self.sigma:g}, ndim={self.ndim}, "
                f"cutoff={self.cutoff:g}, num_freq={self.num_freq})")
