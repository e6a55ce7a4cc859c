r"""Use cases of a diffusion autoencoder (a denoiser conditioned on the latent vector of an
encoder of functions): reconstruction at any resolution from any subset of points, and
interpolation in the latent space."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from .process import MollifiedDiffusion
from .sampling import SampleOutput, sample


class Autoencoder(Protocol):
    r"""What the functions of this module need of a model (e.g.
    :class:`~pyg_infdiff.models.DiffusionAutoencoder`): ``encode(x, pos, batch) -> z``
    :math:`(B, D)` and the :obj:`~pyg_infdiff.diffusion.Denoiser` interface with a keyword
    ``cond=z``."""

    def encode(self, x: Tensor, pos: Tensor, batch: Tensor | None = None) -> Tensor: ...

    def __call__(self, x_t: Tensor, pos: Tensor, t: Tensor, batch: Tensor, **kwargs: Any
                 ) -> Tensor: ...


def slerp(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    r"""Spherical linear interpolation between two vectors, as used for the latents of
    diffusion autoencoders (`"Diffusion Autoencoders" <https://arxiv.org/abs/2111.15640>`_,
    Preechakul et al., CVPR 2022).

    .. math::
        \mathrm{slerp}(\mathbf{a}, \mathbf{b}; w) = \frac{\sin((1 - w)\,\theta)}{\sin\theta}\,
        \mathbf{a} + \frac{\sin(w\,\theta)}{\sin\theta}\, \mathbf{b}, \qquad
        \cos\theta = \frac{\mathbf{a} \cdot \mathbf{b}}{\|\mathbf{a}\|\,\|\mathbf{b}\|}

    It falls back to linear interpolation where :math:`\sin\theta` is negligible (parallel
    vectors). :math:`w = 0` gives :math:`\mathbf{a}` and :math:`w = 1` gives :math:`\mathbf{b}`.

    Args:
        a (torch.Tensor): The first vector :math:`(D,)`.
        b (torch.Tensor): The second vector :math:`(D,)`.
        weights (torch.Tensor): Interpolation weights :math:`(K,)`, usually in
            :math:`[0, 1]`.

    Shapes:
        - **output:** :math:`(K, D)`
    """
    if a.dim() != 1 or a.shape != b.shape:
        raise ValueError(f"'a' and 'b' must be vectors of one size, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if weights.dim() != 1:
        raise ValueError(f"'weights' must be 1-D, got shape {tuple(weights.shape)}")
    a64, b64, w = a.double(), b.double(), weights.to(a.device, torch.float64)[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-30)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    if float(sin.detach()) < 1e-6:
        out = (1 - w) * a64 + w * b64
    else:
        out = (torch.sin((1 - w) * theta) * a64 + torch.sin(w * theta) * b64) / sin
    return out.to(a.dtype)


def reconstruct(
    model: Autoencoder,
    diffusion: MollifiedDiffusion,
    x: Tensor,
    pos: Tensor,
    batch: Tensor | None = None,
    *,
    shape: Sequence[int] | None = None,
    query_pos: Tensor | None = None,
    steps: int = 100,
    generator: torch.Generator | None = None,
    **sample_kwargs: Any,
) -> SampleOutput:
    r"""Reconstructs functions from any of their discretisations at any resolution: encodes
    them with ``model.encode(x, pos, batch)`` (a full lattice, a random subset of its pixels,
    irregular points) and decodes the latents :math:`\mathbf{z}` by DDIM from fresh mollified
    noise, on full lattices of :obj:`shape` or at the points :obj:`query_pos`, as the official
    ∞-Diff model reconstructs (100 DDIM steps).

    Args:
        model (Autoencoder): The diffusion autoencoder, e.g.
            :class:`~pyg_infdiff.models.DiffusionAutoencoder` (call ``model.eval()`` first).
        diffusion (MollifiedDiffusion): The process it was trained with.
        x (torch.Tensor): Observed clean (mollified) values :math:`(N, C)`.
        pos (torch.Tensor): Their coordinates :math:`(N, d)`.
        batch (torch.Tensor, optional): Their graph index :math:`(N,)`; one graph if
            :obj:`None`. (default: :obj:`None`)
        shape (Sequence[int], optional): Decode on full lattices of this shape.
            (default: :obj:`None`)
        query_pos (torch.Tensor, optional): Or decode at these points :math:`(M, d)`, shared
            by every graph. (default: :obj:`None`)
        steps (int, optional): DDIM steps. (default: :obj:`100`)
        generator (torch.Generator, optional): The source of the noise fields.
            (default: :obj:`None`)
        **sample_kwargs: More arguments of :func:`~pyg_infdiff.diffusion.sample` (``eta``,
            ``clip_x0``, ``progress``, ``edge_fn``, ...).

    Returns:
        :class:`~pyg_infdiff.diffusion.SampleOutput`: the decoded values (and images on
        lattices).
    """
    with torch.no_grad():
        z = model.encode(x, pos, batch)
    return sample(model, diffusion, pos=query_pos, shape=shape, num_samples=z.size(0),
                  channels=x.size(1), steps=steps, sampler="ddim", generator=generator,
                  model_kwargs={"cond": z}, **sample_kwargs)


def interpolate(
    model: Autoencoder,
    diffusion: MollifiedDiffusion,
    z_a: Tensor,
    z_b: Tensor,
    num_points: int = 8,
    *,
    channels: int,
    shape: Sequence[int] | None = None,
    query_pos: Tensor | None = None,
    steps: int = 100,
    generator: torch.Generator | None = None,
    **sample_kwargs: Any,
) -> SampleOutput:
    r"""Decodes :obj:`num_points` latents spherically interpolated between :obj:`z_a` and
    :obj:`z_b` (:func:`slerp`, end points included) by DDIM from one shared mollified noise
    field, so that the decoded functions differ only through :math:`\mathbf{z}`; at any
    resolution (:obj:`shape`) or set of points (:obj:`query_pos`).

    Get the latents with ``model.encode(x, pos, batch)`` from any discretisations of the two
    functions.

    Args:
        model (Autoencoder): The diffusion autoencoder (in eval mode).
        diffusion (MollifiedDiffusion): The process it was trained with.
        z_a (torch.Tensor): The first latent :math:`(D,)`.
        z_b (torch.Tensor): The second latent :math:`(D,)`.
        num_points (int, optional): Decoded points of the path, :math:`\ge 2`.
            (default: :obj:`8`)
        channels (int): Channels :math:`C` of the data.
        shape (Sequence[int], optional): Decode on full lattices of this shape.
            (default: :obj:`None`)
        query_pos (torch.Tensor, optional): Or at these points :math:`(M, d)`.
            (default: :obj:`None`)
        steps (int, optional): DDIM steps. (default: :obj:`100`)
        generator (torch.Generator, optional): The source of the shared noise field (one
            draw). (default: :obj:`None`)
        **sample_kwargs: More arguments of :func:`~pyg_infdiff.diffusion.sample`.

    Returns:
        :class:`~pyg_infdiff.diffusion.SampleOutput`: one sample per point of the path,
        from :obj:`z_a` to :obj:`z_b`.
    """
    if num_points < 2:
        raise ValueError(f"'num_points' must be at least 2, got {num_points}")
    if (shape is None) == (query_pos is None):
        raise ValueError("Pass exactly one of 'shape' (a lattice) and 'query_pos' (points)")
    z = slerp(z_a, z_b, torch.linspace(0, 1, num_points))
    field = diffusion.noise.draw(1, channels, generator=generator, device=z.device)
    if shape is not None:
        values = field.on_lattice(shape).reshape(1, channels, math.prod(shape))
        values = values.transpose(1, 2).reshape(-1, channels)
        dtype = sample_kwargs.get("dtype") or torch.float32
    else:
        values = field.evaluate(query_pos.to(z.device))
        dtype = sample_kwargs.get("dtype") or query_pos.dtype
    noise = values.to(dtype).repeat(num_points, 1)
    return sample(model, diffusion, pos=query_pos, shape=shape, num_samples=num_points,
                  channels=channels, steps=steps, sampler="ddim", generator=generator,
                  model_kwargs={"cond": z}, noise=noise, **sample_kwargs)
