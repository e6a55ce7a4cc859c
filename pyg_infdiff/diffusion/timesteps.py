r"""Samplers of training time steps, with importance weights (after improved-diffusion's
``resample.py``)."""
from __future__ import annotations

import torch
from torch import Tensor


def _check_num_steps(num_steps: int) -> int:
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"'num_steps' must be a positive integer, got {num_steps}")
    return int(num_steps)


class TimestepSampler:
    r"""Base class: draws one training time step per graph from a distribution :math:`p_t`
    and returns the importance weights :math:`w_t = 1 / (T p_t)` that keep the loss an unbiased
    estimate of the uniform-in-:math:`t` objective.

    Args:
        num_steps (int): The number of training steps :math:`T`.
    """

    def __init__(self, num_steps: int) -> None:
        self.num_steps = _check_num_steps(num_steps)

    def weights(self) -> Tensor:
        r"""The unnormalised sampling weights over the steps, float64 :math:`(T,)`."""
        raise NotImplementedError

    def sample(
        self,
        num_graphs: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""Draws time steps and their importance weights.

        Args:
            num_graphs (int): How many steps to draw (one per graph).
            generator (torch.Generator, optional): Source of randomness; the draw happens on
                its device. (default: :obj:`None`)
            device (torch.device, optional): Where the outputs go. (default: :obj:`None`)

        Returns:
            ``(t, weights)``: long :math:`(B,)` and float32 :math:`(B,)`.
        """
        if num_graphs < 0:
            raise ValueError(f"'num_graphs' must be non-negative, got {num_graphs}")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        p = self.weights().to(draw_device)
        p = p / p.sum()
        t = torch.multinomial(p, num_graphs, replacement=True, generator=generator)
        weights = 1.0 / (self.num_steps * p[t])
        return t.to(device), weights.to(device=device, dtype=torch.float32)

    def update(self, t: Tensor, losses: Tensor) -> None:
        r"""Records the losses observed at steps :obj:`t` (a no-op unless loss-aware)."""

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_steps={self.num_steps})"


class UniformTimestepSampler(TimestepSampler):
    r"""Draws every step with probability :math:`1 / T` (all weights are 1).

    Args:
        num_steps (int): The number of training steps :math:`T`.
    """

    def weights(self) -> Tensor:
        return torch.ones(self.num_steps, dtype=torch.float64)

    def sample(
        self,
        num_graphs: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        if num_graphs < 0:
            raise ValueError(f"'num_graphs' must be non-negative, got {num_graphs}")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.num_steps, (num_graphs,), generator=generator,
                          device=draw_device)
        return t.to(device), torch.ones(num_graphs, device=device)


class LossAwareTimestepSampler(TimestepSampler):
    r"""Importance sampling of time steps by the second moment of their recent losses
    (``LossSecondMomentResampler`` of Nichol & Dhariwal, `"Improved Denoising Diffusion
    Probabilistic Models" <https://arxiv.org/abs/2102.09672>`_).

    .. math::
        p_t \propto (1 - \rho)\, \frac{\sqrt{\mathbb{E}[L_t^2]}}
        {\sum_s \sqrt{\mathbb{E}[L_s^2]}} + \frac{\rho}{T}

    with the expectation over the last :obj:`history_per_term` losses seen at step :math:`t`.
    Until every step has a full history the sampling is uniform.

    Args:
        num_steps (int): The number of training steps :math:`T`.
        history_per_term (int, optional): Losses remembered per step. (default: :obj:`10`)
        uniform_prob (float, optional): The uniform mixing weight :math:`\rho`.
            (default: :obj:`0.001`)
    """

    def __init__(self, num_steps: int, history_per_term: int = 10,
                 uniform_prob: float = 0.001) -> None:
        super().__init__(num_steps)
        if history_per_term < 1:
            raise ValueError(f"'history_per_term' must be positive, got {history_per_term}")
        if not 0 <= uniform_prob <= 1:
            raise ValueError(f"'uniform_prob' must lie in [0, 1], got {uniform_prob}")
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(self.num_steps, self.history_per_term,
                                        dtype=torch.float64)
        self.loss_counts = torch.zeros(self.num_steps, dtype=torch.long)

    def warmed_up(self) -> bool:
        r"""Whether every step has a full loss history."""
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self) -> Tensor:
        if not self.warmed_up():
            return torch.ones(self.num_steps, dtype=torch.float64)
        weights = self.loss_history.pow(2).mean(dim=-1).sqrt()
        weights = weights / weights.sum()
        return weights * (1 - self.uniform_prob) + self.uniform_prob / self.num_steps

    def update(self, t: Tensor, losses: Tensor) -> None:
        r"""Appends the per-graph :obj:`losses` :math:`(B,)` to the histories of their steps
        :obj:`t` :math:`(B,)`, dropping the oldest entries of full histories."""
        if t.shape != losses.shape or t.dim() != 1:
            raise ValueError(f"'t' and 'losses' must be 1-D of equal length, got "
                             f"{tuple(t.shape)} and {tuple(losses.shape)}")
        values = losses.detach().double().cpu().tolist()
        for step, loss in zip(t.tolist(), values, strict=True):
            if not 0 <= step < self.num_steps:
                raise ValueError(f"Time step {step} outside [0, {self.num_steps - 1}]")
            count = int(self.loss_counts[step])
            if count == self.history_per_term:
                self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, count] = loss
                self.loss_counts[step] = count + 1

    def state_dict(self) -> dict[str, Tensor]:
        r"""The loss histories, for checkpoints."""
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        r"""Restores the loss histories saved by :meth:`state_dict`."""
        history, counts = state["loss_history"], state["loss_counts"]
        if history.shape != self.loss_history.shape or counts.shape != self.loss_counts.shape:
            raise ValueError(f"State of shape {tuple(history.shape)} does not fit "
                             f"{tuple(self.loss_history.shape)}")
        self.loss_history = history.to(torch.float64).clone()
        self.loss_counts = counts.long().clone()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_steps={self.num_steps}, "
                f"history_per_term={self.history_per_term}, uniform_prob={self.uniform_prob})")
