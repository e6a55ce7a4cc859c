r"""The cosine basis of :math:`L^2([0, 1]^d)` with Neumann (reflecting) boundary, lattice
transforms into it, and evaluation of cosine series at lattice or arbitrary coordinates.

Conventions:

* Basis functions (orthonormal on :math:`[0, 1]`), tensor products over the :math:`d` axes:

  .. math::
      \phi_0(u) = 1, \qquad \phi_k(u) = \sqrt{2} \cos(\pi k u), \qquad
      \phi_{\mathbf{k}}(\mathbf{u}) = \prod_{j=1}^d \phi_{k_j}(u_j).

* The coefficients of lattice data :math:`x_i` on :math:`n` pixel centres
  :math:`u_i = (i + 0.5) / n` are those of the function that interpolates the data,

  .. math::
      c_k = \frac{1}{n} \sum_{i=0}^{n-1} x_i \, \phi_k(u_i), \qquad
      f(u) = \sum_{k=0}^{n-1} c_k \, \phi_k(u), \qquad f(u_i) = x_i,

  a DCT-II scaled so that :math:`c` are the coefficients of a *function* on :math:`[0, 1]`
  (independent of :math:`n` for a band-limited function). Evaluating the series at the pixel
  centres gives the data back exactly; at a finer lattice it gives the band-limited interpolant.

All transforms are matrix products along one axis at a time (PyTorch has no DCT). Basis values
are computed in float64 and cast; the products run in float32, or float64 for float64 inputs,
with autocast disabled.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pyg_infdiff._validation import validation_enabled
from pyg_infdiff.graph.lattice import check_nodes

_CHUNK_ELEMENTS = 2**18  # intermediate of evaluate_series: cache-sized chunks are fastest
_POS_TOL = 1e-6


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    r"""The dtype the noise module computes in: float64 for float64 inputs, else float32.

    Args:
        dtype (torch.dtype): The dtype of the input.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def no_autocast(device: torch.device) -> torch.autocast:
    r"""A context that disables autocast on :obj:`device` (transforms must not run in half
    precision: their accuracy is the point).

    Args:
        device (torch.device): The device whose autocast is disabled.
    """
    return torch.autocast(device_type=device.type, enabled=False)


def cosine_basis(u: Tensor, num_freq: int, dtype: torch.dtype | None = None) -> Tensor:
    r"""Evaluates :math:`\phi_0, \dots, \phi_{K-1}` at coordinates :math:`u \in [0, 1]`.

    .. math::
        B_{mk} = \phi_k(u_m)

    Args:
        u (torch.Tensor): Coordinates, shape :math:`(M,)`.
        num_freq (int): The number of frequencies :math:`K`.
        dtype (torch.dtype, optional): Output dtype; the values are computed in float64.
            (default: :obj:`None`, the compute dtype of :obj:`u`)

    Shapes:
        - **output:** :math:`(M, K)`
    """
    if num_freq < 1:
        raise ValueError(f"'num_freq' must be at least 1, got {num_freq}")
    dtype = compute_dtype(u.dtype) if dtype is None else dtype
    k = torch.arange(num_freq, device=u.device, dtype=torch.float64) * math.pi
    out = torch.outer(u.reshape(-1).to(torch.float64), k).cos_().to(dtype)
    out.mul_(math.sqrt(2.0))[:, 0] = 1.0
    return out


@functools.lru_cache(maxsize=64)
def _lattice_matrix(
    n: int, num_freq: int, analysis: bool, device: torch.device, dtype: torch.dtype
) -> Tensor:
    # synthesis: [n, K] with phi_k(u_i) for every k < K (evaluation at the pixel centres);
    # analysis: [n, K] with phi_k(u_i) / n for k < min(n, K), zero columns for k >= n.
    i = torch.arange(n, dtype=torch.int64, device=device)
    k = torch.arange(num_freq, dtype=torch.int64, device=device)
    # cos(pi k (2i + 1) / (2n)) with the argument reduced exactly in integers.
    m = torch.remainder(k.view(1, -1) * (2 * i.view(-1, 1) + 1), 4 * n)
    mat = torch.cos(m.to(torch.float64) * (math.pi / (2 * n))) * math.sqrt(2.0)
    mat[:, 0] = 1.0
    if analysis:
        mat = mat / n
        mat[:, n:] = 0.0
    return mat.to(dtype)


def lattice_matrix(
    n: int,
    num_freq: int,
    *,
    analysis: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""The basis at the :math:`n` pixel centres of a lattice axis (cached, do not modify).

    .. math::
        S_{ik} = \phi_k(u_i), \qquad A_{ik} = \frac{1}{n} \phi_k(u_i) \, [k < n]

    With :obj:`analysis=True` returns :math:`A` (lattice values to coefficients, zero for the
    frequencies :math:`k \ge n` that :math:`n` pixels cannot carry), else :math:`S`
    (coefficients to values at the pixel centres).

    Args:
        n (int): The number of pixels along the axis.
        num_freq (int): The number of frequencies :math:`K`.
        analysis (bool, optional): Whether to return :math:`A` instead of :math:`S`.
            (default: :obj:`False`)
        device (torch.device, optional): The device. (default: :obj:`None`)
        dtype (torch.dtype, optional): The dtype. (default: :obj:`torch.float32`)

    Shapes:
        - **output:** :math:`(n, K)`
    """
    if n < 1 or num_freq < 1:
        raise ValueError(f"'n' and 'num_freq' must be positive, got n={n}, num_freq={num_freq}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return _lattice_matrix(int(n), int(num_freq), bool(analysis), device, dtype)


def contract(x: Tensor, dim: int, mat: Tensor) -> Tensor:
    r"""Multiplies one axis of a tensor by a matrix, leaving the axis in place.

    .. math::
        y_{\dots, j, \dots} = \sum_i x_{\dots, i, \dots} M_{ij}

    Args:
        x (torch.Tensor): The input, with size :math:`n` along :obj:`dim`.
        dim (int): The axis to contract.
        mat (torch.Tensor): The matrix :math:`M`, shape :math:`(n, m)`.

    Shapes:
        - **output:** the shape of :obj:`x` with size :math:`m` along :obj:`dim`.
    """
    if dim in (-1, x.dim() - 1):
        return x @ mat
    return (x.movedim(dim, -1) @ mat).movedim(-1, dim)


def _per_dim(value: int | Sequence[int] | None, default: Sequence[int], name: str) -> list[int]:
    if value is None:
        return [int(v) for v in default]
    if isinstance(value, int):
        out = [value] * len(default)
    else:
        out = [int(v) for v in value]
    if len(out) != len(default) or any(v < 1 for v in out):
        raise ValueError(f"'{name}' must be positive, one per dimension ({len(default)}), "
                         f"got {value}")
    return out


def _check_ndim(x: Tensor, ndim: int) -> None:
    if ndim < 1 or ndim > x.dim():
        raise ValueError(f"'ndim' must be in [1, {x.dim()}] for a {x.dim()}-D tensor, got {ndim}")


def dct(x: Tensor, ndim: int, num_freq: int | Sequence[int] | None = None) -> Tensor:
    r"""Cosine coefficients of lattice data over its last :obj:`ndim` axes (a DCT-II).

    .. math::
        c_{\mathbf{k}} = \frac{1}{\prod_j n_j} \sum_{\mathbf{i}} x_{\mathbf{i}} \,
        \phi_{\mathbf{k}}(\mathbf{u}_{\mathbf{i}})

    These are the coefficients of the band-limited interpolant of the data, so that
    :func:`idct` (the series at the pixel centres) inverts it exactly when
    :obj:`num_freq` equals the lattice size. Fewer frequencies truncate the series; more
    zero-pad it.

    Args:
        x (torch.Tensor): Lattice data, shape :math:`(*, n_1, \dots, n_d)`.
        ndim (int): The number :math:`d` of trailing lattice axes.
        num_freq (int or Sequence[int], optional): Frequencies :math:`K_j` kept per axis.
            (default: :obj:`None`, the lattice size)

    Shapes:
        - **output:** :math:`(*, K_1, \dots, K_d)`, in the compute dtype (float64 for float64
          input, else float32).
    """
    _check_ndim(x, ndim)
    shape = x.shape[x.dim() - ndim:]
    freqs = _per_dim(num_freq, shape, "num_freq")
    dtype = compute_dtype(x.dtype)
    with no_autocast(x.device):
        out = x.to(dtype)
        for j, (n, k) in enumerate(zip(shape, freqs, strict=True)):
            mat = lattice_matrix(n, k, analysis=True, device=x.device, dtype=dtype)
            out = contract(out, x.dim() - ndim + j, mat)
    return out


def idct(coeffs: Tensor, ndim: int, shape: Sequence[int] | None = None) -> Tensor:
    r"""Evaluates a cosine series over the last :obj:`ndim` axes at the pixel centres of a
    lattice (the inverse of :func:`dct` when :obj:`shape` is the original lattice).

    .. math::
        x_{\mathbf{i}} = \sum_{\mathbf{k}} c_{\mathbf{k}} \,
        \phi_{\mathbf{k}}(\mathbf{u}_{\mathbf{i}})

    Args:
        coeffs (torch.Tensor): Coefficients, shape :math:`(*, K_1, \dots, K_d)`.
        ndim (int): The number :math:`d` of trailing frequency axes.
        shape (Sequence[int], optional): The output lattice :math:`(n_1, \dots, n_d)`; a
            finer lattice than :math:`K` gives the band-limited interpolant.
            (default: :obj:`None`, :math:`n_j = K_j`)

    Shapes:
        - **output:** :math:`(*, n_1, \dots, n_d)`
    """
    _check_ndim(coeffs, ndim)
    freqs = coeffs.shape[coeffs.dim() - ndim:]
    sizes = _per_dim(None if shape is None else list(shape), freqs, "shape")
    dtype = compute_dtype(coeffs.dtype)
    with no_autocast(coeffs.device):
        out = coeffs.to(dtype)
        for j, (n, k) in enumerate(zip(sizes, freqs, strict=True)):
            mat = lattice_matrix(n, k, device=coeffs.device, dtype=dtype)
            out = contract(out, coeffs.dim() - ndim + j, mat.T)
    return out


def evaluate_series_on_lattice(coeffs: Tensor, shape: Sequence[int]) -> Tensor:
    r"""Evaluates per-graph cosine series on a lattice by separable matrix products
    (the fast path of :func:`evaluate_series` for full lattices).

    Args:
        coeffs (torch.Tensor): Coefficients, shape :math:`(B, C, K_1, \dots, K_d)`.
        shape (Sequence[int]): The lattice :math:`(n_1, \dots, n_d)`.

    Shapes:
        - **output:** :math:`(B, C, n_1, \dots, n_d)`
    """
    shape = list(shape)
    if coeffs.dim() != len(shape) + 2:
        raise ValueError(f"'coeffs' must have shape [B, C, K_1..K_d] with d={len(shape)}, "
                         f"got {tuple(coeffs.shape)}")
    return idct(coeffs, len(shape), shape)


def check_points(
    pos: Tensor, ndim: int, batch: Tensor | None = None, num_graphs: int | None = None
) -> None:
    r"""Validates coordinates (inside :math:`[0, 1]^d` up to :math:`10^{-6}`) and the
    :obj:`batch` vector; raises :class:`ValueError` stating the bad value. The values are read
    back to the host (once) only while :func:`pyg_infdiff.validation_enabled`; shapes always.

    Args:
        pos (torch.Tensor): Coordinates, shape :math:`(N, d)`.
        ndim (int): The expected dimension :math:`d`.
        batch (torch.Tensor, optional): Graph index of each node, shape :math:`(N,)`.
            (default: :obj:`None`)
        num_graphs (int, optional): The number of graphs that :obj:`batch` may index.
            (default: :obj:`None`, unchecked)
    """
    if pos.dim() != 2 or pos.size(1) != ndim:
        raise ValueError(f"'pos' must have shape [N, {ndim}], got {tuple(pos.shape)}")
    if batch is not None and (batch.dim() != 1 or batch.numel() != pos.size(0)):
        raise ValueError(f"'batch' must have shape [{pos.size(0)}] like 'pos', got "
                         f"{tuple(batch.shape)}")
    if validation_enabled():  # the values: one read back to the host
        check_nodes(pos, batch, num_graphs, tol=_POS_TOL)


def _series_at(coeffs: Tensor, pos: Tensor) -> Tensor:
    # coeffs [C, K_1..K_d], pos [n, d] -> [n, C]; contracts the last axis by a GEMM, then the
    # others by products-and-sums over the nodes.
    freqs = coeffs.shape[1:]
    n = pos.size(0)
    out = coeffs.reshape(-1, freqs[-1]) @ cosine_basis(pos[:, -1], freqs[-1], coeffs.dtype).T
    for j in range(len(freqs) - 2, -1, -1):
        basis = cosine_basis(pos[:, j], freqs[j], coeffs.dtype).T  # [K_j, n]
        out = (out.view(-1, freqs[j], n) * basis).sum(dim=1)
    return out.T


def evaluate_series(
    coeffs: Tensor,
    pos: Tensor,
    batch: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Evaluates per-graph cosine series at arbitrary coordinates.

    .. math::
        y_{m, c} = \sum_{\mathbf{k}} c_{b_m, c, \mathbf{k}} \,
        \phi_{\mathbf{k}}(\mathbf{u}_m)

    Nodes are grouped by graph and processed in chunks; the cost is
    :math:`O(N C \prod_j K_j)`. On full lattices :func:`evaluate_series_on_lattice` is much
    cheaper.

    Args:
        coeffs (torch.Tensor): Coefficients, shape :math:`(B, C, K_1, \dots, K_d)`.
        pos (torch.Tensor): Coordinates in :math:`[0, 1]^d`, shape :math:`(N, d)`.
        batch (torch.Tensor, optional): Graph index of each node, shape :math:`(N,)`; may be
            omitted only when :math:`B = 1`. (default: :obj:`None`)
        chunk_size (int, optional): Nodes per chunk. (default: :obj:`None`, sized so the
            intermediate tensor of :math:`C \prod_{j<d} K_j` values per node stays near
            :math:`2^{18}` elements, at least 64 nodes)

    Shapes:
        - **output:** :math:`(N, C)`, in the compute dtype of :obj:`coeffs`.
    """
    if coeffs.dim() < 3:
        raise ValueError(f"'coeffs' must have shape [B, C, K_1..K_d], got {tuple(coeffs.shape)}")
    num_graphs, channels = coeffs.shape[:2]
    ndim = coeffs.dim() - 2
    check_points(pos, ndim, batch, num_graphs)
    if batch is None and num_graphs != 1:
        raise ValueError(f"'batch' is required for coefficients of {num_graphs} graphs")
    if chunk_size is None:
        chunk_size = max(64, _CHUNK_ELEMENTS // (channels * math.prod(coeffs.shape[2:-1])))
    if chunk_size < 1:
        raise ValueError(f"'chunk_size' must be positive, got {chunk_size}")
    dtype = compute_dtype(coeffs.dtype)
    coeffs = coeffs.to(dtype)
    num_nodes = pos.size(0)
    out = torch.empty(num_nodes, channels, device=coeffs.device, dtype=dtype)
    if batch is None:
        order = torch.arange(num_nodes, device=pos.device)
        counts = [num_nodes]
    else:
        order = torch.argsort(batch, stable=True)
        counts = torch.bincount(batch, minlength=num_graphs).tolist()
    with no_autocast(coeffs.device):
        start = 0
        for graph, count in enumerate(counts):
            for lo in range(start, start + count, chunk_size):
                idx = order[lo:min(lo + chunk_size, start + count)]
                vals = _series_at(coeffs[graph], pos.index_select(0, idx).to(coeffs.device))
                out.index_copy_(0, idx.to(coeffs.device), vals)
            start += count
    return out
