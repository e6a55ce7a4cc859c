r"""Models composed from :mod:`pyg_infdiff.nn`: the multiscale operator U-Net of ∞-Diff, the
encoder of functions and the diffusion autoencoder built from both."""
from pyg_infdiff.models.autoencoder import DiffusionAutoencoder
from pyg_infdiff.models.config import UNetConfig
from pyg_infdiff.models.density import (
    DensityLevel,
    DensityReport,
    LowDensityWarning,
    check_monte_carlo_density,
    monte_carlo_density,
)
from pyg_infdiff.models.encoder import EncoderConfig, FunctionEncoder
from pyg_infdiff.models.latent import LatentMLP, LatentMLPConfig
from pyg_infdiff.models.unet import DenseUNet, MultiscaleOperatorUNet, num_parameters

__all__ = [
    "DenseUNet",
    "DensityLevel",
    "DensityReport",
    "DiffusionAutoencoder",
    "EncoderConfig",
    "FunctionEncoder",
    "LatentMLP",
    "LatentMLPConfig",
    "LowDensityWarning",
    "MultiscaleOperatorUNet",
    "UNetConfig",
    "check_monte_carlo_density",
    "monte_carlo_density",
    "num_parameters",
]
