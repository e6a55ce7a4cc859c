r"""Reverse-process samplers (DDPM, DDIM) in the style of :obj:`diffusers` schedulers.

A sampler knows the schedule and the parametrisation, never the model or the nodes: the caller
runs the model and, for stochastic steps, passes in fresh noise (a mollified field read at the
nodes), either drawn already or as a function ``noise(generator)`` that :meth:`step` calls with
its :obj:`generator` only when the step is stochastic, e.g.
``lambda g: diffusion.draw_noise(num_graphs, channels, pos, batch, generator=g)``. A white
:func:`torch.randn` draw would be wrong here: the noise of ∞-Diff is a mollified field, and only
the caller knows the nodes it is read at. All graphs of a batch share the step :math:`t`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .process import Parametrization, canonical_parametrization, predict_noise, predict_x0
from .schedules import NoiseSchedule

NoiseSource = Tensor | Callable[[torch.Generator | None], Tensor]
r"""Fresh noise for a stochastic step, a tensor :math:`(N, C)` of mollified noise at the nodes,
or a function of a :class:`torch.Generator` (or :obj:`None`) that draws one."""


@dataclass
class SamplerOutput:
    r"""The outcome of one reverse step.

    Args:
        prev_sample (torch.Tensor): :math:`x_{t'}` at the previous (less noisy) step,
            :math:`(N, C)`.
        pred_original_sample (torch.Tensor): The prediction :math:`\hat x_0` used for it,
            :math:`(N, C)`.
    """

    prev_sample: Tensor
    pred_original_sample: Tensor


class _Sampler:
    def __init__(self, schedule: NoiseSchedule, parametrization: Parametrization,
                 clip_x0: float | None) -> None:
        if clip_x0 is not None and not clip_x0 > 0:
            raise ValueError(f"'clip_x0' must be positive or None, got {clip_x0}")
        self.schedule = schedule
        self.parametrization = canonical_parametrization(parametrization)
        self.clip_x0 = None if clip_x0 is None else float(clip_x0)
        #: The number of steps a sampling run takes (:math:`T` until :meth:`set_timesteps`).
        self.num_inference_steps = schedule.num_steps
        #: The steps of a sampling run, descending (all :math:`T` until :meth:`set_timesteps`).
        self.timesteps = torch.arange(schedule.num_steps - 1, -1, -1)
        self._prev = self._previous_map()

    @property
    def config(self) -> dict[str, Any]:
        r"""The sampler's settings besides the schedule, as in :obj:`diffusers` schedulers:
        ``type(sampler).from_config(schedule, sampler.config)`` rebuilds it (without the
        :meth:`set_timesteps` state)."""
        return {"parametrization": self.parametrization, "clip_x0": self.clip_x0,
                **self._extra_config()}

    @classmethod
    def from_config(cls, schedule: NoiseSchedule, config: Mapping[str, Any]) -> _Sampler:
        r"""A sampler of this class with :obj:`schedule` and the settings of :obj:`config`
        (a :attr:`config` dict; unknown keys are an error).

        Args:
            schedule (NoiseSchedule): The training schedule.
            config (Mapping[str, Any]): The settings.
        """
        return cls(schedule, **config)

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def set_timesteps(self, num_inference_steps: int) -> None:
        r"""Chooses :obj:`num_inference_steps` evenly spaced steps, descending, the first at
        :math:`T - 1` ("trailing" spacing of :obj:`diffusers`):
        :math:`t_i = \mathrm{round}(T - i T / n) - 1`, :math:`i = 0, \dots, n - 1`.

        Args:
            num_inference_steps (int): :math:`n`, between 1 and :math:`T`.
        """
        num_steps = self.schedule.num_steps
        if int(num_inference_steps) != num_inference_steps or \
                not 1 <= num_inference_steps <= num_steps:
            raise ValueError(f"'num_inference_steps' must be an integer in [1, {num_steps}] (the "
                             f"training steps), got {num_inference_steps}")
        n = int(num_inference_steps)
        steps = [round(num_steps - i * num_steps / n) - 1 for i in range(n)]
        self.num_inference_steps = n
        self.timesteps = torch.tensor(steps, dtype=torch.long)
        self._prev = self._previous_map()

    def _previous_map(self) -> dict[int, int]:
        steps = self.timesteps.tolist()
        return dict(zip(steps, steps[1:] + [-1], strict=True))

    def previous_timestep(self, t: int) -> int:
        r"""The step after :obj:`t` in :attr:`timesteps`, or :math:`-1` (clean data) after the
        last one."""
        t = int(t)
        if t not in self._prev:
            raise ValueError(f"Time step {t} is not one of the sampler's timesteps "
                             f"(call set_timesteps first?)")
        return self._prev[t]

    def _alpha_bars(self, t: int) -> tuple[float, float]:
        # (alpha_bar at t, alpha_bar at the previous inference step, 1 after the last one)
        prev = self.previous_timestep(t)
        return self.schedule.alpha_cumprod(t), self.schedule.alpha_cumprod(prev)

    def _step_variance(self, t: int) -> float:
        raise NotImplementedError

    def needs_noise(self, t: int) -> bool:
        r"""Whether :meth:`step` at :obj:`t` adds noise (and so needs the :obj:`noise`
        argument)."""
        return self._step_variance(t) > 0

    def _predict(self, model_output: Tensor, t: int, sample: Tensor) -> tuple[Tensor, Tensor]:
        if model_output.shape != sample.shape:
            raise ValueError(f"'model_output' {tuple(model_output.shape)} and 'sample' "
                             f"{tuple(sample.shape)} must have the same shape")
        alpha_bar = self.schedule.alpha_cumprod(t)
        a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        x0 = predict_x0(model_output, sample, a, s, self.parametrization)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = (sample - a * x0) / s
        else:
            eps = predict_noise(model_output, sample, a, s, self.parametrization)
        return x0, eps

    def _add_noise(self, mean: Tensor, variance: float, noise: NoiseSource | None, t: int,
                   generator: torch.Generator | None) -> Tensor:
        if generator is not None and not callable(noise):
            raise ValueError("'generator' is passed to a noise function; with 'noise' given as a "
                             "tensor (or None) it would be unused")
        if variance <= 0:
            return mean
        if noise is None:
            raise ValueError(f"The step at t={t} is stochastic: pass 'noise' (a fresh mollified "
                             f"noise field read at the nodes, or a function that draws one)")
        if callable(noise):
            noise = noise(generator)
        if noise.shape != mean.shape:
            raise ValueError(f"'noise' must have shape {tuple(mean.shape)}, got "
                             f"{tuple(noise.shape)}")
        return mean + math.sqrt(variance) * noise

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_steps={self.schedule.num_steps}, "
                f"num_inference_steps={self.num_inference_steps}, "
                f"parametrization={self.parametrization!r}{self._extra_repr()})")

    def _extra_repr(self) -> str:
        return f", clip_x0={self.clip_x0}"


class DDPMSampler(_Sampler):
    r"""Ancestral sampling of Ho et al., `"Denoising Diffusion Probabilistic Models"
    <https://arxiv.org/abs/2006.11239>`_, over any descending subset of the training steps.

    From step :math:`t` to the previous inference step :math:`t'` (with
    :math:`\bar\alpha_{-1} = 1` and :math:`\alpha = \bar\alpha_t / \bar\alpha_{t'}`):

    .. math::
        x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,(1 - \alpha)}{1 - \bar\alpha_t}\, \hat x_0
        + \frac{\sqrt{\alpha}\,(1 - \bar\alpha_{t'})}{1 - \bar\alpha_t}\, x_t
        + \sqrt{\frac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}\,(1 - \alpha)}\; \xi

    with :math:`\xi` the passed-in mollified noise (the "fixed small" variance).

    Args:
        schedule (NoiseSchedule): The training schedule.
        parametrization (str, optional): What the model predicts.
            (default: :obj:`"mollified_eps"`)
        clip_x0 (float, optional): Clamp :math:`\hat x_0` to
            :math:`[-c, c]` (1.0 for images in :math:`[-1, 1]`); :obj:`None` disables.
            (default: :obj:`None`)
    """

    def __init__(self, schedule: NoiseSchedule, parametrization: Parametrization = "mollified_eps",
                 clip_x0: float | None = None) -> None:
        super().__init__(schedule, parametrization, clip_x0)

    def _step_variance(self, t: int) -> float:
        alpha_bar, alpha_bar_prev = self._alpha_bars(t)
        return (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)

    def step(self, model_output: Tensor, t: int, sample: Tensor, *,
             noise: NoiseSource | None = None,
             generator: torch.Generator | None = None) -> SamplerOutput:
        r"""One ancestral step from :obj:`t` to :meth:`previous_timestep` of :obj:`t`.

        Args:
            model_output (torch.Tensor): The model output at :math:`(x_t, t)`, :math:`(N, C)`.
            t (int): The current step (one of :attr:`timesteps`).
            sample (torch.Tensor): :math:`x_t`, :math:`(N, C)`.
            noise (torch.Tensor or callable, optional): Fresh mollified noise at the nodes,
                :math:`(N, C)`, or a function ``noise(generator)`` that draws it (called only
                when the step is stochastic); required unless the step is the last one.
                (default: :obj:`None`)
            generator (torch.Generator, optional): Passed to :obj:`noise` when it is a
                function. (default: :obj:`None`)
        """
        t = int(t)
        alpha_bar, alpha_bar_prev = self._alpha_bars(t)
        alpha = alpha_bar / alpha_bar_prev
        x0, _ = self._predict(model_output, t, sample)
        mean = (math.sqrt(alpha_bar_prev) * (1 - alpha) / (1 - alpha_bar)) * x0 \
            + (math.sqrt(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)) * sample
        prev_sample = self._add_noise(mean, self._step_variance(t), noise, t, generator)
        return SamplerOutput(prev_sample, x0)


class DDIMSampler(_Sampler):
    r"""Denoising diffusion implicit models of Song et al., `"Denoising Diffusion Implicit
    Models" <https://arxiv.org/abs/2010.02502>`_ (ICLR 2021).

    From step :math:`t` to the previous inference step :math:`t'` (with
    :math:`\bar\alpha_{-1} = 1`):

    .. math::
        \sigma = \eta \sqrt{\frac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}
        \left(1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}\right)}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\, \hat x_0
        + \sqrt{1 - \bar\alpha_{t'} - \sigma^2}\, \hat\epsilon + \sigma\, \xi

    With :math:`\eta = 0` the map is deterministic, so one initial noise field gives the same
    function at every resolution; :math:`\eta = 1` matches :class:`DDPMSampler`.

    Args:
        schedule (NoiseSchedule): The training schedule.
        parametrization (str, optional): What the model predicts.
            (default: :obj:`"mollified_eps"`)
        eta (float, optional): The stochasticity :math:`\eta \ge 0`. (default: :obj:`0.0`)
        clip_x0 (float, optional): Clamp :math:`\hat x_0` to :math:`[-c, c]` (and re-derive
            :math:`\hat\epsilon`); :obj:`None` disables. (default: :obj:`None`)
    """

    def __init__(self, schedule: NoiseSchedule, parametrization: Parametrization = "mollified_eps",
                 eta: float = 0.0, clip_x0: float | None = None) -> None:
        if not eta >= 0:
            raise ValueError(f"'eta' must be non-negative, got {eta}")
        self.eta = float(eta)
        super().__init__(schedule, parametrization, clip_x0)

    def _step_variance(self, t: int) -> float:
        alpha_bar, alpha_bar_prev = self._alpha_bars(t)
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        return self.eta**2 * variance

    def step(self, model_output: Tensor, t: int, sample: Tensor, *,
             noise: NoiseSource | None = None,
             generator: torch.Generator | None = None) -> SamplerOutput:
        r"""One DDIM step from :obj:`t` to :meth:`previous_timestep` of :obj:`t`.

        Args:
            model_output (torch.Tensor): The model output at :math:`(x_t, t)`, :math:`(N, C)`.
            t (int): The current step (one of :attr:`timesteps`).
            sample (torch.Tensor): :math:`x_t`, :math:`(N, C)`.
            noise (torch.Tensor or callable, optional): Fresh mollified noise at the nodes,
                :math:`(N, C)`, or a function ``noise(generator)`` that draws it (called only
                when :math:`\sigma > 0`); required when :math:`\sigma > 0`.
                (default: :obj:`None`)
            generator (torch.Generator, optional): Passed to :obj:`noise` when it is a
                function. (default: :obj:`None`)
        """
        t = int(t)
        _, alpha_bar_prev = self._alpha_bars(t)
        x0, eps = self._predict(model_output, t, sample)
        variance = self._step_variance(t)
        direction = math.sqrt(max(1 - alpha_bar_prev - variance, 0.0))
        mean = math.sqrt(alpha_bar_prev) * x0 + direction * eps
        return SamplerOutput(self._add_noise(mean, variance, noise, t, generator), x0)

    def _extra_config(self) -> dict[str, Any]:
        return {"eta": self.eta}

    def _extra_repr(self) -> str:
        return f", eta={self.eta}, clip_x0={self.clip_x0}"
