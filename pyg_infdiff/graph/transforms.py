r"""Images to point-cloud graphs on :math:`[0, 1]^d`."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from pyg_infdiff.graph.lattice import pixel_to_pos
from pyg_infdiff.graph.search import radius_graph
from pyg_infdiff.graph.subsample import SubsampleMethod, check_subsample_options, subsample


class ImageToGraph(BaseTransform):
    r"""Turns an image of any dimension into a point-cloud graph of (a random subset of) its
    pixels, the discretisation of a function on :math:`[0, 1]^d` used by ∞-Diff
    (`"Infinite Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_).

    Node :math:`n` is the pixel ``pixel[n]`` (flat, row-major) at the pixel centre

    .. math::
        \mathbf{p}_n = \left(\frac{i_1 + 0.5}{n_1}, \dots, \frac{i_d + 0.5}{n_d}\right),

    with the pixel's values as features. Without :obj:`rate` and :obj:`num` every pixel is a
    node, in row-major order. Batches of the outputs carry what
    :meth:`pyg_infdiff.graph.LatticeIndex.from_data` needs.

    Args:
        rate (float, optional): Keep :math:`\lceil P / \text{rate} \rceil` of the :math:`P`
            pixels. (default: :obj:`None`)
        num (int, optional): Keep this many pixels. (default: :obj:`None`)
        method (str, optional): The subsampler, :obj:`"uniform"`, :obj:`"halton"` or
            :obj:`"stratified"` (see :func:`pyg_infdiff.graph.subsample`).
            (default: :obj:`"uniform"`)
        radius (float, optional): If set, adds radius edges (:func:`radius_graph`, exact search,
            domain units). (default: :obj:`None`)
        loop (bool, optional): Whether the radius graph has self-loops. (default: :obj:`True`)
        generator (torch.Generator, optional): The source of randomness for subsampling. The
            transform draws from it on every call; give each data-loader worker its own
            generator (e.g. in ``worker_init_fn``), or workers repeat each other's subsets.
            (default: :obj:`None`)

    Shapes:
        - **input:** image :math:`(C, n_1, \dots, n_d)`, floating point, :math:`d \ge 1`
        - **output:** :class:`~torch_geometric.data.Data` with ``x`` :math:`(N, C)`, ``pos``
          :math:`(N, d)`, ``pixel`` :math:`(N,)` (long), ``lattice_shape`` :math:`(1, d)` (long)
          and, with :obj:`radius`, ``edge_index`` :math:`(2, E)`.
    """

    def __init__(
        self,
        rate: float | None = None,
        num: int | None = None,
        method: SubsampleMethod = "uniform",
        radius: float | None = None,
        loop: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        check_subsample_options(rate, num, method, radius)
        self.rate = rate
        self.num = num
        self.method = method
        self.radius = radius
        self.loop = loop
        self.generator = generator

    def forward(self, image: Tensor) -> Data:
        if not isinstance(image, Tensor) or image.dim() < 2:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"Expected an image of shape [C, n_1, ..., n_d], got {shape}")
        if not image.is_floating_point():
            raise ValueError(
                f"Expected a floating point image (values in [-1, 1]), got dtype={image.dtype}"
            )
        shape = tuple(image.shape[1:])
        flat = image.reshape(image.size(0), -1)
        if self.rate is None and self.num is None:
            pixel = torch.arange(flat.size(1), device=image.device)
        else:
            pixel = subsample(
                shape, rate=self.rate, num=self.num, method=self.method, generator=self.generator
            ).to(image.device)
        data = Data(
            x=flat[:, pixel].t().contiguous(),
            pos=pixel_to_pos(pixel, shape, dtype=image.dtype),
            pixel=pixel,
            lattice_shape=torch.tensor([shape], dtype=torch.long, device=image.device),
        )
        if self.radius is not None:
            data.edge_index = radius_graph(data.pos, self.radius, loop=self.loop)
        return data

    def __repr__(self) -> str:
        if self.rate is not None:
            size = f"rate={self.rate}, "
        elif self.num is not None:
            size = f"num={self.num}, "
        else:
            size = ""
        return (
            f"{self.__class__.__name__}({size}method={self.method!r}, radius={self.radius}, "
            f"loop={self.loop})"
        )
