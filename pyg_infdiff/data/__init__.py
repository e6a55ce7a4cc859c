r"""Datasets and collation into graph batches.

* :class:`ContinuousShapes`: the built-in dataset of continuous (analytic, resolution-free)
  images, rendered at any resolution and evaluable at any coordinate. No data to fetch.
* :class:`FashionMNIST`, :class:`MNIST`: readers for the offline digit datasets.
* :class:`ImageFolder`: CelebA-HQ / FFHQ style folders, robust to corrupt files.
* :class:`GraphCollator`, :func:`make_loader`: images to batches of mollified, subsampled
  point-cloud graphs, reproducible for any number of workers.
* :class:`MollifiedCache`: images rendered (or read) once, mollified once and stored compactly,
  to train on sparse nodes of high-resolution images without rendering every step.
"""
from pyg_infdiff.data.cache import CACHE_DTYPES, MollifiedCache
from pyg_infdiff.data.collate import (
    GraphCollator,
    SeededBatchSampler,
    batch_generator,
    make_loader,
    seed_worker,
)
from pyg_infdiff.data.folder import IMAGE_EXTENSIONS, ImageFolder, SkippedImageWarning
from pyg_infdiff.data.held_out import DATASET_NAMES, held_out_images
from pyg_infdiff.data.mnist import MNIST, FashionMNIST, read_idx, resize_image
from pyg_infdiff.data.render import ContinuousImage, render_function
from pyg_infdiff.data.shapes import (
    DEFAULT_SHAPES_CONFIG,
    DEMO_PALETTE,
    SHAPE_KINDS,
    SHAPES_NAMES,
    ContinuousShapes,
    ShapesConfig,
    item_seed,
    sample_continuous_image,
)

__all__ = [
    "DATASET_NAMES",
    "CACHE_DTYPES",
    "DEFAULT_SHAPES_CONFIG",
    "DEMO_PALETTE",
    "IMAGE_EXTENSIONS",
    "MNIST",
    "MollifiedCache",
    "SHAPE_KINDS",
    "SHAPES_NAMES",
    "ContinuousImage",
    "ContinuousShapes",
    "FashionMNIST",
    "GraphCollator",
    "ImageFolder",
    "SeededBatchSampler",
    "ShapesConfig",
    "SkippedImageWarning",
    "batch_generator",
    "held_out_images",
    "item_seed",
    "make_loader",
    "read_idx",
    "render_function",
    "resize_image",
    "sample_continuous_image",
    "seed_worker",
]
