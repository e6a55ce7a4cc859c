r"""pyg_infdiff: infinite-resolution diffusion models (∞-Diff) on PyTorch Geometric.

Subpackages, each one concept:

* :mod:`pyg_infdiff.graph`: lattices, subsampling, images to point-cloud graphs, radius search.
* :mod:`pyg_infdiff.noise`: the Gaussian mollifier and mollified noise fields.
* :mod:`pyg_infdiff.diffusion`: schedules, the mollified forward process, samplers.
* :mod:`pyg_infdiff.nn`: kernel-integral operator layers, grid pooling, embeddings.
* :mod:`pyg_infdiff.models`: the multiscale operator U-Net.
* :mod:`pyg_infdiff.data`: datasets and collation into graph batches.
* :mod:`pyg_infdiff.training`: the trainer, EMA and checkpoints.
* :mod:`pyg_infdiff.metrics`: sample-quality metrics.
* :mod:`pyg_infdiff.testing`: discretisation-invariance checkers and Hypothesis strategies.

At the top level, :func:`validation` (a context manager), :func:`validation_enabled` and
:func:`set_validation` switch the input checks that read tensor values back to the host (a
device synchronisation) on and off.
"""

__version__ = "0.1.0"

from pyg_infdiff._validation import set_validation, validation, validation_enabled

__all__ = ["set_validation", "validation", "validation_enabled"]
