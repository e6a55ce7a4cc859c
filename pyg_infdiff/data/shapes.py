r"""The built-in dataset: procedural continuous images of coloured shapes.

Every item is an analytic function on :math:`[0, 1]^2` (see
:class:`~pyg_infdiff.data.render.ContinuousImage`) drawn deterministically from
``(seed, index)``, so the ground truth exists at every resolution and at arbitrary coordinates, in
any process and any :class:`~torch.utils.data.DataLoader` worker, with no data to fetch.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pyg_infdiff.data.render import (
    ContinuousImage,
    Disc,
    Ellipse,
    Layer,
    Polygon,
    Rectangle,
    Shape,
    Stripes,
)

#: The kinds of shape :class:`ShapesConfig` can draw (its ``kinds``, all of them by default).
SHAPE_KINDS: tuple[str, ...] = ("disc", "ellipse", "rectangle", "polygon", "stripes")


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(
            f"'{name}' must be a pair (min, max) with {low} <= min <= max <= {high}, got {value}"
        )


@dataclass(frozen=True)
class ShapesConfig:
    r"""How the items of :class:`ContinuousShapes` are drawn.

    The default (:obj:`DEFAULT_SHAPES_CONFIG`, used by the docs and benchmarks) gives RGB images
    of 2 to 5 overlapping shapes of all kinds on a smooth background, with edges
    :math:`w = 0.01` wide: sharp at :math:`32^2` and :math:`64^2`, about one pixel at
    :math:`128^2`.

    Args:
        channels (int, optional): 3 (colour) or 1 (grey). (default: :obj:`3`)
        num_shapes (tuple[int, int], optional): The inclusive range of the number of shapes.
            (default: :obj:`(2, 5)`)
        kinds (tuple[str, ...], optional): The shape kinds to draw from, uniformly: any of
            :obj:`"disc"`, :obj:`"ellipse"`, :obj:`"rectangle"` (rotated), :obj:`"polygon"`
            (regular, 3 to 6 sides, rotated), :obj:`"stripes"` (a striped disc).
            (default: all five)
        size (tuple[float, float], optional): The range of shape radii (half-sizes) in domain
            units. (default: :obj:`(0.08, 0.3)`)
        edge_width (float, optional): The width :math:`w` of the edge transition in domain units;
            :obj:`0` gives hard edges. (default: :obj:`0.01`)
        opacity (tuple[float, float], optional): The range of shape opacities.
            (default: :obj:`(0.7, 1.0)`)
        background_freq (int, optional): The highest cosine frequency :math:`K` of the background
            along each axis. (default: :obj:`2`)
        background_amplitude (float, optional): The bound on the background's deviation from its
            mean colour. (default: :obj:`0.4`)
        stripe_period (tuple[float, float], optional): The range of stripe periods in domain
            units; the default keeps stripes above the Nyquist limit of :math:`32^2` (at least
            2.2 pixels per period). (default: :obj:`(0.07, 0.15)`)
        palette (tuple[tuple[float, ...], ...], optional): If set, every shape's colour is one of
            these (uniformly), each :obj:`channels` values in :math:`[-1, 1]`; :obj:`None`
            draws colours uniformly from :math:`[-1, 1]^C`. (default: :obj:`None`)
        background_colour (tuple[float, ...], optional): If set, the background's mean colour,
            :obj:`channels` values within :math:`1 - A` of 0 (:obj:`background_amplitude`
            :math:`A`); :obj:`None` draws it uniformly. (default: :obj:`None`)
    """

    channels: int = 3
    num_shapes: tuple[int, int] = (2, 5)
    kinds: tuple[str, ...] = SHAPE_KINDS
    size: tuple[float, float] = (0.08, 0.3)
    edge_width: float = 0.01
    opacity: tuple[float, float] = (0.7, 1.0)
    background_freq: int = 2
    background_amplitude: float = 0.4
    stripe_period: tuple[float, float] = (0.07, 0.15)
    palette: tuple[tuple[float, ...], ...] | None = None
    background_colour: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"'channels' must be 1 or 3, got {self.channels}")
        lo, hi = self.num_shapes
        if int(lo) != lo or int(hi) != hi or not 0 <= lo <= hi:
            raise ValueError(
                f"'num_shapes' must be integers (min, max) with 0 <= min <= max, "
                f"got {self.num_shapes}"
            )
        if len(self.kinds) == 0 or any(k not in SHAPE_KINDS for k in self.kinds):
            raise ValueError(
                f"'kinds' must be a non-empty subset of {SHAPE_KINDS}, got {self.kinds}"
            )
        _check_range("size", self.size, 1e-6, 1.0)
        if not (math.isfinite(self.edge_width) and self.edge_width >= 0):
            raise ValueError(f"'edge_width' must be finite and >= 0, got {self.edge_width}")
        _check_range("opacity", self.opacity, 0.0, 1.0)
        if int(self.background_freq) != self.background_freq or self.background_freq < 0:
            raise ValueError(f"'background_freq' must be an int >= 0, got {self.background_freq}")
        if not 0 <= self.background_amplitude < 1:
            raise ValueError(
                f"'background_amplitude' must lie in [0, 1), got {self.background_amplitude}"
            )
        _check_range("stripe_period", self.stripe_period, 1e-6, 1.0)
        if self.palette is not None:
            if len(self.palette) == 0:
                raise ValueError("'palette' must hold at least one colour, or be None")
            for colour in self.palette:
                _check_colour("palette", colour, self.channels, 1.0)
        if self.background_colour is not None:
            _check_colour("background_colour", self.background_colour, self.channels,
                          1.0 - self.background_amplitude)

    @classmethod
    def simple(cls, channels: int = 3) -> ShapesConfig:
        r"""A simpler distribution for short runs (the CPU demo, ``examples/shapes_demo.py``):
        one to three large, opaque, flat discs, rectangles and polygons (radii 0.15 to 0.3,
        no stripes) on a flat background. The same functions of infinite resolution with sharp
        edges, with less to learn than the default's two to five shapes, stripes, partial
        opacity and smooth background.

        Args:
            channels (int, optional): 3 (colour) or 1 (grey). (default: :obj:`3`)
        """
        return cls(channels=channels, num_shapes=(1, 3), kinds=("disc", "rectangle", "polygon"),
                   size=(0.15, 0.3), opacity=(1.0, 1.0), background_freq=0)

    @classmethod
    def demo(cls, channels: int = 3) -> ShapesConfig:
        r"""The main job's distribution (``examples/shapes_demo.py``, ``bash scripts/demo.sh``):
        :meth:`simple`'s geometry (one to three large opaque discs, rectangles and polygons)
        in the five colours of :obj:`DEMO_PALETTE` on a light grey background. A short CPU run
        learns flat, sharp-edged shapes from it; with :meth:`simple`'s random colours the
        same budget gives multicoloured blobs (``bench/demo_data.py`` measures both).

        Args:
            channels (int, optional): 3 (colour) or 1 (the four greys of :obj:`DEMO_GREYS`).
                (default: :obj:`3`)
        """
        palette = DEMO_PALETTE if channels == 3 else DEMO_GREYS
        return replace(cls.simple(channels), palette=palette, background_amplitude=0.0,
                       background_colour=(DEMO_BACKGROUND,) * channels)

    @classmethod
    def named(cls, name: str, channels: int = 3) -> ShapesConfig:
        r"""A configuration by the name the examples' ``--shapes`` option uses:
        :obj:`"demo"` (:meth:`demo`), :obj:`"simple"` (:meth:`simple`) or :obj:`"full"`
        (the default :class:`ShapesConfig`).

        Args:
            name (str): One of :obj:`SHAPES_NAMES`.
            channels (int, optional): 3 (colour) or 1 (grey). (default: :obj:`3`)
        """
        if name == "demo":
            return cls.demo(channels)
        if name == "simple":
            return cls.simple(channels)
        if name == "full":
            return cls(channels=channels)
        raise ValueError(f"Unknown shapes configuration {name!r}, expected one of {SHAPES_NAMES}")


#: The names :meth:`ShapesConfig.named` knows (the examples' ``--shapes`` choices).
SHAPES_NAMES: tuple[str, ...] = ("demo", "simple", "full")

#: The five colours of :meth:`ShapesConfig.demo` in :math:`[-1, 1]`: red, green, blue, yellow
#: and black.
DEMO_PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.9, -0.8, -0.8), (-0.8, 0.6, -0.8), (-0.7, -0.5, 0.9), (0.9, 0.7, -0.9),
    (-0.9, -0.9, -0.9),
)
#: The four shades of :meth:`ShapesConfig.demo` for one channel, from black to mid grey.
DEMO_GREYS: tuple[tuple[float], ...] = ((-0.9,), (-0.5,), (-0.1,), (0.3,))
#: The background value of :meth:`ShapesConfig.demo` in every channel: light grey.
DEMO_BACKGROUND: float = 0.8


#: The default :class:`ShapesConfig` (``ShapesConfig()``), used by the docs and benchmarks.
DEFAULT_SHAPES_CONFIG = ShapesConfig()


def _check_colour(name: str, colour: tuple[float, ...], channels: int, bound: float) -> None:
    if len(colour) != channels or not all(math.isfinite(c) and abs(c) <= bound for c in colour):
        raise ValueError(
            f"'{name}' colours must have {channels} values in [-{bound:g}, {bound:g}], "
            f"got {colour}"
        )


def item_seed(seed: int, index: int) -> int:
    r"""A 63-bit seed derived from ``(seed, index)`` by a stable hash (BLAKE2b), the same in
    every process, worker and Python session (unlike :func:`hash`)."""
    digest = hashlib.blake2b(f"pyg_infdiff.shapes:{int(seed)}:{int(index)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


class _Draw:
    r"""Uniform draws from a :class:`torch.Generator`, as Python floats."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def uniform(self, low: float, high: float, n: int = 1) -> list[float]:
        u = torch.rand(n, generator=self.generator, dtype=torch.float64)
        return (low + (high - low) * u).tolist()

    def integer(self, low: int, high: int) -> int:
        r"""An integer in ``[low, high]`` (inclusive)."""
        return int(torch.randint(low, high + 1, (1,), generator=self.generator).item())


def _draw_shape(kind: str, config: ShapesConfig, draw: _Draw) -> Shape:
    center = tuple(draw.uniform(0.05, 0.95, 2))
    radius = draw.uniform(*config.size)[0]
    angle = draw.uniform(0.0, math.pi)[0]
    if kind == "disc":
        return Disc(center, radius)
    if kind == "ellipse":
        return Ellipse(center, (radius, radius * draw.uniform(0.3, 0.9)[0]), angle)
    if kind == "rectangle":
        return Rectangle(center, (radius, radius * draw.uniform(0.3, 1.0)[0]), angle)
    if kind == "polygon":
        return Polygon(center, radius, draw.integer(3, 6), angle)
    period = draw.uniform(*config.stripe_period)[0]
    return Stripes(center, radius, period, draw.uniform(0.3, 0.7)[0], angle)


def sample_continuous_image(config: ShapesConfig, generator: torch.Generator) -> ContinuousImage:
    r"""Draws one :class:`~pyg_infdiff.data.render.ContinuousImage` from :obj:`config`.

    The background mean is uniform in :math:`[-(1 - A), 1 - A]` per channel and the cosine
    coefficients are scaled so that their absolute values sum to :math:`A`
    (:obj:`background_amplitude`); shape colours are uniform in :math:`[-1, 1]`. A
    :obj:`~ShapesConfig.background_colour` or :obj:`~ShapesConfig.palette` replaces the
    corresponding draw (configurations without them draw exactly as before). Compositing
    convex combinations keeps every value in :math:`[-1, 1]`.

    Args:
        config (ShapesConfig): The distribution.
        generator (torch.Generator): The source of randomness (CPU).
    """
    draw = _Draw(generator)
    channels, amp = config.channels, config.background_amplitude
    if config.background_colour is None:
        mean = tuple(draw.uniform(-(1.0 - amp), 1.0 - amp, channels))
    else:
        mean = tuple(float(c) for c in config.background_colour)
    num_freq = config.background_freq + 1
    coef = torch.rand(channels, num_freq, num_freq, generator=generator, dtype=torch.float64)
    coef = 2.0 * coef - 1.0
    coef[:, 0, 0] = 0.0
    total = coef.abs().sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    background = (coef * amp / total).float()
    layers = []
    for _ in range(draw.integer(*config.num_shapes)):
        kind = config.kinds[draw.integer(0, len(config.kinds) - 1)]
        shape = _draw_shape(kind, config, draw)
        if config.palette is None:
            colour = tuple(draw.uniform(-1.0, 1.0, channels))
        else:
            choice = draw.integer(0, len(config.palette) - 1)
            colour = tuple(float(c) for c in config.palette[choice])
        layers.append(Layer(shape, colour, draw.uniform(*config.opacity)[0]))
    return ContinuousImage(mean, background, tuple(layers), config.edge_width)


class ContinuousShapes(Dataset):
    r"""The built-in dataset of continuous images: overlapping coloured shapes with smooth or sharp
    edges on a smooth background, each an analytic function on :math:`[0, 1]^2` drawn
    deterministically from ``(seed, index)``.

    Items are rendered on the fly with area-averaged (anti-aliased) pixels, at any resolution;
    :meth:`function` gives the underlying function, exactly evaluable at arbitrary coordinates.
    The same ``(seed, index)`` gives the same function in every process and worker and at every
    resolution: a :math:`2n` render average-pooled by 2 equals the :math:`n` render.

    .. code-block:: python

        import torch

        from pyg_infdiff.data import ContinuousShapes

        dataset = ContinuousShapes(10_000, resolution=32)
        image = dataset[0]                      # [3, 32, 32] in [-1, 1]
        f = dataset.function(0)
        f.render(128)                           # the same image at 128 x 128
        f.evaluate(torch.rand(500, 2))          # exact values at 500 points, [500, 3]

    Args:
        num_items (int): The number of items (any size: nothing is stored).
        resolution (int, optional): The side of the rendered images. (default: :obj:`32`)
        config (ShapesConfig, optional): The distribution of images.
            (default: :obj:`DEFAULT_SHAPES_CONFIG`)
        seed (int, optional): Selects the dataset; items depend only on ``(seed, index)``.
            (default: :obj:`0`)
        supersample (int, optional): Samples per pixel along each axis when rendering.
            (default: :obj:`4`)
        transform (Callable, optional): Applied to each rendered image. (default: :obj:`None`)

    Shapes:
        - **output:** :math:`(C, H, W)`, float32 in :math:`[-1, 1]` (before :obj:`transform`).
    """

    def __init__(
        self,
        num_items: int,
        resolution: int = 32,
        config: ShapesConfig = DEFAULT_SHAPES_CONFIG,
        seed: int = 0,
        supersample: int = 4,
        transform: Callable[[Tensor], object] | None = None,
    ) -> None:
        if int(num_items) != num_items or num_items <= 0:
            raise ValueError(f"'num_items' must be a positive int, got {num_items}")
        if int(resolution) != resolution or resolution <= 0:
            raise ValueError(f"'resolution' must be a positive int, got {resolution}")
        if int(supersample) != supersample or supersample < 1:
            raise ValueError(f"'supersample' must be a positive int, got {supersample}")
        if not isinstance(config, ShapesConfig):
            raise ValueError(f"'config' must be a ShapesConfig, got {type(config).__name__}")
        self.num_items = int(num_items)
        self.resolution = int(resolution)
        self.config = config
        self.seed = int(seed)
        self.supersample = int(supersample)
        self.transform = transform

    def __len__(self) -> int:
        return self.num_items

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not -self.num_items <= index < self.num_items:
            raise IndexError(f"index {index} out of range for {self.num_items} items")
        return index % self.num_items

    def function(self, index: int) -> ContinuousImage:
        r"""The continuous image of item :obj:`index`, with ``.evaluate(pos)`` and
        ``.render(resolution, supersample)``."""
        index = self._check_index(index)
        generator = torch.Generator().manual_seed(item_seed(self.seed, index))
        return sample_continuous_image(self.config, generator)

    def render(
        self, index: int, resolution: int | None = None, supersample: int | None = None
    ) -> Tensor:
        r"""Renders item :obj:`index` at any resolution (default: the dataset's), without
        :obj:`transform`."""
        return self.function(index).render(
            self.resolution if resolution is None else resolution,
            self.supersample if supersample is None else supersample,
        )

    def __getitem__(self, index: int) -> Tensor:
        image = self.render(index)
        return image if self.transform is None else self.transform(image)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_items}, resolution={self.resolution}, "
            f"channels={self.config.channels}, seed={self.seed})"
        )
