r"""Models composed from :mod:`pyg_infdiff.nn`: the multiscale operator U-Net of ∞-Diff."""
from pyg_infdiff.models.config import UNetConfig
from pyg_infdiff.models.density import (
    DensityLevel,
    DensityReport,
    LowDensityWarning,
    check_monte_carlo_density,
    monte_carlo_density,
)
from pyg_infdiff.models.unet import DenseUNet, MultiscaleOperatorUNet, num_parameters

__all__ = [
    "DenseUNet",
    "DensityLevel",
    "DensityReport",
    "LowDensityWarning",
    "MultiscaleOperatorUNet",
    "UNetConfig",
    "check_monte_carlo_density",
    "monte_carlo_density",
    "num_parameters",
]
