r"""Held-out images of the library's named datasets, for reconstruction, interpolation and
evaluation scripts that must not read what a run trained on."""
from __future__ import annotations

import os

import torch
from torch import Tensor

from pyg_infdiff.data.folder import ImageFolder
from pyg_infdiff.data.mnist import MNIST, FashionMNIST
from pyg_infdiff.data.shapes import ContinuousShapes, ShapesConfig

__all__ = ["DATASET_NAMES", "held_out_images"]

#: The names that :func:`held_out_images` (and the examples' ``--dataset``) know.
DATASET_NAMES: tuple[str, ...] = ("fashion-mnist", "mnist", "shapes", "folder")

#: Offset of the dataset seed of held-out :class:`ContinuousShapes` items.
SHAPES_HELD_OUT_SEED = 10_000


def held_out_images(
    name: str,
    num: int,
    resolution: int,
    channels: int = 3,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    shapes: str = "full",
) -> Tensor:
    r"""The first :obj:`num` images of a named dataset that a training run did not use:
    Fashion-MNIST's test split; MNIST (whose reader holds one split); items of
    :class:`ContinuousShapes` with the dataset seed :obj:`seed` :math:`+ 10{,}000` (another
    stream of functions than the run's seed :obj:`seed`); or the images of the folder
    :obj:`data_dir`, unflipped. Fewer when the dataset holds fewer.

    Args:
        name (str): One of :obj:`DATASET_NAMES`.
        num (int): The number of images, :math:`\ge 1`.
        resolution (int): Their side :math:`n`.
        channels (int, optional): 1 or 3, for the image folder. (default: :obj:`3`)
        data_dir (str or os.PathLike, optional): The files of Fashion-MNIST or MNIST, or the
            image folder (required for ``"folder"``). (default: :obj:`None`)
        seed (int, optional): The training run's dataset seed, for ``"shapes"``.
            (default: :obj:`0`)
        shapes (str, optional): The run's shapes configuration for ``"shapes"``, a name of
            :meth:`~pyg_infdiff.data.ShapesConfig.named` (the main job records it in its
            checkpoints). (default: :obj:`"full"`)

    Shapes:
        - **output:** :math:`(M, C, n, n)` in :math:`[-1, 1]`, :math:`M \le` :obj:`num`
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    if num < 1:
        raise ValueError(f"'num' must be positive, got {num}")
    if name == "fashion-mnist":
        data = FashionMNIST(data_dir, train=False, resolution=resolution)
    elif name == "mnist":
        data = MNIST(data_dir, resolution=resolution)
    elif name == "shapes":
        data = ContinuousShapes(num, resolution=resolution, config=ShapesConfig.named(shapes),
                                seed=seed + SHAPES_HELD_OUT_SEED)
    elif data_dir is None:
        raise ValueError("The dataset 'folder' needs 'data_dir'")
    else:
        data = ImageFolder(data_dir, resolution, channels=channels, flip=False)
    items = [data[i] for i in range(min(num, len(data)))]
    return torch.stack([it[0] if isinstance(it, tuple | list) else it for it in items])
