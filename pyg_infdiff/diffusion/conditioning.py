r"""Conditioning the reverse process on observed node values: inpainting and super-resolution
by replacement (Song et al., 2021; RePaint, Lugmayr et al., 2022), on any point set."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import LatticeIndex

from .schedules import NoiseSchedule


@dataclass(frozen=True, eq=False)
class Observation:
    r"""Known clean values at some nodes of the point set being sampled.

    During sampling, after each reverse step to :math:`t'`, the observed nodes are replaced by
    a fresh forward sample of their known values,

    .. math::
        x_{t'}(\mathbf{u}_n) \leftarrow \sqrt{\bar\alpha_{t'}}\, y_n
        + \sqrt{1 - \bar\alpha_{t'}}\, \xi(\mathbf{u}_n) \quad \text{for } n \in \mathcal{O},

    with :math:`\xi` a fresh mollified noise field, and by :math:`y_n` itself after the last
    step. Observed and unobserved nodes live in one point set (and one graph per sample), so the
    model's operators carry the information from one to the other.

    Replacement does not sample the exact conditional distribution: the observations reach the
    unobserved nodes only through the denoiser's predictions. With the exact denoiser of a
    Gaussian field (the test suite's oracle), every third node of a 1-D lattice observed and 50
    DDPM steps, the mean of the samples at the unobserved nodes is off the Gaussian conditional
    mean by about 0.26 prior standard deviations (0.57 for the prior mean) and their variance
    is 0.17 of the prior's (0.004 for the conditional); RePaint resampling
    (``sample(..., resample=5)``) halves both. Conditioning is weaker far from the observed
    nodes (large holes) than between them (super-resolution).

    Guidance (``sample(..., guidance=)``, after DPS, `"Diffusion Posterior Sampling for
    General Noisy Inverse Problems" <https://arxiv.org/abs/2209.14687>`_, Chung et al., ICLR
    2023) also pulls every node by the gradient of :meth:`residual` through the denoiser, so
    the observations reach the unobserved nodes within each step: after each reverse step,
    :math:`x_{t'} \leftarrow x_{t'} - \zeta\, \nabla_{x_t} \|m \odot (\hat x_0(x_t) - y)\|`
    per graph, then the replacement above. It costs one backward pass through the denoiser
    per step.

    Args:
        mask (torch.Tensor): Which nodes are observed, bool :math:`(N,)`.
        values (torch.Tensor): Clean, mollified values :math:`y` at the nodes, :math:`(N, C)`
            (rows of unobserved nodes are ignored).
    """

    mask: Tensor
    values: Tensor

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.dim() != 1:
            raise ValueError(f"'mask' must be a 1-D bool tensor, got {self.mask.dtype} of shape "
                             f"{tuple(self.mask.shape)}")
        if self.values.dim() != 2 or self.values.size(0) != self.mask.numel():
            raise ValueError(f"'values' must have shape [{self.mask.numel()}, C] like 'mask', "
                             f"got {tuple(self.values.shape)}")
        if not bool(torch.isfinite(self.values[self.mask]).all()):
            raise ValueError("Observed 'values' must be finite")

    @property
    def num_nodes(self) -> int:
        return self.mask.numel()

    @property
    def channels(self) -> int:
        return self.values.size(1)

    @classmethod
    def from_images(cls, images: Tensor, mask: Tensor) -> Observation:
        r"""An observation on full lattices, nodes in the order of
        :meth:`~pyg_infdiff.graph.LatticeIndex.full` (what :func:`~pyg_infdiff.diffusion.sample`
        uses with :obj:`shape`).

        Args:
            images (torch.Tensor): Mollified images :math:`(B, C, n_1, \dots, n_d)`.
            mask (torch.Tensor): Bool, :math:`(B, 1, n_1, \dots, n_d)` or
                :math:`(n_1, \dots, n_d)` (the same for every image); True where known.
        """
        num_graphs, channels, *shape = images.shape
        if tuple(mask.shape) == tuple(shape):
            mask = mask.expand(num_graphs, 1, *shape)
        if tuple(mask.shape) != (num_graphs, 1, *shape) or mask.dtype != torch.bool:
            raise ValueError(f"'mask' must be bool of shape {tuple(shape)} or "
                             f"{(num_graphs, 1, *shape)}, got {mask.dtype} {tuple(mask.shape)}")
        index = LatticeIndex.full(shape, num_graphs, images.device)
        return cls(index.gather(mask.to(images.dtype)).squeeze(-1) > 0.5, index.gather(images))

    @classmethod
    def from_coarse_images(cls, images: Tensor, shape: Sequence[int]) -> Observation:
        r"""Super-resolution as inpainting: observes coarse images on full fine lattices of
        :obj:`shape`, at the fine pixels whose centres coincide with the coarse pixel centres.

        This needs every fine size to be an odd multiple :math:`k` of the coarse one (coarse
        pixel :math:`i` is fine pixel :math:`k i + (k - 1) / 2`). For other ratios, sample on
        the union of both point sets with :obj:`pos` and :obj:`batch` instead.

        Args:
            images (torch.Tensor): Mollified coarse images :math:`(B, C, m_1, \dots, m_d)`.
            shape (Sequence[int]): The fine lattice :math:`(n_1, \dots, n_d)`.
        """
        num_graphs, channels, *coarse = images.shape
        shape = tuple(int(n) for n in shape)
        if len(shape) != len(coarse):
            raise ValueError(f"'shape' {shape} must have one entry per axis of {tuple(coarse)}")
        axes = []
        for m, n in zip(coarse, shape, strict=True):
            k = n // m
            if k * m != n or k % 2 == 0:
                raise ValueError(f"Fine size {n} is not an odd multiple of coarse size {m}; "
                                 f"pixel centres do not coincide")
            axes.append(torch.arange(m, device=images.device) * k + (k - 1) // 2)
        grids = torch.meshgrid(*axes, indexing="ij")
        strides = [math.prod(shape[j + 1:]) for j in range(len(shape))]
        pixel = sum(g.reshape(-1) * s for g, s in zip(grids, strides, strict=True))
        size = math.prod(shape)
        full = images.new_zeros(num_graphs, channels, size)
        full[:, :, pixel] = images.reshape(num_graphs, channels, -1)
        mask = torch.zeros(size, dtype=torch.bool, device=images.device)
        mask[pixel] = True
        return cls.from_images(full.view(num_graphs, channels, *shape), mask.view(shape))

    def noised(self, schedule: NoiseSchedule, t: int, noise: Tensor | None) -> Tensor:
        r"""The known values brought to step :obj:`t` (shared by all graphs):
        :math:`\sqrt{\bar\alpha_t}\, y + \sqrt{1 - \bar\alpha_t}\, \xi`, or :math:`y` for
        :math:`t = -1` (then :obj:`noise` may be :obj:`None`)."""
        alpha_bar = schedule.alpha_cumprod(t)
        if t < 0:
            return self.values
        if noise is None or noise.shape != self.values.shape:
            raise ValueError(f"Noising observations at t={t} needs 'noise' of shape "
                             f"{tuple(self.values.shape)}, got "
                             f"{None if noise is None else tuple(noise.shape)}")
        return math.sqrt(alpha_bar) * self.values + math.sqrt(1 - alpha_bar) * noise

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_nodes={self.num_nodes}, "
                f"observed={int(self.mask.sum())}, channels={self.channels})")

    def residual(self, x0: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        r"""The distance of a prediction of the clean data from the observations, per graph:
        :math:`\|m \odot (\hat x_0 - y)\|` over the observed nodes of each graph, :math:`(B,)`
        (differentiable; the guidance of ``sample(..., guidance=)``).

        Args:
            x0 (torch.Tensor): The prediction :math:`\hat x_0` at the nodes, :math:`(N, C)`.
            batch (torch.Tensor): Graph index of each node, :math:`(N,)`.
            num_graphs (int): The number of graphs :math:`B`.
        """
        if x0.shape != self.values.shape:
            raise ValueError(f"The prediction {tuple(x0.shape)} does not match the observation "
                             f"{tuple(self.values.shape)}")
        sq = (x0 - self.values.to(x0.dtype)).pow(2).sum(-1) * self.mask
        per_graph = sq.new_zeros(num_graphs).index_add(0, batch, sq)
        return per_graph.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()

    def replace(self, sample: Tensor, known: Tensor) -> Tensor:
        r"""Returns :obj:`sample` with the observed nodes set to :obj:`known`."""
        if sample.shape != self.values.shape:
            raise ValueError(f"The sample {tuple(sample.shape)} does not match the observation "
                             f"{tuple(self.values.shape)}")
        return torch.where(self.mask.unsqueeze(-1), known.to(sample.dtype), sample)


def renoise(sample: Tensor, schedule: NoiseSchedule, t_from: int, t_to: int, noise: Tensor
            ) -> Tensor:
    r"""Runs the forward process from step :obj:`t_from` up to the noisier step :obj:`t_to`,
    the "jump back" of RePaint's resampling.

    .. math::
        x_{t} = \sqrt{\bar\alpha_{t} / \bar\alpha_{s}}\; x_{s}
        + \sqrt{1 - \bar\alpha_{t} / \bar\alpha_{s}}\; \xi

    Args:
        sample (torch.Tensor): :math:`x_s` at the nodes, :math:`(N, C)`.
        schedule (NoiseSchedule): The schedule.
        t_from (int): :math:`s` (:math:`-1` for clean data).
        t_to (int): :math:`t > s`.
        noise (torch.Tensor): A fresh mollified noise field at the nodes, :math:`(N, C)`.
    """
    if t_to <= t_from:
        raise ValueError(f"'t_to' ({t_to}) must be larger than 't_from' ({t_from})")
    ratio = schedule.alpha_cumprod(t_to) / schedule.alpha_cumprod(t_from)
    return math.sqrt(ratio) * sample + math.sqrt(1 - ratio) * noise


def repaint_levels(num_steps: int, jump_length: int = 1, resample: int = 1) -> list[int]:
    r"""The visiting order of noise levels in RePaint's resampling schedule (Lugmayr et al.,
    `"RePaint: Inpainting using Denoising Diffusion Probabilistic Models"
    <https://arxiv.org/abs/2201.09865>`_, CVPR 2022).

    Level :math:`n` is pure noise (the first inference step) and level 0 the clean data. The
    walk goes down one level at a time; at every multiple of :obj:`jump_length` below the top
    it climbs back :obj:`jump_length` levels (forward noising) and descends again,
    :obj:`resample` - 1 times. Consecutive entries differ by one.

    Args:
        num_steps (int): The number :math:`n` of inference steps.
        jump_length (int, optional): Levels climbed per jump. (default: :obj:`1`)
        resample (int, optional): Passes over every jump segment (1: no jumps).
            (default: :obj:`1`)
    """
    if num_steps < 1 or jump_length < 1 or resample < 1:
        raise ValueError(f"'num_steps', 'jump_length' and 'resample' must be positive, got "
                         f"{num_steps}, {jump_length}, {resample}")
    if resample > 1 and jump_length >= num_steps:
        raise ValueError(f"'jump_length' ({jump_length}) must be smaller than the number of "
                         f"steps ({num_steps}) to resample")
    jumps = {k: resample - 1 for k in range(0, num_steps - jump_length, jump_length)}
    level, levels = num_steps, [num_steps]
    while level > 0:
        level -= 1
        levels.append(level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    return levels
