r"""Neural-operator layers for graphs of function samples.

* :class:`KernelIntegralConv`: the integral-kernel operator, as message passing over radius edges
  or as a (masked, direct or FFT) convolution on lattices, with the same numbers.
* :class:`ContinuousKernel`: the continuous kernel :math:`\kappa(\delta)` in domain units.
* :class:`GridPool` / :class:`GridUnpool`: nodes to a fixed lattice and back.
* :class:`OperatorBlock`: operator + norm + MLP with time conditioning (the sparse U-Net levels).
* :class:`ResBlock`, :class:`Downsample`, :class:`Upsample`, :class:`SelfAttention`: dense blocks.
* :class:`SpectralConv`: the Fourier-neural-operator convolution, the dense blocks' alternative
  to :math:`3^d` convolutions.
* :class:`SinusoidalTimeEmbedding`, :class:`TimeEmbedding`: diffusion-time features.
* :func:`set_edge_sum_backend`, :func:`get_edge_sum_backend`: how the graph path's depthwise
  edge sum runs on a CPU (chunked, or loops compiled by :func:`torch.compile`).
"""
from pyg_infdiff.nn._edge_sum import get_edge_sum_backend, set_edge_sum_backend
from pyg_infdiff.nn.dense import Downsample, ResBlock, SelfAttention, Upsample
from pyg_infdiff.nn.embedding import SinusoidalTimeEmbedding, TimeEmbedding
from pyg_infdiff.nn.kernel import ContinuousKernel
from pyg_infdiff.nn.kernel_conv import EdgeKernel, KernelIntegralConv
from pyg_infdiff.nn.operator_block import OperatorBlock
from pyg_infdiff.nn.pool import GridPool, GridUnpool
from pyg_infdiff.nn.spectral import SpectralConv
from pyg_infdiff.nn.stencil import LatticeStencil

__all__ = [
    "ContinuousKernel",
    "Downsample",
    "GridPool",
    "GridUnpool",
    "EdgeKernel",
    "KernelIntegralConv",
    "LatticeStencil",
    "OperatorBlock",
    "ResBlock",
    "SelfAttention",
    "SinusoidalTimeEmbedding",
    "SpectralConv",
    "TimeEmbedding",
    "Upsample",
    "get_edge_sum_backend",
    "set_edge_sum_backend",
]
