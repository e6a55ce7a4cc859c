r"""Sample-quality metrics, computed offline.

* FID and KID on the pool features of the standard FID InceptionV3
  (:func:`load_inception`, :func:`extract_features`, :func:`fid_from_features`,
  :func:`kernel_inception_distance`), with an on-disk cache of reference statistics
  (:class:`StatisticsCache`). The weights are never downloaded: see
  :func:`find_inception_weights`.
* A weight-free multi-scale sliced Wasserstein distance on Laplacian-pyramid patches
  (:func:`sliced_wasserstein_distance`), for quick checks and CI.
* The structural similarity index with a Gaussian window (:func:`ssim`), for reconstructions.
* Detail by frequency band, in cycles per unit length (:func:`band_energy`,
  :func:`detail_ratio`): how sharp samples are against data, at any resolution.
* A command line: ``python -m pyg_infdiff.metrics --real ... --fake ...`` (see
  :mod:`pyg_infdiff.metrics.cli`).

SciPy is needed only by the ``"scipy"`` backend of :func:`frechet_distance` and is imported
lazily; the ``"torch"`` backend needs nothing beyond PyTorch.
"""
from .fid import (
    FeatureStatistics,
    StatisticsCache,
    compute_statistics,
    extract_features,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
)
from .inception import (
    FEATURE_DIM,
    WEIGHTS_ENV_VAR,
    WEIGHTS_SHA1,
    InceptionV3Features,
    find_inception_weights,
    load_inception,
    preprocess_images,
    weights_sha1,
)
from .spectrum import band_energy, detail_ratio
from .ssim import ssim
from .swd import (
    SWDResult,
    laplacian_pyramid,
    patch_descriptors,
    sliced_wasserstein,
    sliced_wasserstein_distance,
)

__all__ = [
    "FEATURE_DIM",
    "WEIGHTS_ENV_VAR",
    "WEIGHTS_SHA1",
    "InceptionV3Features",
    "find_inception_weights",
    "load_inception",
    "preprocess_images",
    "weights_sha1",
    "FeatureStatistics",
    "StatisticsCache",
    "compute_statistics",
    "extract_features",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "band_energy",
    "detail_ratio",
    "ssim",
    "SWDResult",
    "laplacian_pyramid",
    "patch_descriptors",
    "sliced_wasserstein",
    "sliced_wasserstein_distance",
]
