r"""The configuration of :class:`~pyg_infdiff.models.MultiscaleOperatorUNet`."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pyg_infdiff.nn.dense import GRID_CONVS, GridConv
from pyg_infdiff.nn.pool import POOL_METHODS, PoolMethod

#: What :meth:`UNetConfig.from_dict` assumes for configurations saved before ``pool`` existed.
LEGACY_POOL: PoolMethod = "idw"

#: What :meth:`UNetConfig.from_dict` assumes for configurations saved before ``grid_conv``
#: existed: the :math:`3^d` convolutions they were trained with.
LEGACY_GRID_CONV: GridConv = "conv"

#: The kernel radius of presets 28 and 32 in pixels of their training resolution,
#: :math:`\sqrt{40 / \pi} \approx 3.57`: 10 expected nodes per kernel ball at subsampling rate 4
#: (:math:`\pi r^2 / 4`), chosen from ``bench/radius_density.py`` (quality and consistency
#: against the radius at equal CPU time) and ``bench/model_consistency.py`` (the whole model on
#: its real input across discretisations). Configurations saved with the former 2.5 pixels keep
#: them: a saved configuration holds its radius.
SMALL_PRESET_RADIUS_PX: float = math.sqrt(40 / math.pi)


def _check_common(config: Any, positive: tuple[str, ...]) -> None:
    r"""Normalises the tuple fields of a model configuration (:class:`UNetConfig`,
    :class:`~pyg_infdiff.models.EncoderConfig`) and checks the settings they share: the
    :obj:`positive` counts, the operator blocks and their kernel, the pooling grid and the dense
    levels on it."""
    config.grid_shape = tuple(int(g) for g in config.grid_shape)
    config.channel_mults = tuple(int(m) for m in config.channel_mults)
    config.attention_levels = tuple(int(a) for a in config.attention_levels)
    for name in positive:
        if int(getattr(config, name)) < 1:
            raise ValueError(f"'{name}' must be positive, got {getattr(config, name)}")
    if config.num_operator_blocks < 0:
        raise ValueError(f"'num_operator_blocks' must be >= 0, got {config.num_operator_blocks}")
    if config.kernel_num_basis < 2:
        raise ValueError(f"'kernel_num_basis' must be >= 2, got {config.kernel_num_basis}")
    if not 0.0 < config.radius < 1.0:
        raise ValueError(f"'radius' must be in (0, 1) (domain units), got {config.radius}")
    if not 1 <= len(config.grid_shape) <= 3 or any(g < 1 for g in config.grid_shape):
        raise ValueError(f"'grid_shape' needs 1 to 3 positive sizes, got {config.grid_shape}")
    if len(config.channel_mults) == 0 or any(m < 1 for m in config.channel_mults):
        raise ValueError(f"'channel_mults' must be positive, got {config.channel_mults}")
    levels = len(config.channel_mults)
    if any(not 0 <= a < levels for a in config.attention_levels):
        raise ValueError(f"'attention_levels' must index 'channel_mults' (0..{levels - 1}), got "
                         f"{config.attention_levels}")
    widths = {config.channels * m for m in config.channel_mults}
    if any(w % config.num_heads != 0 for w in widths):
        raise ValueError(
            f"'num_heads' ({config.num_heads}) must divide every level width {sorted(widths)}"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"'dropout' must be in [0, 1), got {config.dropout}")


def _to_dict(config: Any) -> dict[str, Any]:
    r"""A configuration dataclass as Python primitives (tuples become lists)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}


def _from_dict(cls: type, data: dict[str, Any], missing: dict[str, Any] | None = None) -> Any:
    r"""The inverse of :func:`_to_dict`: unknown keys raise a :class:`ValueError`; keys absent
    from :obj:`data` take :obj:`missing` (what older saved configurations meant), then the
    defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} keys: {unknown}")
    return cls(**{**(missing or {}), **data})


@dataclass
class UNetConfig:
    r"""Hyper-parameters of the multiscale operator U-Net.

    All lengths are in domain units of :math:`[0, 1]^d`, so one configuration describes the
    same model at every resolution; the training resolution only guides the choice of
    :obj:`radius` (a few of its pixels) and :obj:`grid_shape`. The defaults are those of
    :obj:`preset(28)`; :meth:`preset` documents the other resolutions. :meth:`to_dict` and
    :meth:`from_dict` round-trip through plain Python types (safe for
    :obj:`torch.load(..., weights_only=True)`).

    Args:
        in_channels (int, optional): Channels of the data. (default: :obj:`1`)
        out_channels (int, optional): Channels of the prediction. (default: :obj:`1`)
        operator_channels (int, optional): Width of the sparse operator blocks on the nodes.
            (default: :obj:`32`)
        num_operator_blocks (int, optional): Operator blocks on each side (down and up) of
            the U-Net. (default: :obj:`1`)
        radius (float, optional): Support radius of the kernel integral operators.
            (default: :obj:`SMALL_PRESET_RADIUS_PX / 28`, about 3.57 / 28)
        kernel_hidden_channels (int, optional): Hidden width of the kernel network.
            (default: :obj:`32`)
        kernel_num_basis (int, optional): Radial basis functions of the kernel.
            (default: :obj:`8`)
        mlp_ratio (int, optional): Width of the pointwise MLP of an operator block, relative
            to :obj:`operator_channels`. (default: :obj:`2`)
        coordinate_features (bool, optional): Whether the node coordinates are concatenated
            to the input features before lifting (lets the model see the borders of the
            domain; the coordinates are in domain units, so this does not depend on the
            resolution). (default: :obj:`True`)
        grid_shape (tuple[int, ...], optional): The lattice the nodes are pooled onto; its
            length is the dimension :math:`d` of the domain. (default: :obj:`(14, 14)`)
        pool (str, optional): How :class:`~pyg_infdiff.nn.GridPool` pools the nodes onto
            the lattice: :obj:`"tent"` (the normalised transpose of the multilinear
            unpooling: one window integral at every discretisation), :obj:`"box"` (cell
            averages) or :obj:`"idw"` (inverse-distance weights of the :obj:`pool_k` nearest
            nodes, the official model's choice). Configurations saved without this field
            (:meth:`from_dict`) load as :obj:`"idw"`, the behaviour they were trained with.
            (default: :obj:`"tent"`)
        pool_k (int, optional): Nearest nodes of the inverse-distance pooling.
            (default: :obj:`3`)
        channels (int, optional): Base width of the dense U-Net. (default: :obj:`32`)
        channel_mults (tuple[int, ...], optional): Width multiplier of each level of the
            dense U-Net; every level after the first halves the lattice. (default:
            :obj:`(1, 2, 2)`)
        num_res_blocks (int, optional): Residual blocks per level (down path).
            (default: :obj:`1`)
        attention_levels (tuple[int, ...], optional): Levels (indices into
            :obj:`channel_mults`) with self-attention; the middle block always has it.
            (default: :obj:`(1, 2)`)
        num_heads (int, optional): Attention heads. (default: :obj:`4`)
        time_embed_dim (int, optional): Size of the sinusoidal time embedding; the
            conditioning vector has 4 times this size. (default: :obj:`32`)
        dropout (float, optional): Dropout in the residual blocks. (default: :obj:`0.0`)
        cond_dim (int, optional): Size :math:`D` of a conditioning vector :math:`\mathbf{z}`
            per graph (e.g. the latent of a :class:`~pyg_infdiff.models.FunctionEncoder`);
            when positive the model takes ``cond=z`` of shape :math:`(B, D)` and adds an MLP
            of it to the time embedding that every block receives. :obj:`0` means an
            unconditioned model, with the parameters (and state dict) of models saved before
            this field existed. (default: :obj:`0`)
        grid_conv (str, optional): The convolutions of the dense U-Net on the lattice:
            :obj:`"conv"` (:math:`3^d` convolutions) or :obj:`"spectral"`
            (:class:`~pyg_infdiff.nn.SpectralConv`, Fourier-neural-operator convolutions, the
            official model's ``conv_type="spectral"``; see :class:`DenseUNet
            <pyg_infdiff.models.DenseUNet>` for which convolutions change). Configurations
            saved without this field load as :obj:`"conv"`. (default: :obj:`"conv"`)
        spectral_modes (int, optional): Fourier modes per axis of the spectral convolutions
            (:math:`|k| < m`), fewer on the levels whose lattice holds fewer; unused by
            :obj:`grid_conv="conv"`. The official code keeps 4 at every level.
            (default: :obj:`4`)
    """

    in_channels: int = 1
    out_channels: int = 1
    operator_channels: int = 32
    num_operator_blocks: int = 1
    radius: float = SMALL_PRESET_RADIUS_PX / 28
    kernel_hidden_channels: int = 32
    kernel_num_basis: int = 8
    mlp_ratio: int = 2
    coordinate_features: bool = True
    grid_shape: tuple[int, ...] = (14, 14)
    pool: PoolMethod = "tent"
    pool_k: int = 3
    channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1, 2)
    num_heads: int = 4
    time_embed_dim: int = 32
    dropout: float = 0.0
    cond_dim: int = 0
    grid_conv: GridConv = "conv"
    spectral_modes: int = 4

    def __post_init__(self) -> None:
        _check_common(self, (
            "in_channels", "out_channels", "operator_channels", "kernel_hidden_channels",
            "mlp_ratio", "pool_k", "channels", "num_res_blocks", "num_heads", "time_embed_dim",
            "spectral_modes",
        ))
        if self.cond_dim < 0:
            raise ValueError(f"'cond_dim' must be >= 0, got {self.cond_dim}")
        if self.pool not in POOL_METHODS:
            raise ValueError(f"'pool' must be one of {POOL_METHODS}, got {self.pool!r}")
        if self.grid_conv not in GRID_CONVS:
            raise ValueError(f"'grid_conv' must be one of {GRID_CONVS}, got {self.grid_conv!r}")

    @property
    def ndim(self) -> int:
        r"""The dimension :math:`d` of the domain, :obj:`len(grid_shape)`."""
        return len(self.grid_shape)

    def to_dict(self) -> dict[str, Any]:
        r"""The configuration as a dictionary of Python primitives (tuples become lists)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        r"""The inverse of :meth:`to_dict`; unknown keys raise a :class:`ValueError`.

        A dictionary without ``pool`` was saved before that field existed, by a model that
        pooled by inverse distance: it loads with :obj:`pool="idw"`, so old checkpoints keep
        their behaviour (new configurations default to :obj:`"tent"`). One without
        ``grid_conv`` loads with :obj:`"conv"`, the convolutions it was trained with."""
        return _from_dict(cls, data, missing={"pool": LEGACY_POOL,
                                              "grid_conv": LEGACY_GRID_CONV})

    @classmethod
    def preset(cls, resolution: int, **overrides: Any) -> UNetConfig:
        r"""Documented defaults for square images of a training resolution.

        ==========  ========  =====  =======  =========================  =========  =======
        resolution  channels  grid   radius   dense widths               attention  params
        ==========  ========  =====  =======  =========================  =========  =======
        28          1         14²    3.57/28  32, 64, 64                 7², 4²     1.30 M
        32          3         16²    3.57/32  32, 64, 64                 8², 4²     1.30 M
        64          3         32²    3/64     128, 256, 256, 256         16², 8²    40.0 M
        128         3         64²    3/128    128, 128, 256, 256, 512    16², 8²    77.2 M
        256         3         64²    3/256    128, 128, 256, 256, 512    16², 8²    77.2 M
        ==========  ========  =====  =======  =========================  =========  =======

        28 and 32: operator width 32, one operator block per side, one residual block per
        level, no dropout. 64: operator width 64, one operator block per side, two residual
        blocks per level, dropout 0.1. 128 and 256: as 64 with two operator blocks per side.

        The 28² and 32² presets are small enough to train on a CPU (Fashion-MNIST / MNIST
        and CIFAR-sized data); the others are meant for a GPU (CelebA-HQ / FFHQ). The sparse
        operator blocks use a kernel radius of 3–3.6 pixels of the training resolution: for 28
        and 32, :data:`~pyg_infdiff.models.config.SMALL_PRESET_RADIUS_PX`
        :math:`= \sqrt{40 / \pi}` pixels, 10 expected nodes per kernel ball at subsampling
        rate 4, chosen by measurement (quality and consistency against the radius; see
        ``docs/concepts.md``).

        Args:
            resolution (int): The training resolution, one of 28, 32, 64, 128, 256.
            **overrides: Fields to change after applying the preset.
        """
        presets: dict[int, dict[str, Any]] = {
            28: dict(in_channels=1, out_channels=1, grid_shape=(14, 14),
                     radius=SMALL_PRESET_RADIUS_PX / 28,
                     operator_channels=32, channels=32, channel_mults=(1, 2, 2),
                     attention_levels=(1, 2)),
            32: dict(in_channels=3, out_channels=3, grid_shape=(16, 16),
                     radius=SMALL_PRESET_RADIUS_PX / 32,
                     operator_channels=32, channels=32, channel_mults=(1, 2, 2),
                     attention_levels=(1, 2)),
            64: dict(in_channels=3, out_channels=3, grid_shape=(32, 32), radius=3 / 64,
                     operator_channels=64, channels=128, channel_mults=(1, 2, 2, 2),
                     num_res_blocks=2, attention_levels=(1, 2), num_heads=4,
                     time_embed_dim=128, dropout=0.1),
            128: dict(in_channels=3, out_channels=3, grid_shape=(64, 64), radius=3 / 128,
                      operator_channels=64, num_operator_blocks=2, channels=128,
                      channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
                      attention_levels=(2, 3), num_heads=4, time_embed_dim=128, dropout=0.1),
            256: dict(in_channels=3, out_channels=3, grid_shape=(64, 64), radius=3 / 256,
                      operator_channels=64, num_operator_blocks=2, channels=128,
                      channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
                      attention_levels=(2, 3), num_heads=4, time_embed_dim=128, dropout=0.1),
        }
        if resolution not in presets:
            raise ValueError(
                f"No preset for resolution {resolution}; available: {sorted(presets)}"
            )
        return cls(**{**presets[resolution], **overrides})
