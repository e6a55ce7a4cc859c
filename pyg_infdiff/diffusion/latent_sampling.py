r"""Unconditional sampling through the second stage of ∞-Diff: latents :math:`\mathbf{z}` drawn
by a :class:`~pyg_infdiff.diffusion.LatentDiffusion` (:func:`sample_latents`), decoded at any
resolution by a diffusion autoencoder's decoder (:func:`decode_latents`), or both in one call
(:func:`sample_two_stage`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .latent import LatentDenoiser, LatentDiffusion, LatentStats, _randn
from .process import MollifiedDiffusion
from .samplers import DDIMSampler, DDPMSampler
from .sampling import SampleOutput, sample


class _LargeVarianceDDPM(DDPMSampler):
    r"""Ancestral sampling with the "fixed large" variance of Ho et al. (``FIXED_LARGE`` of
    improved-diffusion, the official latent model's): :math:`1 - \bar\alpha_t /
    \bar\alpha_{t'}` (:math:`\beta_t` between consecutive steps) instead of the posterior
    variance, and no noise at the last step."""

    def _step_variance(self, t: int) -> float:
        if self.previous_timestep(t) < 0:
            return 0.0
        alpha_bar, alpha_bar_prev = self._alpha_bars(t)
        return 1 - alpha_bar / alpha_bar_prev


@torch.no_grad()
def sample_latents(
    model: LatentDenoiser,
    diffusion: LatentDiffusion,
    num_samples: int,
    latent_dim: int,
    *,
    stats: LatentStats | None = None,
    sampler: Literal["ddpm", "ddim"] = "ddpm",
    steps: int | None = None,
    variance: Literal["large", "small"] = "large",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    noise: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""Samples latents :math:`\mathbf{z}` from a latent denoiser, the first half of an
    unconditional sample of the two-stage model.

    The official latent model samples ancestrally over all 1,000 steps with the "fixed large"
    variance and no clipping (``p_sample_loop(..., clip_denoised=False)``), the default here:
    from step :math:`t` to the previous inference step :math:`t'`
    (:math:`\alpha = \bar\alpha_t / \bar\alpha_{t'}`, :math:`\bar\alpha_{-1} = 1`),

    .. math::
        \mathbf{z}_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,(1 - \alpha)}{1 - \bar\alpha_t}\,
        \hat{\mathbf{z}}_0 + \frac{\sqrt{\alpha}\,(1 - \bar\alpha_{t'})}{1 - \bar\alpha_t}\,
        \mathbf{z}_t + \sigma_t\, \xi, \qquad
        \sigma_t^2 = 1 - \alpha \;\; (\text{"large"}), \qquad
        \sigma_t^2 = \frac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}(1 - \alpha) \;\;
        (\text{"small"})

    without noise at the last step. ``sampler="ddim"`` runs
    :class:`~pyg_infdiff.diffusion.DDIMSampler` instead (with :obj:`eta`). Both use the
    samplers of :mod:`pyg_infdiff.diffusion` on plain :math:`(B, D)` tensors.

    Draws from :obj:`generator`, in order: the initial :math:`\mathbf{z}_T` (unless
    :obj:`noise` is given), then one :math:`\xi` per stochastic step, each on the generator's
    device and moved to :obj:`device`.

    Args:
        model (callable): The denoiser ``model(z_t, t)`` (call ``model.eval()`` first).
        diffusion (LatentDiffusion): The process it was trained with.
        num_samples (int): :math:`B`.
        latent_dim (int): :math:`D`.
        stats (LatentStats, optional): The statistics the model was trained with; the samples
            are mapped back with :meth:`LatentStats.denormalize`. (default: :obj:`None`)
        sampler (str, optional): ``"ddpm"`` (ancestral) or ``"ddim"``.
            (default: :obj:`"ddpm"`)
        steps (int, optional): Inference steps; :obj:`None` means all :math:`T`.
            (default: :obj:`None`)
        variance (str, optional): The ancestral variance, ``"large"`` or ``"small"``.
            (default: :obj:`"large"`)
        eta (float, optional): DDIM stochasticity. (default: :obj:`0.0`)
        generator (torch.Generator, optional): The source of the noise.
            (default: :obj:`None`)
        device (torch.device or str, optional): Where to sample. (default: :obj:`None`, the
            device of :obj:`noise`, else CPU)
        dtype (torch.dtype, optional): The dtype of the states. (default: :obj:`torch.float32`)
        noise (torch.Tensor, optional): The initial state :math:`(B, D)`.
            (default: :obj:`None`)
        progress (bool, optional): Show a progress bar. (default: :obj:`False`)

    Shapes:
        - **output:** :math:`(B, D)`
    """
    if num_samples < 1 or latent_dim < 1:
        raise ValueError(f"'num_samples' and 'latent_dim' must be positive, got {num_samples} "
                         f"and {latent_dim}")
    if stats is not None and stats.dim != latent_dim:
        raise ValueError(f"The statistics are of {stats.dim}-dimensional latents, not "
                         f"{latent_dim}")
    if device is None:
        device = noise.device if noise is not None else torch.device("cpu")
    schedule = diffusion.schedule
    if sampler == "ddpm":
        if variance not in ("large", "small"):
            raise ValueError(f"'variance' must be 'large' or 'small', got {variance!r}")
        cls = _LargeVarianceDDPM if variance == "large" else DDPMSampler
        solver = cls(schedule, diffusion.parametrization)
    elif sampler == "ddim":
        solver = DDIMSampler(schedule, diffusion.parametrization, eta=eta)
    else:
        raise ValueError(f"Unknown sampler {sampler!r}, expected 'ddpm' or 'ddim'")
    solver.set_timesteps(schedule.num_steps if steps is None else steps)
    shape = (num_samples, latent_dim)
    if noise is None:
        z = _randn(shape, generator, device, dtype)
    elif noise.shape != shape:
        raise ValueError(f"'noise' must have shape {shape}, got {tuple(noise.shape)}")
    else:
        z = noise.to(device=device, dtype=dtype)

    def draw(g: torch.Generator | None) -> Tensor:
        return _randn(shape, g, device, dtype)

    for t in tqdm(solver.timesteps.tolist(), disable=not progress, desc="latents"):
        t_vec = torch.full((num_samples,), t, dtype=torch.long, device=device)
        output = model(z, t_vec)
        z = solver.step(output, t, z, noise=draw, generator=generator).prev_sample
    return stats.denormalize(z) if stats is not None else z


@torch.no_grad()
def decode_latents(
    decoder: Callable[..., Tensor],
    diffusion: MollifiedDiffusion,
    z: Tensor,
    *,
    channels: int,
    shape: Sequence[int] | None = None,
    query_pos: Tensor | None = None,
    steps: int = 100,
    sampler: Literal["ddim", "ddpm"] = "ddim",
    generator: torch.Generator | None = None,
    **sample_kwargs: Any,
) -> SampleOutput:
    r"""Decodes latents :math:`\mathbf{z}` with a conditioned denoiser (e.g.
    :class:`~pyg_infdiff.models.DiffusionAutoencoder`) on full lattices of any :obj:`shape`
    or at any points :obj:`query_pos`: :func:`~pyg_infdiff.diffusion.sample` with
    ``model_kwargs={"cond": z}``, by 100 DDIM steps as the official model decodes.

    Args:
        decoder (callable): The conditioned denoiser (in eval mode).
        diffusion (MollifiedDiffusion): The process it was trained with.
        z (torch.Tensor): Latents :math:`(B, D)`, as the encoder gives them (not
            standardised).
        channels (int): Channels :math:`C` of the data.
        shape (Sequence[int], optional): Decode on full lattices of this shape.
            (default: :obj:`None`)
        query_pos (torch.Tensor, optional): Or at these points :math:`(M, d)`, shared by
            every sample. (default: :obj:`None`)
        steps (int, optional): Sampler steps. (default: :obj:`100`)
        sampler (str, optional): ``"ddim"`` or ``"ddpm"``. (default: :obj:`"ddim"`)
        generator (torch.Generator, optional): The source of the noise fields.
            (default: :obj:`None`)
        **sample_kwargs: More arguments of :func:`~pyg_infdiff.diffusion.sample` (``eta``,
            ``clip_x0``, ``progress``, ``device``, ...).
    """
    if z.dim() != 2:
        raise ValueError(f"Expected latents of shape [B, D], got {tuple(z.shape)}")
    return sample(decoder, diffusion, pos=query_pos, shape=shape, num_samples=z.size(0),
                  channels=channels, steps=steps, sampler=sampler, generator=generator,
                  model_kwargs={"cond": z}, **sample_kwargs)


@torch.no_grad()
def sample_two_stage(
    latent_model: LatentDenoiser,
    latent_diffusion: LatentDiffusion,
    decoder: Callable[..., Tensor],
    diffusion: MollifiedDiffusion,
    num_samples: int,
    *,
    latent_dim: int,
    channels: int,
    stats: LatentStats | None = None,
    shape: Sequence[int] | None = None,
    query_pos: Tensor | None = None,
    latent_steps: int | None = None,
    latent_sampler: Literal["ddpm", "ddim"] = "ddpm",
    steps: int = 100,
    generator: torch.Generator | None = None,
    **sample_kwargs: Any,
) -> SampleOutput:
    r"""Unconditional samples of the two-stage model of ∞-Diff: latents from the latent
    diffusion model (:func:`sample_latents`, mapped back through :obj:`stats`), decoded at
    any resolution (:func:`decode_latents`), as the official ``generate_samples.py``.

    Draws from :obj:`generator`: first the latent chain, then the decoder's noise fields. To
    decode one set of latents at several resolutions, call the two functions separately.

    .. code-block:: python

        import torch
        from pyg_infdiff.diffusion import LatentDiffusion, MollifiedDiffusion, sample_two_stage
        from pyg_infdiff.models import DiffusionAutoencoder, LatentMLP, LatentMLPConfig
        from pyg_infdiff.noise import MollifiedNoise

        decoder = DiffusionAutoencoder.preset(28).eval()  # trained: stage 1
        latent = LatentMLP(LatentMLPConfig(decoder.latent_dim, 64, 3)).eval()  # stage 2
        out = sample_two_stage(latent, LatentDiffusion(), decoder,
                               MollifiedDiffusion(MollifiedNoise(1 / 28, 2)), 2,
                               latent_dim=decoder.latent_dim, channels=1, shape=(14, 14),
                               latent_steps=4, steps=2, progress=False)
        assert out.images.shape == (2, 1, 14, 14)

    Args:
        latent_model (callable): The latent denoiser (in eval mode).
        latent_diffusion (LatentDiffusion): Its process.
        decoder (callable): The conditioned denoiser (in eval mode).
        diffusion (MollifiedDiffusion): Its process.
        num_samples (int): :math:`B`.
        latent_dim (int): :math:`D`.
        channels (int): Channels :math:`C` of the data.
        stats (LatentStats, optional): The statistics the latent model was trained with.
            (default: :obj:`None`)
        shape (Sequence[int], optional): Decode on full lattices of this shape.
            (default: :obj:`None`)
        query_pos (torch.Tensor, optional): Or at these points :math:`(M, d)`.
            (default: :obj:`None`)
        latent_steps (int, optional): Steps of the latent sampler; :obj:`None` means all.
            (default: :obj:`None`)
        latent_sampler (str, optional): ``"ddpm"`` or ``"ddim"``. (default: :obj:`"ddpm"`)
        steps (int, optional): DDIM steps of the decoder. (default: :obj:`100`)
        generator (torch.Generator, optional): The source of all noise.
            (default: :obj:`None`)
        **sample_kwargs: More arguments of :func:`~pyg_infdiff.diffusion.sample`.
    """
    device = sample_kwargs.get("device")
    if device is None and query_pos is not None:
        device = query_pos.device
    z = sample_latents(latent_model, latent_diffusion, num_samples, latent_dim, stats=stats,
                       sampler=latent_sampler, steps=latent_steps, generator=generator,
                       device=device)
    return decode_latents(decoder, diffusion, z, channels=channels, shape=shape,
                          query_pos=query_pos, steps=steps, generator=generator,
                          **sample_kwargs)
