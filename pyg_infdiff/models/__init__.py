r"""Models composed from :mod:`pyg_infdiff.nn`: the multiscale operator U-Net of ∞-Diff."""
from pyg_infdiff.models.config import UNetConfig
from pyg_infdiff.models.unet import DenseUNet, MultiscaleOperatorUNet, num_parameters

__all__ = ["DenseUNet", "MultiscaleOperatorUNet", "UNetConfig", "num_parameters"]
