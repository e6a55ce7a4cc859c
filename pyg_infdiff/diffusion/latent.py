r"""The second stage of ∞-Diff: a Gaussian diffusion over the latent vectors :math:`\mathbf{z}`
of a diffusion autoencoder, its statistics and its training loss. Sampling through it (draw
:math:`\mathbf{z}`, then decode it at any resolution) is in
:mod:`pyg_infdiff.diffusion.latent_sampling`."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from pyg_infdiff._validation import validation_enabled

from .process import predict_noise, predict_x0, training_target
from .schedules import NoiseSchedule, constant_schedule
from .timesteps import TimestepSampler, UniformTimestepSampler

LatentParametrization = Literal["eps", "x0", "v"]
r"""What a latent denoiser predicts: the white noise :math:`\epsilon`, the clean latent
:math:`\mathbf{z}_0`, or :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\,
\mathbf{z}_0`."""

LatentLoss = Literal["l1", "l2"]
r"""The distance of :meth:`LatentDiffusion.training_losses`: mean absolute (``"l1"``, the
official latent model's) or mean squared (``"l2"``) error."""

LatentDenoiser = Callable[[Tensor, Tensor], Tensor]
r"""A denoiser of latents, ``model(z_t, t) -> output``: :math:`(B, D)` and :math:`(B,)` to
:math:`(B, D)`, e.g. :class:`~pyg_infdiff.models.LatentMLP`."""


@dataclass
class LatentStats:
    r"""Per-dimension statistics of the latents of a data set, which the latent diffusion model
    is trained on after standardising: :math:`\tilde{\mathbf{z}} = (\mathbf{z} -
    \boldsymbol\mu) / \boldsymbol\sigma`. Samples of the latent model are mapped back with
    :meth:`denormalize` before decoding. Store :meth:`to_dict` with the checkpoint (e.g. in the
    :class:`~pyg_infdiff.training.Trainer`'s ``model_config``) and rebuild with
    :meth:`from_dict`.

    Args:
        mean (torch.Tensor): :math:`\boldsymbol\mu`, shape :math:`(D,)`.
        std (torch.Tensor): :math:`\boldsymbol\sigma > 0`, shape :math:`(D,)`.
    """

    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        if self.mean.dim() != 1 or self.std.shape != self.mean.shape:
            raise ValueError(f"'mean' and 'std' must be vectors of one size, got "
                             f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}")
        if not bool((self.std > 0).all()) or not bool(torch.isfinite(self.mean).all()):
            raise ValueError("'std' must be positive and 'mean' finite in every dimension")

    @classmethod
    def from_latents(cls, z: Tensor, center: bool = True, min_std: float = 1e-6
                     ) -> LatentStats:
        r"""The statistics of a set of latents, computed in float64.

        The official code divides by the per-dimension standard deviation (unbiased) and sets
        the mean to zero, to work around NaNs in its half-precision mean (its comment says the
        mean should be zero anyway); :obj:`center=False` does the same, :obj:`center=True`
        subtracts the mean.

        Args:
            z (torch.Tensor): Latents :math:`(M, D)`, :math:`M \ge 2`.
            center (bool, optional): Subtract the mean. (default: :obj:`True`)
            min_std (float, optional): Floor of :math:`\boldsymbol\sigma` (for constant
                dimensions). (default: :obj:`1e-6`)
        """
        if z.dim() != 2 or z.size(0) < 2:
            raise ValueError(f"Expected at least two latents [M, D], got {tuple(z.shape)}")
        z64 = z.detach().double()
        mean = z64.mean(0) if center else torch.zeros_like(z64[0])
        std = z64.std(0).clamp_min(min_std)
        return cls(mean.to(z.dtype), std.to(z.dtype))

    @property
    def dim(self) -> int:
        r"""The size :math:`D` of the latents."""
        return self.mean.numel()

    def normalize(self, z: Tensor) -> Tensor:
        r""":math:`(\mathbf{z} - \boldsymbol\mu) / \boldsymbol\sigma`, rows :math:`(B, D)`."""
        return (z - self.mean.to(z)) / self.std.to(z)

    def denormalize(self, z: Tensor) -> Tensor:
        r""":math:`\boldsymbol\sigma \odot \tilde{\mathbf{z}} + \boldsymbol\mu`, the inverse of
        :meth:`normalize`."""
        return z * self.std.to(z) + self.mean.to(z)

    def to_dict(self) -> dict[str, list[float]]:
        r"""The statistics as lists of Python floats (exact for float32 and float64)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], dtype: torch.dtype = torch.float32) -> LatentStats:
        r"""The inverse of :meth:`to_dict`."""
        if set(data) != {"mean", "std"}:
            raise ValueError(f"Expected the keys 'mean' and 'std', got {sorted(data)}")
        return cls(torch.tensor(data["mean"], dtype=dtype), torch.tensor(data["std"], dtype=dtype))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim})"


@dataclass
class LatentTrainingLosses:
    r"""The outcome of :meth:`LatentDiffusion.training_losses`.

    Args:
        loss (torch.Tensor): The scalar loss to minimise (importance-weighted mean).
        per_sample (torch.Tensor): The unweighted loss of each latent, :math:`(B,)`.
        t (torch.Tensor): The time step of each latent, :math:`(B,)`.
        weights (torch.Tensor): The importance weight of each latent, :math:`(B,)`.
    """

    loss: Tensor
    per_sample: Tensor
    t: Tensor
    weights: Tensor


class LatentDiffusion:
    r"""The Gaussian diffusion over latent vectors of the second stage of `"Infinite
    Resolution Diffusion with Subsampled Mollified States"
    <https://arxiv.org/abs/2303.18242>`_ (Bond-Taylor & Willcocks, ICLR 2024), as in the
    latent DPM of `"Diffusion Autoencoders" <https://arxiv.org/abs/2111.15640>`_.

    .. math::
        \mathbf{z}_t = \sqrt{\bar\alpha_t}\, \mathbf{z}_0 + \sqrt{1 - \bar\alpha_t}\,
        \epsilon, \qquad \epsilon \sim \mathcal{N}(\mathbf{0}, \mathbf{I}_D)

    with plain white noise (a latent is a vector, not a function), on standardised latents
    (:class:`LatentStats`). The defaults are the official latent model's
    (``configs/*_latent_config.py``, ``train_latent_diffusion.py``): 1,000 steps of the
    constant schedule :math:`\beta_t = 0.008` (:func:`constant_schedule`), the noise as target,
    the L1 loss, uniform time steps. Sample with :func:`sample_latents` (ancestral with the
    "fixed large" variance :math:`\beta_t`, the official choice, or DDIM), and decode with
    :func:`decode_latents` or all at once with :func:`sample_two_stage`.

    .. code-block:: python

        import torch
        from pyg_infdiff.diffusion import LatentDiffusion
        from pyg_infdiff.models import LatentMLP, LatentMLPConfig

        diffusion = LatentDiffusion()
        model = LatentMLP(LatentMLPConfig(latent_dim=16, hidden_channels=64, num_layers=3))
        z = torch.randn(256, 16)  # standardised latents of a data set
        loss = diffusion.training_loss(model, z, generator=torch.Generator().manual_seed(0))
        loss.backward()

    Args:
        schedule (NoiseSchedule, optional): The variance schedule; :obj:`None` means
            :func:`constant_schedule` (1,000 steps, :math:`\beta = 0.008`).
            (default: :obj:`None`)
        parametrization (str, optional): What the model predicts, ``"eps"``, ``"x0"`` or
            ``"v"``. (default: :obj:`"eps"`)
        loss (str, optional): ``"l1"`` or ``"l2"``. (default: :obj:`"l1"`)
    """

    def __init__(self, schedule: NoiseSchedule | None = None,
                 parametrization: LatentParametrization = "eps",
                 loss: LatentLoss = "l1") -> None:
        if parametrization not in get_args(LatentParametrization):
            raise ValueError(f"Unknown parametrization {parametrization!r}, expected one of "
                             f"{get_args(LatentParametrization)}")
        if loss not in get_args(LatentLoss):
            raise ValueError(f"Unknown loss {loss!r}, expected one of {get_args(LatentLoss)}")
        self.schedule = constant_schedule() if schedule is None else schedule
        self.parametrization = parametrization
        self.loss = loss

    @property
    def num_steps(self) -> int:
        r"""The number of training steps :math:`T`."""
        return self.schedule.num_steps

    def coefficients(self, t: Tensor, dtype: torch.dtype = torch.float32
                     ) -> tuple[Tensor, Tensor]:
        r"""Returns :math:`(\sqrt{\bar\alpha_t}, \sqrt{1 - \bar\alpha_t})` of every row, each
        :math:`(B, 1)`, on the device of :obj:`t`.

        Args:
            t (torch.Tensor): Time step of each row, long :math:`(B,)`.
            dtype (torch.dtype, optional): The output dtype. (default: :obj:`torch.float32`)
        """
        if t.dim() != 1 or t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"'t' must be a 1-D integer tensor, got {t.dtype} of shape "
                             f"{tuple(t.shape)}")
        if validation_enabled() and t.numel():
            low, high = torch.stack([t.min(), t.max()]).tolist()
            if low < 0 or high >= self.num_steps:
                raise ValueError(f"Time steps must lie in [0, {self.num_steps - 1}], got "
                                 f"[{low}, {high}]")
        a = self.schedule.signal_scale.to(t.device)[t.long()].to(dtype)
        s = self.schedule.noise_scale.to(t.device)[t.long()].to(dtype)
        return a.unsqueeze(-1), s.unsqueeze(-1)

    def q_sample(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        r"""Draws :math:`\mathbf{z}_t \sim q(\mathbf{z}_t \mid \mathbf{z}_0)`:
        :math:`\sqrt{\bar\alpha_t}\, \mathbf{z}_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon`.

        Args:
            z0 (torch.Tensor): Clean latents :math:`(B, D)`.
            t (torch.Tensor): Time step of each row :math:`(B,)`.
            noise (torch.Tensor): :math:`\epsilon`, :math:`(B, D)`.
        """
        _check_latents(z0, noise)
        a, s = self.coefficients(t, z0.dtype)
        return a * z0 + s * noise

    def predict_x0(self, output: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
        r"""The clean latents predicted by a model output
        (see :func:`~pyg_infdiff.diffusion.predict_x0`)."""
        a, s = self.coefficients(t, z_t.dtype)
        return predict_x0(output, z_t, a, s, self.parametrization)

    def predict_noise(self, output: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
        r"""The noise predicted by a model output
        (see :func:`~pyg_infdiff.diffusion.predict_noise`)."""
        a, s = self.coefficients(t, z_t.dtype)
        return predict_noise(output, z_t, a, s, self.parametrization)

    def training_losses(
        self,
        model: LatentDenoiser,
        z: Tensor,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        timestep_sampler: TimestepSampler | None = None,
    ) -> LatentTrainingLosses:
        r"""Computes the denoising loss of a batch of (standardised) latents.

        .. math::
            \mathcal{L} = \frac{1}{B D} \sum_{b, d} w_b\,
            \left| f_\theta(\mathbf{z}_t, t)_{b,d} - y_{b,d} \right|^p

        with :math:`p = 1` (``"l1"``) or 2 (``"l2"``), :math:`y` the target of the
        parametrisation and :math:`w` the importance weight of each row's time step.

        Random draws, in order: the time steps (unless :obj:`t` is given), then the noise
        (unless :obj:`noise` is given), both from :obj:`generator` (on its device, then moved
        to the device of :obj:`z`).

        Args:
            model (callable): The denoiser ``model(z_t, t)``.
            z (torch.Tensor): Clean latents :math:`(B, D)`.
            t (torch.Tensor, optional): Time step of each row. (default: :obj:`None`)
            noise (torch.Tensor, optional): :math:`\epsilon`, :math:`(B, D)`.
                (default: :obj:`None`)
            generator (torch.Generator, optional): Source of randomness. (default: :obj:`None`)
            timestep_sampler (TimestepSampler, optional): Draws :obj:`t` and importance
                weights; :obj:`None` means uniform. (default: :obj:`None`)
        """
        if z.dim() != 2:
            raise ValueError(f"Expected latents of shape [B, D], got {tuple(z.shape)}")
        if t is None:
            sampler = timestep_sampler or UniformTimestepSampler(self.num_steps)
            t, weights = sampler.sample(z.size(0), generator=generator, device=z.device)
        elif timestep_sampler is not None:
            raise ValueError("Pass either 't' or 'timestep_sampler', not both")
        else:
            if t.shape != (z.size(0),):
                raise ValueError(f"'t' must hold one step per row ({z.size(0)}), got shape "
                                 f"{tuple(t.shape)}")
            weights = torch.ones(z.size(0), device=z.device)
        if noise is None:
            noise = _randn(z.shape, generator, z.device, z.dtype)
        _check_latents(z, noise)
        a, s = self.coefficients(t, z.dtype)
        z_t = a * z + s * noise
        output = model(z_t, t)
        if output.shape != z.shape:
            raise ValueError(f"The model returned {tuple(output.shape)}, expected "
                             f"{tuple(z.shape)}")
        error = output - training_target(z, noise, a, s, self.parametrization)
        per_sample = (error.abs() if self.loss == "l1" else error.square()).mean(dim=-1)
        weights = weights.to(per_sample.dtype)
        loss = (weights * per_sample).mean()
        if timestep_sampler is not None:
            timestep_sampler.update(t, per_sample.detach())
        return LatentTrainingLosses(loss, per_sample, t, weights)

    def training_loss(
        self,
        model: LatentDenoiser,
        z: Tensor,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        timestep_sampler: TimestepSampler | None = None,
    ) -> Tensor:
        r"""The scalar loss of :meth:`training_losses` (same arguments); use it as the
        :class:`~pyg_infdiff.training.Trainer`'s ``loss_fn`` on batches of latents."""
        return self.training_losses(model, z, t, noise, generator=generator,
                                    timestep_sampler=timestep_sampler).loss

    def to_dict(self) -> dict[str, Any]:
        r"""The process as plain values (for a checkpoint's ``model_config``): a constant
        schedule by its :math:`\beta`, any other by its list of :math:`\beta_t` (and its
        name)."""
        betas = self.schedule.betas.cpu()
        out: dict[str, Any] = {"schedule": self.schedule.name, "num_steps": self.num_steps,
                               "parametrization": self.parametrization, "loss": self.loss}
        if bool((betas == betas[0]).all()):
            out["beta"] = float(betas[0])
        else:
            out["betas"] = betas.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentDiffusion:
        r"""The inverse of :meth:`to_dict`."""
        known = {"schedule", "num_steps", "parametrization", "loss", "beta", "betas"}
        if set(data) - known or ("beta" in data) == ("betas" in data):
            raise ValueError(f"Expected num_steps, parametrization, loss and one of beta or "
                             f"betas, got {sorted(data)}")
        if "beta" in data:
            schedule = constant_schedule(int(data["num_steps"]), float(data["beta"]),
                                         reference_steps=None)
        else:
            schedule = NoiseSchedule(torch.tensor(data["betas"], dtype=torch.float64),
                                     name=data.get("schedule", "custom"))
        return cls(schedule, data.get("parametrization", "eps"), data.get("loss", "l1"))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(schedule={self.schedule!r}, "
                f"parametrization={self.parametrization!r}, loss={self.loss!r})")


def _check_latents(z: Tensor, noise: Tensor) -> None:
    if z.dim() != 2 or noise.shape != z.shape:
        raise ValueError(f"Latents and noise must both be [B, D], got {tuple(z.shape)} and "
                         f"{tuple(noise.shape)}")


def _randn(shape: Sequence[int], generator: torch.Generator | None,
           device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
    # Standard normals drawn on the generator's device (the sampling device without one),
    # then moved: a CPU generator gives the same numbers on every device.
    draw_device = generator.device if generator is not None else device
    return torch.randn(*shape, generator=generator, device=draw_device).to(device=device,
                                                                           dtype=dtype)
