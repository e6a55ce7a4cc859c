r"""Monte-Carlo density: how many nodes the kernel integrals of a model average over, for a
configuration, a data resolution and a subsampling rate, and a warning when it is too few.

Every kernel integral of :class:`~pyg_infdiff.models.MultiscaleOperatorUNet` is a Monte-Carlo
estimate over the nodes inside a ball of fixed radius in domain units. Training on a
subsampled lattice (keep :math:`1/R` of the pixels) divides the number of those nodes by
:math:`R`; when it gets small, the "integral" is mostly the value of the node itself, and the
operator the model learns changes meaning at other densities (issue 12).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pyg_infdiff.models.config import UNetConfig
from pyg_infdiff.nn.kernel import bump

#: The documented threshold of :func:`check_monte_carlo_density`: the fewest expected nodes per
#: kernel ball (interior value, :attr:`DensityLevel.expected`) that do not warn. Below 4 nodes
#: (in 2-D) the node's own value carries more than a third of the window weight of the
#: estimate at its position (its weight is 1, the others' 0.40 on average), and the effective
#: number of nodes of an interior estimate, :math:`0.59 N`, is below 2.4: a relative
#: Monte-Carlo error of the window sum, about :math:`1/\sqrt{N_{\text{eff}}}`, above 65%.
MIN_NODES_PER_BALL = 4.0


class LowDensityWarning(UserWarning):
    r"""Warns that a kernel ball holds fewer nodes on average than
    :data:`~pyg_infdiff.models.density.MIN_NODES_PER_BALL` (or the threshold given to
    :func:`check_monte_carlo_density`)."""


def ball_volume(ndim: int) -> float:
    r"""The volume :math:`V_d = \pi^{d/2} / \Gamma(d/2 + 1)` of the unit ball of
    :math:`\mathbb{R}^d`."""
    if ndim < 1:
        raise ValueError(f"'ndim' must be >= 1, got ndim={ndim}")
    return math.pi ** (ndim / 2) / math.gamma(ndim / 2 + 1)


def window_moment(ndim: int, power: int = 1) -> float:
    r"""The average :math:`\frac{1}{|B_1|}\int_{B_1} w(\mathbf{s})^p\, d\mathbf{s}` of a power
    of the quadrature window :math:`w` (:func:`pyg_infdiff.nn.kernel.bump`) of
    :class:`~pyg_infdiff.nn.KernelIntegralConv` over the unit ball of :math:`\mathbb{R}^d`
    (:math:`p = 1`: 0.60, 0.40, 0.29 for :math:`d = 1, 2, 3`; :math:`p = 2`: 0.49, 0.28,
    0.17)."""
    if ndim < 1 or power < 1:
        raise ValueError(f"Need ndim >= 1 and power >= 1, got ndim={ndim}, power={power}")
    s = (torch.arange(8192, dtype=torch.float64) + 0.5) / 8192
    return float(ndim * (bump(s * s).pow(power) * s ** (ndim - 1)).mean())


@dataclass(frozen=True)
class DensityLevel:
    r"""The Monte-Carlo density of one operator level of a model (see
    :func:`monte_carlo_density` for the formulas).

    Attributes:
        name (str): The level, e.g. :obj:`"operator blocks"`.
        radius (float): The kernel radius :math:`r` in domain units.
        pixels (float): :math:`r` in pixels of the data resolution (per axis, geometric mean).
        expected (float): Expected nodes in a ball around an interior point,
            :math:`\rho V_d r^d`.
        at_node (float): Expected nodes in the ball of an interior node, itself included.
        effective (float): Expected effective count in the ball of an interior node after the
            window weights, :math:`E[\sum w]^2 / E[\sum w^2]`.
    """

    name: str
    radius: float
    pixels: float
    expected: float
    at_node: float
    effective: float


@dataclass(frozen=True)
class DensityReport:
    r"""What :func:`monte_carlo_density` computed for one configuration, data resolution and
    subsampling rate.

    Attributes:
        resolution (tuple[int, ...]): The lattice of the data.
        rate (float): The subsampling rate :math:`R` (keep :math:`1/R` of the pixels).
        levels (list[DensityLevel]): One entry per operator level (none when the model has no
            operator blocks).
        nodes_per_cell (float): Expected nodes per cell of the pooling lattice
            :obj:`config.grid_shape`, :math:`P / (R \prod_k g_k)`: the Monte-Carlo density of
            the pooling onto the grid, whose window at each grid point has the weight of
            about one cell (not checked by :func:`check_monte_carlo_density`).
    """

    resolution: tuple[int, ...]
    rate: float
    levels: list[DensityLevel]
    nodes_per_cell: float

    def below(self, threshold: float = MIN_NODES_PER_BALL) -> list[DensityLevel]:
        r"""The levels whose :attr:`DensityLevel.expected` is below :obj:`threshold`."""
        return [level for level in self.levels if level.expected < threshold]

    def __str__(self) -> str:
        shape = "x".join(map(str, self.resolution))
        lines = [f"Monte-Carlo density at {shape}, rate {self.rate:g}:"]
        for level in self.levels:
            lines.append(
                f"  {level.name}: radius {level.radius:.4g} ({level.pixels:.2f} px): "
                f"{level.expected:.2f} nodes per ball (interior), {level.at_node:.2f} at a node, "
                f"{level.effective:.2f} effective after the window"
            )
        lines.append(f"  pool: {self.nodes_per_cell:.2f} nodes per grid cell")
        return "\n".join(lines)


def _shape(resolution: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    shape = (int(resolution),) * ndim if isinstance(resolution, int) else tuple(
        int(n) for n in resolution)
    if len(shape) != ndim or any(n < 1 for n in shape):
        raise ValueError(
            f"'resolution' must be a positive int or {ndim} positive sizes (the config's "
            f"ndim), got {resolution}"
        )
    return shape


def _levels(config: UNetConfig) -> list[tuple[str, float]]:
    r"""The kernel integrals of the model over the nodes, as (name, radius)."""
    if config.num_operator_blocks == 0:
        return []
    return [("operator blocks", float(config.radius))]


def monte_carlo_density(
    config: UNetConfig, resolution: int | Sequence[int], rate: float = 1.0
) -> DensityReport:
    r"""The expected number of nodes per kernel ball of every operator level of the model that
    :obj:`config` describes, for data on a lattice of shape :obj:`resolution` subsampled at
    :obj:`rate`.

    With :math:`P = \prod_k n_k` pixels in :math:`[0, 1]^d` and a fraction :math:`1/R` of them
    kept, the nodes have density :math:`\rho = P / R` and a ball of radius :math:`r` holds on
    average

    .. math::
        N = \rho\, V_d\, r^d, \qquad V_d = \frac{\pi^{d/2}}{\Gamma(d/2 + 1)},

    around a point whose ball lies inside the domain (the **interior value**: nothing is
    clipped at the faces, where the ball is cut). The operator is evaluated at the nodes,
    whose ball always holds the node itself: with :math:`M = P V_d r^d` the interior count
    on the full lattice, :math:`N_{\text{node}} = 1 + (M - 1) / R`. The window weights
    :math:`w` of :class:`~pyg_infdiff.nn.KernelIntegralConv` (1 at the centre, 0 at the
    radius) make fewer nodes count: the effective count at a node is Kish's
    :math:`(\sum w)^2 / \sum w^2` with both sums replaced by their expectations,

    .. math::
        N_{\text{eff}} = \frac{\left(1 + (M m_1 - 1) / R\right)^2}{1 + (M m_2 - 1) / R},

    where :math:`m_p` is the ball average of :math:`w^p`
    (:func:`~pyg_infdiff.models.density.window_moment`). Averaged over the position of the
    point, a uniform subset has exactly the mean :math:`N`; at a node the number of pixels in
    the ball replaces :math:`M` (they differ by the lattice effect of Gauss's circle problem:
    21 pixels within 2.5 px, :math:`M = 19.6`). Stratified and Halton subsets have the same
    means with less spread.

    The report also gives the expected nodes per cell of the pooling lattice,
    :math:`P / (R \prod_k g_k)` (:attr:`DensityReport.nodes_per_cell`): each grid value is an
    average over about one cell of nodes.

    Args:
        config (UNetConfig): The model configuration (its radius in domain units and its
            dimension).
        resolution (int or Sequence[int]): The lattice of the data: an integer :math:`n`
            means :math:`(n,) * d`.
        rate (float, optional): The subsampling rate :math:`R \ge 1`. (default: :obj:`1.0`)

    Returns:
        :class:`DensityReport`: one :class:`DensityLevel` per operator level.
    """
    if not math.isfinite(rate) or rate < 1:
        raise ValueError(f"'rate' must be a finite number >= 1, got rate={rate!r}")
    ndim = config.ndim
    shape = _shape(resolution, ndim)
    pixels = math.prod(shape)
    m1, m2 = window_moment(ndim, 1), window_moment(ndim, 2)
    levels = []
    for name, radius in _levels(config):
        full = pixels * ball_volume(ndim) * radius**ndim
        sum_w = 1 + max(full * m1 - 1, 0.0) / rate
        sum_w2 = 1 + max(full * m2 - 1, 0.0) / rate
        levels.append(DensityLevel(
            name=name,
            radius=radius,
            pixels=radius * pixels ** (1 / ndim),
            expected=full / rate,
            at_node=1 + max(full - 1, 0.0) / rate,
            effective=sum_w**2 / sum_w2,
        ))
    per_cell = pixels / rate / math.prod(config.grid_shape)
    return DensityReport(shape, float(rate), levels, per_cell)


def check_monte_carlo_density(
    config: UNetConfig,
    resolution: int | Sequence[int],
    rate: float = 1.0,
    *,
    threshold: float = MIN_NODES_PER_BALL,
    stacklevel: int = 2,
) -> DensityReport:
    r"""Computes :func:`monte_carlo_density` and warns (:class:`LowDensityWarning`) for every
    operator level whose expected nodes per kernel ball (interior value) fall below
    :obj:`threshold`, saying what to change: a lower subsampling rate or a larger radius.

    Call it where the rate is chosen, with the training resolution: ``examples/
    celebahq_train.py`` does, right after building the configuration and the collator.

    .. code-block:: python

        import warnings
        from pyg_infdiff.models import UNetConfig, check_monte_carlo_density

        config = UNetConfig.preset(28)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_monte_carlo_density(config, 28, rate=4)    # 10 nodes per ball: quiet
            check_monte_carlo_density(config, 28, rate=16)   # 2.5 nodes per ball: warns
        assert len(caught) == 1 and "rate" in str(caught[0].message)

    Args:
        config (UNetConfig): The model configuration.
        resolution (int or Sequence[int]): The lattice of the training data.
        rate (float, optional): The subsampling rate. (default: :obj:`1.0`)
        threshold (float, optional): The fewest expected nodes per ball that do not warn.
            (default: :data:`~pyg_infdiff.models.density.MIN_NODES_PER_BALL`)
        stacklevel (int, optional): Passed to :func:`warnings.warn`. (default: :obj:`2`)

    Returns:
        :class:`DensityReport`: as :func:`monte_carlo_density`.
    """
    if not threshold > 0:
        raise ValueError(f"'threshold' must be positive, got threshold={threshold!r}")
    report = monte_carlo_density(config, resolution, rate)
    shape = "x".join(map(str, report.resolution))
    for level in report.below(threshold):
        full = level.expected * report.rate
        max_rate = full / threshold
        min_radius = level.radius * (threshold / level.expected) ** (1 / config.ndim)
        advice = (f"a subsampling rate of at most {max_rate:.3g}" if max_rate >= 1 else
                  "no subsampling either")
        warnings.warn(
            f"Monte-Carlo density too low: the kernel balls of the {level.name} (radius "
            f"{level.radius:.4g} = {level.pixels:.2f} px of {shape}) hold {level.expected:.2f} "
            f"nodes on average at subsampling rate {report.rate:g} (interior value; "
            f"{level.effective:.2f} effective after the window weights), below the threshold "
            f"{threshold:g}. The kernel integral is then mostly the value of the node itself and "
            f"means something else at other densities. Use {advice}, or a radius of at least "
            f"{min_radius:.4g} (UNetConfig(radius=...)).",
            LowDensityWarning,
            stacklevel=stacklevel,
        )
    return report
