r"""The learning-rate schedule of :class:`~pyg_infdiff.training.Trainer`: a linear warm-up,
then constant, or a cosine or linear decay that ends at the last optimiser step."""
from __future__ import annotations

import math

__all__ = ["LR_SCHEDULES", "lr_factor"]

#: The names :func:`lr_factor` (and ``TrainerConfig(lr_schedule=...)``) accept.
LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(update: int, warmup_steps: int, max_steps: int, schedule: str = "constant",
              min_ratio: float = 0.0) -> float:
    r"""The factor of the peak learning rate at optimiser update :obj:`update`
    (:math:`s = 1, 2, \dots`).

    With warm-up length :math:`W` and :math:`T` steps in all, the factor is
    :math:`\min(1, s / W) \cdot d(p)` with the decay progress
    :math:`p = \mathrm{clamp}((s - W) / (T - W), 0, 1)` and

    * ``"constant"``: :math:`d(p) = 1`;
    * ``"cosine"``: :math:`d(p) = r + (1 - r)\,\tfrac12 (1 + \cos \pi p)`;
    * ``"linear"``: :math:`d(p) = 1 - (1 - r)\, p`,

    where :math:`r` is :obj:`min_ratio`. A decaying schedule reaches :math:`r` at update
    :math:`T` (after the warm-up, when :math:`T \leq W`). :math:`T` is read at every call, so
    a training loop whose length is only known while it runs (a time budget, for instance)
    can move it and the decay follows.

    Args:
        update (int): The optimiser update :math:`s \geq 1`.
        warmup_steps (int): :math:`W`; :obj:`0` disables warm-up.
        max_steps (int): :math:`T`, the last update.
        schedule (str, optional): One of :data:`LR_SCHEDULES`. (default: :obj:`"constant"`)
        min_ratio (float, optional): :math:`r \in [0, 1]`, the factor at the end of a decay.
            (default: :obj:`0.0`)

    Example:
        >>> from pyg_infdiff.training import lr_factor
        >>> lr_factor(50, warmup_steps=100, max_steps=1000)
        0.5
        >>> lr_factor(1000, 100, 1000, "cosine", min_ratio=0.1)
        0.1
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"'schedule' must be one of {LR_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"'min_ratio' must lie in [0, 1], got {min_ratio}")
    if update < 1 or warmup_steps < 0 or max_steps < 0:
        raise ValueError(f"need update >= 1, warmup_steps >= 0 and max_steps >= 0, got "
                         f"{update}, {warmup_steps} and {max_steps}")
    warm = min(1.0, update / max(warmup_steps, 1))
    if schedule == "constant":
        return warm
    progress = min(1.0, max(0.0, (update - warmup_steps) / max(max_steps - warmup_steps, 1)))
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return warm * (min_ratio + (1.0 - min_ratio) * decay)
