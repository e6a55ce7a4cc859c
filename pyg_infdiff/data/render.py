r"""Analytic continuous images on :math:`[0, 1]^2` and their anti-aliased rendering.

A :class:`ContinuousImage` is a function :math:`f: [0, 1]^2 \to [-1, 1]^C`: a smooth background
(a low-order cosine series) over which coloured shapes are alpha-composited in order. Every shape
is given by its signed distance :math:`s(\mathbf{u})` (negative inside); its coverage is a smooth
step of that distance,

.. math::
    a(\mathbf{u}) = S\left(\frac{1}{2} - \frac{s(\mathbf{u})}{w}\right), \qquad
    S(t) = 6t^5 - 15t^4 + 10t^3 \text{ on } [0, 1] \text{ (clamped)},

so an edge is a transition band of width :math:`w` in domain units (:math:`w = 0`: a hard edge).
Because every quantity is in domain units, the function is the same at every resolution.

Coordinates follow the library convention: ``pos[:, 0]`` is the row (vertical) coordinate and
``pos[:, 1]`` the column (horizontal) coordinate, both in :math:`[0, 1]`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _rotate(pos: Tensor, center: tuple[float, float], angle: float) -> Tensor:
    r"""Coordinates relative to :obj:`center` in a frame rotated by :obj:`angle`."""
    c, s = math.cos(angle), math.sin(angle)
    rot = pos.new_tensor([[c, -s], [s, c]])
    return (pos - pos.new_tensor(center)) @ rot


@dataclass(frozen=True)
class Disc:
    r"""A disc of radius :obj:`radius`: the exact signed distance
    :math:`|\mathbf{u} - \mathbf{c}| - r`."""

    center: tuple[float, float]
    radius: float

    def sdf(self, pos: Tensor) -> Tensor:
        return torch.hypot(pos[:, 0] - self.center[0], pos[:, 1] - self.center[1]) - self.radius

    def bound(self) -> float:
        r"""The radius of a circle around :obj:`center` that contains the shape."""
        return self.radius


@dataclass(frozen=True)
class Ellipse:
    r"""A rotated ellipse with semi-axes :obj:`axes`. Its signed distance is exact to
    :math:`10^{-6}` for aspect ratios up to 4 (:math:`10^{-4}` at 6): the nearest boundary point
    is found by four steps of a fixed-point iteration that moves along the ellipse's local
    circle of curvature (centred on the evolute), vectorised over the points."""

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float

    def sdf(self, pos: Tensor) -> Tensor:
        q = _rotate(pos, self.center, self.angle)
        (a, b), px, py = self.axes, q[:, 0].abs(), q[:, 1].abs()
        tx = torch.full_like(px, math.sqrt(0.5))
        ty = tx.clone()
        for _ in range(4):
            ex, ey = (a * a - b * b) * tx**3 / a, (b * b - a * a) * ty**3 / b
            r = torch.hypot(a * tx - ex, b * ty - ey)
            qx, qy = px - ex, py - ey
            scale = r / torch.hypot(qx, qy).clamp_min(1e-12)
            tx = ((qx * scale + ex) / a).clamp(0.0, 1.0)
            ty = ((qy * scale + ey) / b).clamp(0.0, 1.0)
            norm = torch.hypot(tx, ty)
            tx, ty = tx / norm, ty / norm
        dist = torch.hypot(px - a * tx, py - b * ty)
        inside = (px / a).square() + (py / b).square() < 1.0
        return torch.where(inside, -dist, dist)

    def bound(self) -> float:
        return max(self.axes)


@dataclass(frozen=True)
class Rectangle:
    r"""A rotated rectangle with half-sizes :obj:`half_size` (exact signed distance)."""

    center: tuple[float, float]
    half_size: tuple[float, float]
    angle: float

    def sdf(self, pos: Tensor) -> Tensor:
        q = _rotate(pos, self.center, self.angle).abs()
        q0, q1 = q[:, 0] - self.half_size[0], q[:, 1] - self.half_size[1]
        outside = torch.hypot(q0.clamp_min(0.0), q1.clamp_min(0.0))
        return outside + torch.maximum(q0, q1).clamp_max(0.0)

    def bound(self) -> float:
        return math.hypot(*self.half_size)


@dataclass(frozen=True)
class Polygon:
    r"""A regular convex polygon with :obj:`sides` vertices on a circle of radius :obj:`radius`,
    one of them at angle :obj:`angle`. Exact signed distance: the point is folded by symmetry
    into the sector of one edge, then measured against that edge segment."""

    center: tuple[float, float]
    radius: float
    sides: int
    angle: float

    def sdf(self, pos: Tensor) -> Tensor:
        q0, q1 = pos[:, 0] - self.center[0], pos[:, 1] - self.center[1]
        sector = 2 * math.pi / self.sides
        phi = torch.atan2(q0, q1) - self.angle
        phi = torch.remainder(phi, sector) - 0.5 * sector
        rho = torch.hypot(q0, q1)
        x, y = rho * phi.cos(), rho * phi.sin()
        apothem = self.radius * math.cos(0.5 * sector)
        half_edge = self.radius * math.sin(0.5 * sector)
        dx = x - apothem
        outside = torch.sqrt(dx * dx + (y.abs() - half_edge).clamp_min(0.0).square())
        return torch.where(dx < 0, dx, outside)

    def bound(self) -> float:
        return self.radius


@dataclass(frozen=True)
class Stripes:
    r"""Parallel bands of period :obj:`period` (filling the fraction :obj:`duty` of it) clipped
    to a disc of radius :obj:`radius`; the signed distance of the intersection is the maximum of
    the two signed distances."""

    center: tuple[float, float]
    radius: float
    period: float
    duty: float
    angle: float

    def sdf(self, pos: Tensor) -> Tensor:
        q = _rotate(pos, self.center, self.angle)
        t = q[:, 0]
        local = t - self.period * torch.round(t / self.period)
        bands = local.abs() - 0.5 * self.duty * self.period
        return torch.maximum(bands, torch.hypot(q[:, 0], q[:, 1]) - self.radius)

    def bound(self) -> float:
        return self.radius


#: Any of the shapes; each has ``sdf(pos)`` (its signed distance) and ``bound()``.
Shape = Disc | Ellipse | Rectangle | Polygon | Stripes


@dataclass(frozen=True)
class Layer:
    r"""A shape painted with a constant colour (values in :math:`[-1, 1]`) and opacity."""

    shape: Shape
    colour: tuple[float, ...]
    opacity: float


def coverage(sd: Tensor, edge_width: float) -> Tensor:
    r"""The smooth step of a signed distance: 1 inside, 0 outside, a quintic transition of
    width :obj:`edge_width` centred on the boundary (a hard step when it is 0)."""
    if edge_width == 0:
        return (sd < 0).to(sd.dtype)
    t = (0.5 - sd / edge_width).clamp(0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


@dataclass(frozen=True, eq=False)
class ContinuousImage:
    r"""An image defined as a function on :math:`[0, 1]^2`, exactly evaluable at any point.

    .. math::
        f_0(\mathbf{u}) = \mathbf{m} + \sum_{k, l \le K} \mathbf{b}_{kl}
        \cos(\pi k u_0) \cos(\pi l u_1), \qquad
        f_j = f_{j-1} + \alpha_j a_j(\mathbf{u}) (\mathbf{c}_j - f_{j-1})

    Args:
        mean (tuple[float, ...]): The background mean colour :math:`\mathbf{m}`, one per channel.
        background (torch.Tensor): The cosine coefficients :math:`\mathbf{b}`, shape
            :math:`(C, K + 1, K + 1)` (the constant term is in :obj:`mean`).
        layers (tuple[Layer, ...]): The shapes, composited in order.
        edge_width (float): The width :math:`w` of the edge transition in domain units.
    """

    mean: tuple[float, ...]
    background: Tensor
    layers: tuple[Layer, ...]
    edge_width: float

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContinuousImage):
            return NotImplemented
        return (
            self.mean == other.mean
            and self.layers == other.layers
            and self.edge_width == other.edge_width
            and torch.equal(self.background, other.background)
        )

    def __repr__(self) -> str:
        kinds = ", ".join(type(layer.shape).__name__ for layer in self.layers)
        return (
            f"{self.__class__.__name__}(channels={self.channels}, layers=[{kinds}], "
            f"edge_width={self.edge_width})"
        )

    @property
    def channels(self) -> int:
        r"""The number of channels :math:`C`."""
        return len(self.mean)

    def _paint(self, pos: Tensor, out: Tensor, layer: Layer) -> Tensor:
        alpha = layer.opacity * coverage(layer.shape.sdf(pos), self.edge_width)
        return out + alpha[:, None] * (pos.new_tensor(layer.colour) - out)

    def _reach(self, layer: Layer) -> float:
        # Beyond this distance from the centre the signed distance exceeds w / 2: coverage 0.
        return layer.shape.bound() + 0.5 * self.edge_width

    def evaluate(self, pos: Tensor) -> Tensor:
        r"""The exact values of the function at arbitrary points.

        Args:
            pos (torch.Tensor): Points of :math:`[0, 1]^2`, shape :math:`(N, 2)`, in (row, column)
                order. Computation uses the dtype of :obj:`pos` (float32 at least).

        Shapes:
            - **output:** :math:`(N, C)`, values in :math:`[-1, 1]`.
        """
        if pos.dim() != 2 or pos.size(-1) != 2:
            raise ValueError(f"'pos' must have shape [N, 2], got {tuple(pos.shape)}")
        if not pos.is_floating_point() or pos.dtype in (torch.float16, torch.bfloat16):
            pos = pos.float()
        num_freq = self.background.size(-1)
        k = torch.arange(num_freq, device=pos.device, dtype=pos.dtype) * math.pi
        cos_row, cos_col = (pos[:, :1] * k).cos(), (pos[:, 1:] * k).cos()
        basis = (cos_row[:, :, None] * cos_col[:, None, :]).view(-1, num_freq * num_freq)
        out = basis @ self.background.to(pos).view(self.channels, -1).t()
        out = out + pos.new_tensor(self.mean)
        for layer in self.layers:
            center, reach = layer.shape.center, self._reach(layer)
            near = (pos[:, 0] - center[0]).square() + (pos[:, 1] - center[1]).square() < reach**2
            idx = near.nonzero().view(-1)
            if idx.numel() > 0:
                out[idx] = self._paint(pos[idx], out[idx], layer)
        return out.clamp(-1.0, 1.0)

    def evaluate_grid(self, rows: Tensor, cols: Tensor) -> Tensor:
        r"""The values on the grid of points ``(rows[i], cols[j])``: the same function as
        :meth:`evaluate` (equal up to float rounding), faster on grids because the background is
        separable and each shape only touches the block of its bounding box.

        Args:
            rows (torch.Tensor): Increasing row coordinates, shape :math:`(R,)`.
            cols (torch.Tensor): Increasing column coordinates, shape :math:`(W,)`.

        Shapes:
            - **output:** :math:`(R, W, C)`
        """
        if not rows.is_floating_point() or rows.dtype in (torch.float16, torch.bfloat16):
            rows, cols = rows.float(), cols.float()
        num_freq = self.background.size(-1)
        k = torch.arange(num_freq, device=rows.device, dtype=rows.dtype) * math.pi
        cos_row, cos_col = (rows[:, None] * k).cos(), (cols[:, None] * k).cos()
        coef = self.background.to(rows)
        out = (cos_row @ coef @ cos_col.t()).permute(1, 2, 0) + rows.new_tensor(self.mean)
        out = out.contiguous()
        for layer in self.layers:
            (c0, c1), reach = layer.shape.center, self._reach(layer)
            r0, r1 = torch.searchsorted(rows, rows.new_tensor([c0 - reach, c0 + reach])).tolist()
            q0, q1 = torch.searchsorted(cols, cols.new_tensor([c1 - reach, c1 + reach])).tolist()
            if r1 <= r0 or q1 <= q0:
                continue
            grid = torch.meshgrid(rows[r0:r1], cols[q0:q1], indexing="ij")
            pos = torch.stack([g.reshape(-1) for g in grid], dim=-1)
            block = out[r0:r1, q0:q1].reshape(-1, self.channels)
            out[r0:r1, q0:q1] = self._paint(pos, block, layer).view(r1 - r0, q1 - q0, -1)
        return out.clamp(-1.0, 1.0)

    def render(
        self,
        resolution: int | Sequence[int],
        supersample: int = 4,
        chunk_size: int = 2**18,
    ) -> Tensor:
        r"""Renders area-averaged (anti-aliased) pixels, as :func:`render_function` would from
        :meth:`evaluate` (through the faster :meth:`evaluate_grid`).

        Shapes:
            - **output:** :math:`(C, H, W)`, float32 in :math:`[-1, 1]`.
        """
        return render_grid(self.evaluate_grid, resolution, supersample, chunk_size=chunk_size)


def render_function(
    fn: Callable[[Tensor], Tensor],
    resolution: int | Sequence[int],
    supersample: int = 4,
    *,
    chunk_size: int = 2**18,
) -> Tensor:
    r"""Renders a function on :math:`[0, 1]^2` to pixels that are area averages, estimated by the
    midpoint rule on an :math:`s \times s` sub-lattice inside each pixel:

    .. math::
        x_{ij} = \frac{1}{s^2} \sum_{a, b < s}
        f\left(\frac{s i + a + 0.5}{s H}, \frac{s j + b + 0.5}{s W}\right)

    The sample points are those of the :math:`(sH, sW)` lattice, so rendering at :math:`(2H, 2W)`
    with factor :math:`s` and average-pooling by 2 gives the :math:`(H, W)` render with factor
    :math:`2s` (up to float rounding). With :math:`s = 1` the pixels are the point values at the
    pixel centres.

    Args:
        fn (Callable): Maps points :math:`(N, 2)` to values :math:`(N, C)`, pointwise.
        resolution (int or Sequence[int]): :math:`H` (square) or :math:`(H, W)`.
        supersample (int, optional): The factor :math:`s \ge 1`. (default: :obj:`4`)
        chunk_size (int, optional): The most points evaluated at once (bounds memory; pointwise
            evaluation makes the result independent of it). (default: :obj:`2**18`)

    Shapes:
        - **output:** :math:`(C, H, W)`, float32.
    """

    def grid_fn(rows: Tensor, cols: Tensor) -> Tensor:
        grid = torch.meshgrid(rows, cols, indexing="ij")
        pos = torch.stack([g.reshape(-1) for g in grid], dim=-1)
        return fn(pos).view(rows.numel(), cols.numel(), -1)

    return render_grid(grid_fn, resolution, supersample, chunk_size=chunk_size)


def render_grid(
    grid_fn: Callable[[Tensor, Tensor], Tensor],
    resolution: int | Sequence[int],
    supersample: int = 4,
    *,
    chunk_size: int = 2**18,
) -> Tensor:
    r"""As :func:`render_function`, for a function evaluated on grids: ``grid_fn(rows, cols)``
    returns the values :math:`(R, W, C)` at the points ``(rows[i], cols[j])``."""
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(size) != 2 or any(int(n) != n or n <= 0 for n in size):
        raise ValueError(f"'resolution' must be a positive int or (H, W), got {resolution}")
    if supersample < 1 or int(supersample) != supersample:
        raise ValueError(f"'supersample' must be a positive integer, got {supersample}")
    height, width, s = int(size[0]), int(size[1]), int(supersample)
    rows = ((torch.arange(height * s, dtype=torch.float64) + 0.5) / (height * s)).float()
    cols = ((torch.arange(width * s, dtype=torch.float64) + 0.5) / (width * s)).float()
    pixel_rows = max(1, chunk_size // (s * s * width))
    blocks = []
    for start in range(0, height, pixel_rows):
        stop = min(start + pixel_rows, height)
        values = grid_fn(rows[start * s : stop * s], cols).float().permute(2, 0, 1)
        blocks.append(F.avg_pool2d(values, s) if s > 1 else values)
    return torch.cat(blocks, dim=1).contiguous()
