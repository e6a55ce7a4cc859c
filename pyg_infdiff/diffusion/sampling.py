r"""Drawing samples from a trained denoiser at any resolution or on any point set."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyg_infdiff._validation import validation, validation_enabled
from pyg_infdiff.graph.lattice import LatticeIndex, check_nodes

from .conditioning import Observation, renoise, repaint_levels
from .context import ContextNodes, LatticeSubset
from .denoiser import call_denoiser
from .process import MollifiedDiffusion
from .samplers import DDIMSampler, DDPMSampler

_POS_TOL = 1e-6


@dataclass
class SampleOutput:
    r"""Samples at the nodes, and as images when they were drawn on lattices.

    Args:
        values (torch.Tensor): Sampled (mollified) values at the nodes, :math:`(N, C)`.
        pos (torch.Tensor): Node coordinates, :math:`(N, d)`.
        batch (torch.Tensor): Sample index of each node, :math:`(N,)`.
        images (torch.Tensor, optional): :math:`(B, C, n_1, \dots, n_d)` when sampled with
            :obj:`shape`, else :obj:`None`.
        context_pos (torch.Tensor, optional): Coordinates of the context nodes when sampled
            with a context, :math:`(B M, d)`, graph by graph. (default: :obj:`None`)
        context_values (torch.Tensor, optional): The samples at the context nodes,
            :math:`(B M, C)`. (default: :obj:`None`)
    """

    values: Tensor
    pos: Tensor
    batch: Tensor
    images: Tensor | None = None
    context_pos: Tensor | None = None
    context_values: Tensor | None = None


def _nodes(pos: Tensor | None, batch: Tensor | None, shape: Sequence[int] | None,
           num_samples: int | None, device, dtype: torch.dtype | None
           ) -> tuple[Tensor, Tensor, int, LatticeIndex | None]:
    if (pos is None) == (shape is None):
        raise ValueError("Pass exactly one of 'pos' (points) and 'shape' (a lattice)")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"'num_samples' must be positive, got {num_samples}")
    if shape is not None:
        if batch is not None:
            raise ValueError("'batch' goes with 'pos', not with 'shape'")
        num_graphs = num_samples or 1
        lattice = LatticeIndex.full(shape, num_graphs, device)
        return lattice.pos(dtype or torch.float32), lattice.batch, num_graphs, lattice
    if pos.dim() != 2 or not pos.is_floating_point():
        raise ValueError(f"'pos' must be a floating [N, d] tensor, got {pos.dtype} "
                         f"{tuple(pos.shape)}")
    pos = pos.to(device=device if device is not None else pos.device, dtype=dtype or pos.dtype)
    check_nodes(pos, tol=_POS_TOL)
    if batch is None:
        num_graphs = num_samples or 1
        batch = torch.arange(num_graphs, device=pos.device).repeat_interleave(pos.size(0))
        return pos.repeat(num_graphs, 1), batch, num_graphs, None
    if batch.shape != (pos.size(0),) or batch.dtype != torch.long:
        raise ValueError(f"'batch' must be a long tensor of shape ({pos.size(0)},), got "
                         f"{batch.dtype} {tuple(batch.shape)}")
    num_graphs = int(batch.max()) + 1 if batch.numel() else 1
    if int(batch.min()) < 0 or torch.bincount(batch, minlength=num_graphs).min() == 0:
        raise ValueError(f"'batch' must number the samples 0..{num_graphs - 1}, each with nodes")
    if num_samples is not None and num_samples != num_graphs:
        raise ValueError(f"'num_samples'={num_samples} disagrees with 'batch', which holds "
                         f"{num_graphs} samples")
    return pos, batch.to(pos.device), num_graphs, None


@torch.no_grad()
def sample(
    model: Callable[..., Tensor],
    diffusion: MollifiedDiffusion,
    *,
    pos: Tensor | None = None,
    batch: Tensor | None = None,
    shape: Sequence[int] | None = None,
    num_samples: int | None = None,
    channels: int | None = None,
    steps: int = 50,
    sampler: Literal["ddim", "ddpm"] = "ddim",
    eta: float = 0.0,
    clip_x0: float | bool | None = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    observation: Observation | None = None,
    resample: int = 1,
    jump_length: int = 1,
    guidance: float = 0.0,
    edge_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    noise: Tensor | None = None,
    context: int | Tensor | LatticeSubset | None = None,
    context_until: int = -1,
) -> SampleOutput:
    r"""Samples functions from a denoiser and reads them at lattice pixels or at given points.

    The initial state and every fresh noise of the chain are whole mollified fields,
    ``diffusion.noise.draw(num_samples, channels, generator)`` read at the nodes. Hence the
    same :obj:`generator` seed gives the same fields at every resolution, and DDIM with
    :math:`\eta = 0` (deterministic after the first draw) gives the same function at every
    resolution, up to the model's own discretisation error.

    The values are samples of the mollified data :math:`T x_0`; deblur images with
    ``diffusion.mollifier.undo(out.images, ndim)``. The model is used as given (call
    ``model.eval()`` first), under :func:`torch.no_grad`. Inputs are checked once: the nodes
    here, the model's inputs at its first call; its later calls and the noise draws run with
    :func:`pyg_infdiff.validation` off, so a step on lattices reads nothing back from the
    device.

    Draws from :obj:`generator`, in order: the initial field; then per reverse step, a field
    for the sampler if the step is stochastic and a field for the observation if any (unless
    it is the last step); and one field per RePaint forward jump.

    The coefficients of every field (:math:`B C K^d` standard normals) are drawn on the device
    of :obj:`generator` and moved to the sampling device: pass ``torch.Generator(device)`` to
    draw on a GPU. A CPU generator gives the same samples on every device, at the price of a
    host-to-device copy per field (each stochastic step); without a generator the fields are
    drawn on the sampling device from its global generator.

    Args:
        model (callable): The denoiser ``model(x_t, pos, t, batch, edge_index=None)``, called
            through :func:`~pyg_infdiff.diffusion.call_denoiser` (which adds ``lattice=`` on
            lattices when the model accepts it).
        diffusion (MollifiedDiffusion): The process (noise, schedule, parametrisation).
        pos (torch.Tensor, optional): Node coordinates :math:`(N, d)`: one point set shared by
            all samples, or all nodes with :obj:`batch`. (default: :obj:`None`)
        batch (torch.Tensor, optional): Sample index of each node of :obj:`pos`.
            (default: :obj:`None`)
        shape (Sequence[int], optional): Sample on full lattices of this shape instead; the
            model then gets a :class:`~pyg_infdiff.graph.LatticeIndex`. (default: :obj:`None`)
        num_samples (int, optional): :math:`B`. (default: :obj:`None`, 1 or from :obj:`batch`)
        channels (int, optional): :math:`C`. (default: :obj:`None`, from :obj:`observation`)
        steps (int, optional): Inference steps, at most the training steps.
            (default: :obj:`50`)
        sampler (str, optional): ``"ddim"`` or ``"ddpm"``. (default: :obj:`"ddim"`)
        eta (float, optional): DDIM stochasticity. (default: :obj:`0.0`)
        clip_x0 (float, optional): Clamp the predicted clean data to :math:`[-c, c]`;
            :obj:`True` means 1.0 (images in :math:`[-1, 1]`), :obj:`None` or :obj:`False`
            disables. (default: :obj:`1.0`)
        generator (torch.Generator, optional): The source of every noise field; its device is
            where they are drawn. (default: :obj:`None`)
        progress (bool, optional): Show a progress bar. (default: :obj:`True`)
        observation (Observation, optional): Known node values to inpaint around.
            (default: :obj:`None`)
        resample (int, optional): RePaint resampling: passes over each segment of
            :obj:`jump_length` steps, noising forward between passes (see
            :func:`~pyg_infdiff.diffusion.repaint_levels`); needs an
            :obj:`observation`. (default: :obj:`1`, no resampling)
        jump_length (int, optional): RePaint's jump length in inference steps.
            (default: :obj:`1`)
        guidance (float, optional): Step size :math:`\zeta` of the guidance towards the
            :obj:`observation` through the denoiser's gradient
            (:meth:`Observation.residual`; DPS), on top of the replacement; one backward pass
            per step. With the exact denoiser of a Gaussian field it brings the samples
            close to the conditional distribution (the test suite's oracle; replacement alone
            does not). (default: :obj:`0.0`, none)
        edge_fn (callable, optional): Builds ``edge_index`` once from ``(pos, batch)`` for
            models that need a graph, e.g. a radius graph. (default: :obj:`None`)
        device (torch.device, optional): Where to sample. (default: :obj:`None`, the device of
            :obj:`pos`, else CPU)
        dtype (torch.dtype, optional): Floating type of the states. (default: :obj:`None`,
            that of :obj:`pos`, else float32)
        model_kwargs (Mapping, optional): More keyword arguments of the model at every step,
            e.g. ``{"cond": z}`` with one row per sample for a conditioned model.
            (default: :obj:`None`)
        noise (torch.Tensor, optional): The initial state at the nodes, :math:`(N, C)`, e.g.
            one mollified field read for every sample (then :obj:`generator` is not drawn
            from for it). (default: :obj:`None`, a fresh field per sample)
        context (int, torch.Tensor or LatticeSubset, optional): Read the nodes through a
            context (:class:`~pyg_infdiff.diffusion.ContextNodes`): :math:`M` uniform random
            points per sample, or :math:`M` random pixel centres of a lattice per sample
            (:class:`~pyg_infdiff.diffusion.LatticeSubset`, the training nodes of a model
            trained on that lattice), both drawn from :obj:`generator` right after the initial
            field (so the noise function stays the one drawn without a context); or the points
            themselves, :math:`(M, d)` or :math:`(B, M, d)`. The model integrates and pools over the
            context only (``context=`` of
            :class:`~pyg_infdiff.models.MultiscaleOperatorUNet`), so it sees the node density
            it was trained on, :math:`M` of its training nodes per function, at any
            resolution; the context's own trajectory does not depend on the other nodes, so
            the same seed gives the same function at every resolution. Not with
            :obj:`observation`, :obj:`noise` or :obj:`edge_fn`.
            (default: :obj:`None`, the nodes are their own context)
        context_until (int, optional): With a :obj:`context`, read through it only the steps
            from timesteps above this one; the steps from this timestep down read the nodes
            alone, as without a context, when the state is mostly signal. Through a context
            each node finishes on its own and edges between context points come out ragged;
            read together, the nodes smooth them, at the price of softer edges
            (``bench/context_until.py``). The context's values are then not returned.
            (default: :obj:`-1`, the context to the end)
    """
    pos, batch, num_graphs, lattice = _nodes(pos, batch, shape, num_samples, device, dtype)
    if observation is not None:
        if observation.num_nodes != pos.size(0):
            raise ValueError(f"The observation covers {observation.num_nodes} nodes, the "
                             f"samples have {pos.size(0)}")
        if channels is not None and channels != observation.channels:
            raise ValueError(f"'channels'={channels} disagrees with the observation "
                             f"({observation.channels} channels)")
        channels = observation.channels
        observation = Observation(observation.mask.to(pos.device),
                                  observation.values.to(device=pos.device, dtype=pos.dtype))
    if channels is None or channels < 1:
        raise ValueError(f"'channels' must be a positive integer, got {channels}")
    if resample > 1 and observation is None:
        raise ValueError(f"'resample'={resample} (RePaint) needs an observation")
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"'guidance' must be finite and >= 0, got {guidance}")
    if guidance > 0 and observation is None:
        raise ValueError(f"'guidance'={guidance} needs an observation to be guided towards")
    if clip_x0 is True:
        clip_x0 = 1.0
    elif clip_x0 is False:
        clip_x0 = None

    schedule = diffusion.schedule
    if sampler == "ddim":
        solver = DDIMSampler(schedule, diffusion.parametrization, eta=eta, clip_x0=clip_x0)
    elif sampler == "ddpm":
        solver = DDPMSampler(schedule, diffusion.parametrization, clip_x0=clip_x0)
    else:
        raise ValueError(f"Unknown sampler {sampler!r}, expected 'ddim' or 'ddpm'")
    solver.set_timesteps(steps)
    if context is not None and (observation is not None or noise is not None
                                or edge_fn is not None):
        raise ValueError("'context' does not combine with 'observation', 'noise' or 'edge_fn'")
    if context is None and context_until >= 0:
        raise ValueError(f"'context_until'={context_until} needs a 'context' to stop reading")
    edge_index = edge_fn(pos, batch) if edge_fn is not None else None
    ctx: ContextNodes | None = None

    def field_values(field) -> Tensor:
        values = field.at(lattice) if lattice is not None else field.evaluate(pos, batch)
        values = values.to(pos.dtype)
        if ctx is None:
            return values
        return ctx.merge(values, field.evaluate(ctx.context_pos, ctx.context_batch))

    def draw(g: torch.Generator | None = generator) -> Tensor:
        with validation(False):  # the nodes were checked once, above (_nodes)
            if ctx is None:
                return diffusion.draw_noise(num_graphs, channels, pos, batch, lattice, g)
            return field_values(diffusion.noise.draw(num_graphs, channels, generator=g,
                                                     device=pos.device, dtype=pos.dtype))

    timesteps = solver.timesteps.tolist() + [-1]  # level l is timesteps[steps - l]
    levels = repaint_levels(steps, jump_length, resample)
    if noise is not None and noise.shape != (pos.size(0), channels):
        raise ValueError(f"'noise' must have shape {(pos.size(0), channels)} (nodes, channels),"
                         f" got {tuple(noise.shape)}")
    nodes, node_batch, node_lattice, kwargs = pos, batch, lattice, dict(model_kwargs or {})
    if context is not None:  # the initial field, then the context points (see the docstring)
        with validation(False):
            field = diffusion.noise.draw(num_graphs, channels, generator=generator,
                                         device=pos.device, dtype=pos.dtype)
        ctx = ContextNodes.build(context, pos, batch, num_graphs, generator)
        x = field_values(field)
        nodes, node_batch, node_lattice = ctx.pos, ctx.batch, None
        kwargs["context"] = ctx.context
    else:
        x = draw() if noise is None else noise.to(device=pos.device, dtype=pos.dtype)

    def build_graph(edge_index: Tensor | None) -> Tensor | None:
        # On points, not a lattice: the graph and its kernels, built once per point set.
        if node_lattice is not None:
            return edge_index
        graph, kernels = (getattr(model, name, None) for name in ("context_graph", "edge_kernels"))
        if edge_index is None and callable(graph):  # every node its own context, or the context
            sources = (ctx.context if ctx is not None
                       else torch.arange(nodes.size(0), device=nodes.device))
            edge_index = graph(nodes, sources, node_batch)
        if edge_index is not None and callable(kernels):
            kwargs["kernels"] = kernels(nodes, edge_index)
        return edge_index

    edge_index = build_graph(edge_index)
    pairs = list(zip(levels[:-1], levels[1:], strict=True))
    # The model checks its inputs (nodes, batch, lattice: the same at every step) at its first
    # call; the later calls run without value checks, so a step reads nothing back to the host.
    check = validation_enabled()
    for level, next_level in tqdm(pairs, disable=not progress, desc="sampling"):
        t, t_next = timesteps[steps - level], timesteps[steps - next_level]
        if ctx is not None and t <= context_until:  # the nodes alone from here on
            x, ctx = x[ctx.query], None
            nodes, node_batch, node_lattice = pos, batch, lattice
            kwargs.pop("context")
            kwargs.pop("kernels", None)
            edge_index = build_graph(None)
        if next_level > level:  # RePaint: noise forward again
            x = renoise(x, schedule, t, t_next, draw())
            continue
        t_vec = torch.full((num_graphs,), t, dtype=torch.long, device=pos.device)
        with validation(check), torch.enable_grad() if guidance > 0 else nullcontext():
            x_t = x.detach().requires_grad_() if guidance > 0 else x
            output = call_denoiser(model, x_t, nodes, t_vec, node_batch, edge_index,
                                   node_lattice, kwargs)
            step = solver.step(output, t, x_t, noise=draw, generator=generator)
            if guidance > 0:  # DPS: pull x_{t'} down the residual's gradient in x_t
                residual = observation.residual(step.pred_original_sample, node_batch,
                                                num_graphs)
                (grad,) = torch.autograd.grad(residual.sum(), x_t)
        check = False
        x = step.prev_sample if guidance == 0 else step.prev_sample.detach() - guidance * grad
        if observation is not None:
            known = observation.noised(schedule, t_next, draw() if t_next >= 0 else None)
            x = observation.replace(x, known)

    context_pos = context_values = None
    if ctx is not None:
        context_pos, context_values, x = ctx.context_pos, x[ctx.context], x[ctx.query]
    images = None
    if lattice is not None:
        images = x.view(num_graphs, lattice.num_pixels, channels).transpose(1, 2)
        images = images.reshape(num_graphs, channels, *lattice.shape)
    return SampleOutput(x, pos, batch, images, context_pos, context_values)
