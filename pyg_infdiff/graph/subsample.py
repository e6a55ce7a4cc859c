r"""Random subsets of lattice pixels: the node sets of subsampled training graphs.

Three samplers, all exact in the number of pixels they return and all driven by an explicit
:class:`torch.Generator`:

* ``"uniform"``: a uniformly random subset (sampling without replacement).
* ``"halton"``: a randomly shifted (Cranley-Patterson rotated) Halton sequence, snapped to pixels.
  Low discrepancy: the nodes cover the domain more evenly than a uniform subset.
* ``"stratified"``: jittered sampling. The pixels, ordered along a Z-order (Morton) curve, are split
  into :math:`N` contiguous blocks of equal size (up to one pixel) and one pixel is drawn from each.
  For a rate of :math:`2^d` on a power-of-two lattice the blocks are the aligned :math:`2^d` cells.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import _check_shape

#: The subsamplers of :func:`subsample`.
SubsampleMethod = Literal["uniform", "halton", "stratified"]

_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)


def subsample_size(num_pixels: int, *, rate: float | None = None, num: int | None = None) -> int:
    r"""The number of nodes that :func:`subsample` returns for a lattice of :obj:`num_pixels`
    pixels: :obj:`num`, or :math:`\lceil P / \text{rate} \rceil`. Raises :class:`ValueError`
    unless exactly one of :obj:`rate` and :obj:`num` is given and it is feasible.

    Args:
        num_pixels (int): The number of pixels :math:`P` of the lattice.
        rate (float, optional): The subsampling rate, :math:`\ge 1`. (default: :obj:`None`)
        num (int, optional): The number of pixels to keep. (default: :obj:`None`)
    """
    if (rate is None) == (num is None):
        raise ValueError(
            f"Give exactly one of 'rate' and 'num', got rate={rate!r} and num={num!r}"
        )
    if rate is not None:
        if not math.isfinite(rate) or rate < 1:
            raise ValueError(f"'rate' must be a finite number >= 1, got rate={rate!r}")
        return max(1, math.ceil(num_pixels / rate - 1e-9))
    if int(num) != num or num < 1:
        raise ValueError(f"'num' must be a positive integer, got num={num!r}")
    if num > num_pixels:
        raise ValueError(f"'num' must be at most the number of pixels {num_pixels}, got num={num}")
    return int(num)


def check_subsample_options(
    rate: float | None, num: int | None, method: str, radius: float | None = None
) -> None:
    r"""Validates the options of a subsampling transform before any image is seen: at most one
    of :obj:`rate` and :obj:`num` (neither keeps every pixel), a known :obj:`method`, and a
    positive :obj:`radius` when one is given. Raises :class:`ValueError` naming the bad value."""
    if rate is not None and num is not None:
        raise ValueError(f"Give at most one of 'rate' and 'num', got rate={rate}, num={num}")
    if rate is not None or num is not None:
        subsample_size(num if num is not None else 1, rate=rate, num=num)
    if method not in ("uniform", "halton", "stratified"):
        raise ValueError(f"'method' must be 'uniform', 'halton' or 'stratified', got {method!r}")
    if radius is not None and not radius > 0:
        raise ValueError(f"'radius' must be > 0, got radius={radius!r}")


def subsample(
    shape: Sequence[int],
    *,
    rate: float | None = None,
    num: int | None = None,
    method: SubsampleMethod = "uniform",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Draws a random subset of the pixels of a lattice.

    Exactly one of :obj:`rate` and :obj:`num` sets the size of the subset:
    :math:`N = \lceil P / \text{rate} \rceil` or :math:`N = \text{num}`, where
    :math:`P = \prod_k n_k` is the number of pixels. ``rate=4`` keeps a quarter of the pixels,
    ``rate=1`` all of them.

    Args:
        shape (Sequence[int]): The lattice size :math:`(n_1, \dots, n_d)`, any :math:`d \ge 1`.
        rate (float, optional): The subsampling rate, :math:`\ge 1`. (default: :obj:`None`)
        num (int, optional): The number of pixels to keep, :math:`1 \le N \le P`.
            (default: :obj:`None`)
        method (str, optional): :obj:`"uniform"` (without replacement), :obj:`"halton"`
            (randomly shifted Halton points snapped to pixels, topped up to exactly :math:`N`) or
            :obj:`"stratified"` (one random pixel in each of :math:`N` equal blocks of a Z-order
            curve). (default: :obj:`"uniform"`)
        generator (torch.Generator, optional): The source of randomness, for reproducible
            subsets. (default: :obj:`None`)

    Shapes:
        - **output:** :math:`(N,)`, sorted, unique flat (row-major) pixel indices on the CPU.
    """
    shape = _check_shape(shape)
    num_pixels = math.prod(shape)
    count = subsample_size(num_pixels, rate=rate, num=num)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"'generator' must be a CPU generator, got device={generator.device}")
    if method == "uniform":
        pixel = torch.randperm(num_pixels, generator=generator)[:count]
    elif method == "halton":
        pixel = _halton_pixels(shape, count, generator)
    elif method == "stratified":
        pixel = _stratified_pixels(shape, count, generator)
    else:
        raise ValueError(
            f"'method' must be 'uniform', 'halton' or 'stratified', got method={method!r}"
        )
    return pixel.sort().values


def radical_inverse(index: Tensor, base: int) -> Tensor:
    r"""The van der Corput radical inverse of non-negative integers in base :obj:`base`,
    :math:`\sum_j a_j b^{-j-1}` for :math:`\text{index} = \sum_j a_j b^j`, in float64.

    Args:
        index (torch.Tensor): Non-negative integers, any shape.
        base (int): The base :math:`b \ge 2`.
    """
    if base < 2:
        raise ValueError(f"'base' must be >= 2, got base={base}")
    index = index.long().clone()
    out = torch.zeros(index.shape, dtype=torch.float64)
    scale = 1.0 / base
    while bool((index > 0).any()):
        out += scale * (index % base).double()
        index = torch.div(index, base, rounding_mode="floor")
        scale /= base
    return out


def halton(num: int, ndim: int, *, generator: torch.Generator | None = None) -> Tensor:
    r"""The first :obj:`num` points of the :obj:`ndim`-dimensional Halton sequence (bases: the
    first :obj:`ndim` primes), rotated by a random shift :math:`\mathbf{s} \sim U[0, 1)^d` drawn
    from :obj:`generator` (Cranley-Patterson rotation):
    :math:`\mathbf{u}_i = \operatorname{frac}(\mathbf{h}_i + \mathbf{s})`. Each rotated point
    is uniform on :math:`[0, 1)^d`; the set keeps the low discrepancy of the sequence.

    Args:
        num (int): The number of points.
        ndim (int): The dimension :math:`d`, at most 20.
        generator (torch.Generator, optional): The source of the shift. (default: :obj:`None`)

    Shapes:
        - **output:** :math:`(\text{num}, \text{ndim})`, float64.
    """
    if ndim < 1 or ndim > len(_PRIMES):
        raise ValueError(f"'ndim' must be in [1, {len(_PRIMES)}], got ndim={ndim}")
    shift = torch.rand(ndim, generator=generator, dtype=torch.float64)
    return _rotated_halton(torch.arange(num), shift)


def _rotated_halton(index: Tensor, shift: Tensor) -> Tensor:
    points = [radical_inverse(index, _PRIMES[k]) for k in range(shift.numel())]
    return torch.frac(torch.stack(points, dim=-1) + shift)


def _points_to_pixels(points: Tensor, shape: tuple[int, ...]) -> Tensor:
    sizes = torch.tensor(shape, dtype=torch.float64)
    idx = torch.minimum((points * sizes).floor().long(), torch.tensor(shape) - 1)
    flat = torch.zeros(points.size(0), dtype=torch.long)
    for k, n in enumerate(shape):
        flat = flat * n + idx[:, k]
    return flat


def _first_distinct(pixel: Tensor) -> Tensor:
    """The distinct values of ``pixel`` in the order of their first occurrence."""
    uniq, inverse = torch.unique(pixel, return_inverse=True)
    order = torch.arange(pixel.numel())
    first = torch.full((uniq.numel(),), pixel.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, order, reduce="amin")
    return uniq[first.argsort()]


def _halton_pixels(shape: tuple[int, ...], count: int, generator: torch.Generator | None) -> Tensor:
    # Walk the rotated sequence until `count` distinct pixels are hit (at most four rounds of
    # `count` points); fill what is still missing with uniform draws from the unused pixels.
    num_pixels = math.prod(shape)
    if len(shape) > len(_PRIMES):
        raise ValueError(f"Halton sampling supports up to {len(_PRIMES)} dimensions, got {shape}")
    shift = torch.rand(len(shape), generator=generator, dtype=torch.float64)
    chosen = torch.empty(0, dtype=torch.long)
    start = 0
    for _ in range(4):
        index = torch.arange(start, start + max(count, 16))
        start += index.numel()
        pixel = _points_to_pixels(_rotated_halton(index, shift), shape)
        chosen = _first_distinct(torch.cat([chosen, pixel]))
        if chosen.numel() >= count:
            return chosen[:count]
    free = torch.ones(num_pixels, dtype=torch.bool)
    free[chosen] = False
    rest = free.nonzero().view(-1)
    pick = torch.randperm(rest.numel(), generator=generator)[: count - chosen.numel()]
    return torch.cat([chosen, rest[pick]])


def morton_order(shape: Sequence[int]) -> Tensor:
    r"""The flat pixel indices of a lattice sorted along the Z-order (Morton) curve, which
    interleaves the bits of the :math:`d` pixel coordinates. Consecutive runs of pixels on the
    curve are spatially compact blocks.

    Args:
        shape (Sequence[int]): The lattice size :math:`(n_1, \dots, n_d)`.

    Shapes:
        - **output:** :math:`(\prod_k n_k,)`
    """
    shape = _check_shape(shape)
    bits = max(max(n - 1, 1).bit_length() for n in shape)
    if bits * len(shape) > 62:
        raise ValueError(f"Lattice too large for 64-bit Morton codes, got shape={shape}")
    axes = torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")
    code = torch.zeros(math.prod(shape), dtype=torch.long)
    d = len(shape)
    for k, axis in enumerate(axes):
        axis = axis.reshape(-1)
        for b in range(bits):
            code |= ((axis >> b) & 1) << (b * d + (d - 1 - k))
    return code.argsort()


def _stratified_pixels(
    shape: tuple[int, ...], count: int, generator: torch.Generator | None
) -> Tensor:
    num_pixels = math.prod(shape)
    order = morton_order(shape)
    bounds = torch.div(
        torch.arange(count + 1, dtype=torch.long) * num_pixels, count, rounding_mode="floor"
    )
    sizes = bounds[1:] - bounds[:-1]
    jitter = torch.rand(count, generator=generator, dtype=torch.float64)
    offset = torch.minimum((jitter * sizes).floor().long(), sizes - 1)
    return order[bounds[:-1] + offset]
