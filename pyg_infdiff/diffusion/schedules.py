r"""Noise schedules :math:`\beta_1, \dots, \beta_T` of the discrete-time forward process."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    r"""A discrete variance schedule and the quantities derived from it, as float64 buffers.

    .. math::
        \alpha_t = 1 - \beta_t, \qquad
        \bar\alpha_t = \prod_{s=0}^{t} \alpha_s, \qquad t = 0, \dots, T - 1

    so that :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon`
    (time steps are 0-based, as in :obj:`diffusers` and :obj:`improved-diffusion`).

    Args:
        betas (torch.Tensor): The variances :math:`\beta_t \in (0, 1]`, shape :math:`(T,)`.
            Stored as float64.
        name (str, optional): A label used by :meth:`__repr__`. (default: :obj:`"custom"`)
    """

    betas: Tensor
    name: str = "custom"
    alphas: Tensor = field(init=False, repr=False)
    alphas_cumprod: Tensor = field(init=False, repr=False)
    _alphas_cumprod: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas).to(torch.float64)
        if betas.dim() != 1 or betas.numel() == 0:
            raise ValueError(f"'betas' must be a non-empty 1-D tensor, got {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(
                f"'betas' must lie in (0, 1], got min={betas.min().item():.3g} "
                f"max={betas.max().item():.3g}"
            )
        alphas = 1.0 - betas
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(alphas, dim=0))
        # Python floats for the samplers, read once here rather than at every step.
        object.__setattr__(self, "_alphas_cumprod", tuple(self.alphas_cumprod.tolist()))

    @property
    def num_steps(self) -> int:
        r"""The number of training steps :math:`T`."""
        return self.betas.numel()

    @property
    def signal_scale(self) -> Tensor:
        r""":math:`\sqrt{\bar\alpha_t}`, shape :math:`(T,)`."""
        return self.alphas_cumprod.sqrt()

    @property
    def noise_scale(self) -> Tensor:
        r""":math:`\sqrt{1 - \bar\alpha_t}`, shape :math:`(T,)`."""
        return (1.0 - self.alphas_cumprod).sqrt()

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def alpha_cumprod(self, t: int) -> float:
        r"""Returns :math:`\bar\alpha_t` as a Python float, with :math:`\bar\alpha_{-1} = 1`
        (the clean data), the convention samplers use for their last step."""
        t = int(t)
        if t < -1 or t >= self.num_steps:
            raise ValueError(f"Time step must lie in [-1, {self.num_steps - 1}], got {t}")
        return 1.0 if t < 0 else self._alphas_cumprod[t]

    def to(self, device: torch.device | str | None) -> NoiseSchedule:
        r"""Returns a copy with its buffers on :obj:`device` (still float64)."""
        return NoiseSchedule(self.betas.to(device), self.name)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(name={self.name!r}, num_steps={self.num_steps})"


def _check_num_steps(num_steps: int) -> int:
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"'num_steps' must be a positive integer, got {num_steps}")
    return int(num_steps)


def cosine_schedule(
    num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999
) -> NoiseSchedule:
    r"""The cosine schedule of Nichol & Dhariwal, `"Improved Denoising Diffusion Probabilistic
    Models" <https://arxiv.org/abs/2102.09672>`_ (ICML 2021).

    .. math::
        f(\tau) = \cos^2\!\left(\frac{\tau + s}{1 + s} \cdot \frac{\pi}{2}\right), \qquad
        \beta_t = \min\left(1 - \frac{f((t + 1) / T)}{f(t / T)},\ \beta_{\max}\right)

    so that :math:`\bar\alpha_t = f((t + 1) / T) / f(0)` wherever no clipping happens (clipping
    only touches the last steps).

    Args:
        num_steps (int, optional): The number of steps :math:`T`. (default: :obj:`1000`)
        s (float, optional): The offset that keeps :math:`\beta_0` away from zero.
            (default: :obj:`0.008`)
        max_beta (float, optional): The clipping value :math:`\beta_{\max}`.
            (default: :obj:`0.999`)
    """
    num_steps = _check_num_steps(num_steps)
    if s <= 0:
        raise ValueError(f"The cosine offset 's' must be positive, got {s}")
    if not 0 < max_beta <= 1:
        raise ValueError(f"'max_beta' must lie in (0, 1], got {max_beta}")
    tau = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return NoiseSchedule(betas, name="cosine")


def linear_schedule(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> NoiseSchedule:
    r"""The linear schedule of Ho et al., `"Denoising Diffusion Probabilistic Models"
    <https://arxiv.org/abs/2006.11239>`_ (NeurIPS 2020).

    .. math::
        \beta_t = \beta_{\mathrm{start}} + \frac{t}{T - 1}
        (\beta_{\mathrm{end}} - \beta_{\mathrm{start}})

    The end points are used as given (no rescaling with :math:`T`, like :obj:`diffusers`).

    Args:
        num_steps (int, optional): The number of steps :math:`T`. (default: :obj:`1000`)
        beta_start (float, optional): :math:`\beta_0`. (default: :obj:`1e-4`)
        beta_end (float, optional): :math:`\beta_{T-1}`. (default: :obj:`0.02`)
    """
    num_steps = _check_num_steps(num_steps)
    if not 0 < beta_start <= beta_end <= 1:
        raise ValueError(
            f"Need 0 < beta_start <= beta_end <= 1, got beta_start={beta_start}, "
            f"beta_end={beta_end}"
        )
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return NoiseSchedule(betas, name="linear")


def constant_schedule(
    num_steps: int = 1000, beta: float = 0.008, reference_steps: int | None = 1000
) -> NoiseSchedule:
    r"""A constant schedule, the schedule :obj:`"const0.008"` of the latent diffusion model of
    ∞-Diff (Bond-Taylor & Willcocks, `"Infinite Resolution Diffusion with Subsampled Mollified
    States" <https://arxiv.org/abs/2303.18242>`_, ICLR 2024), after the latent DPM of
    `"Diffusion Autoencoders" <https://arxiv.org/abs/2111.15640>`_ (Preechakul et al.).

    .. math::
        \beta_t = \beta\, \frac{T_{\mathrm{ref}}}{T}, \qquad
        \bar\alpha_t = \left(1 - \beta_t\right)^{t + 1}, \qquad t = 0, \dots, T - 1

    :obj:`beta` is the value at :math:`T_{\mathrm{ref}}` steps, and other step counts rescale
    it as the official :obj:`get_named_beta_schedule("const0.008", T)` does
    (:math:`0.008 \cdot 1000 / T`), so that :math:`\bar\alpha_{T-1} \approx e^{-8}` whatever
    :math:`T`. :obj:`reference_steps=None` uses :obj:`beta` as given.

    Args:
        num_steps (int, optional): The number of steps :math:`T`. (default: :obj:`1000`)
        beta (float, optional): :math:`\beta` at :math:`T_{\mathrm{ref}}` steps.
            (default: :obj:`0.008`)
        reference_steps (int, optional): :math:`T_{\mathrm{ref}}`; :obj:`None` disables the
            rescaling. (default: :obj:`1000`)
    """
    num_steps = _check_num_steps(num_steps)
    if reference_steps is not None:
        reference_steps = _check_num_steps(reference_steps)
    value = beta * (reference_steps / num_steps if reference_steps is not None else 1.0)
    if not 0 < value <= 1:
        raise ValueError(f"The constant beta must lie in (0, 1], got {value:.6g} (beta={beta} at "
                         f"{reference_steps} steps, rescaled to {num_steps} steps)")
    return NoiseSchedule(torch.full((num_steps,), value, dtype=torch.float64), name="constant")
