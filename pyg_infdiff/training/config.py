r"""The hyper-parameters and results of :class:`~pyg_infdiff.training.Trainer`."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pyg_infdiff.training.distributed import is_distributed
from pyg_infdiff.training.lr import LR_SCHEDULES

__all__ = ["NonFiniteLossError", "TrainResult", "TrainerConfig"]


@dataclass
class TrainerConfig:
    r"""Hyper-parameters of the training loop. Steps count optimiser updates (skipped
    non-finite steps do not count).

    Args:
        lr (float, optional): Peak AdamW learning rate. (default: :obj:`2e-4`)
        weight_decay (float, optional): AdamW decoupled weight decay. (default: :obj:`0.0`)
        betas (tuple[float, float], optional): AdamW betas. (default: :obj:`(0.9, 0.999)`)
        eps (float, optional): AdamW epsilon. (default: :obj:`1e-8`)
        warmup_steps (int, optional): Linear warm-up length; the learning rate at update
            :math:`s = 1, 2, \dots` is :math:`\mathrm{lr} \cdot \min(1, s / W)`, then as
            :obj:`lr_schedule` says. :obj:`0` disables warm-up. (default: :obj:`1000`)
        max_steps (int, optional): Optimiser steps to train for. (default: :obj:`100000`)
        lr_schedule (str, optional): After the warm-up, :obj:`"constant"`, or a
            :obj:`"cosine"` or :obj:`"linear"` decay to :obj:`min_lr_ratio` times the peak at
            :obj:`max_steps` (:func:`~pyg_infdiff.training.lr_factor`). The decay reads
            :obj:`max_steps` at every update, so a callback that moves it (a time budget)
            moves the decay's end. (default: :obj:`"constant"`)
        min_lr_ratio (float, optional): The learning rate at the end of a decay, as a fraction
            of the peak. (default: :obj:`0.0`)
        grad_clip (float, optional): Maximum global gradient 2-norm; :obj:`None` disables
            clipping (the norm is still checked for NaN/Inf). (default: :obj:`1.0`)
        ema_decay (float, optional): EMA decay; :obj:`None` disables the EMA.
            (default: :obj:`0.999`)
        ema_start (int, optional): Up to this step the EMA is a plain copy of the weights.
            (default: :obj:`0`)
        ema_warmup (bool, optional): Whether the EMA decay warms up as
            :math:`\min(\beta, (1 + n) / (10 + n))` after :math:`n` updates
            (:func:`~pyg_infdiff.training.ema_decay`); without it the average of a short run
            stays close to the initial weights. (default: :obj:`True`)
        bf16 (bool, optional): Compute the loss under :func:`torch.autocast` with bfloat16 (CPU
            or GPU); weights, gradients and optimiser state stay float32. (default: :obj:`False`)
        log_every (int, optional): Steps between log records. (default: :obj:`50`)
        sample_every (int, optional): Steps between sample grids (and once at the end);
            :obj:`None` or :obj:`0` disables. (default: :obj:`5000`)
        checkpoint_every (int, optional): Steps between checkpoints (one is always written at
            the end); :obj:`None` or :obj:`0` disables periodic ones. (default: :obj:`5000`)
        keep_last (int, optional): Checkpoints to keep; :obj:`None` keeps all.
            (default: :obj:`3`)
        out_dir (str, optional): Run folder for logs, ``checkpoints/`` and ``samples/``.
            (default: :obj:`"runs/infdiff"`)
        seed (int, optional): Seeds the global RNG (``seed + rank``) on a fresh start, the
            trainer's generator and the per-epoch data order. (default: :obj:`0`)
        device (str, optional): Training device; :obj:`None` picks CUDA if available. Under
            NCCL each process uses ``cuda:LOCAL_RANK``. (default: :obj:`None`)
        max_bad_steps (int, optional): Consecutive non-finite steps after which training
            stops. (default: :obj:`20`)
        progress (bool, optional): Show a tqdm bar; :obj:`None` shows it when stderr is a
            terminal. (default: :obj:`None`)
        plot_loss (bool, optional): Redraw ``loss.png`` at every checkpoint and at the end.
            (default: :obj:`True`)
        verbose (bool, optional): Print start/resume/interrupt messages on rank 0.
            (default: :obj:`True`)
        find_unused_parameters (bool, optional): Passed to DDP. (default: :obj:`False`)
        reseed_data (bool, optional): Reseed the data loader's :obj:`generator` with a
            function of ``(seed, epoch)`` at every epoch, so the data order replays on resume.
            (default: :obj:`True`)
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 1000
    max_steps: int = 100_000
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    ema_warmup: bool = True
    ema_start: int = 0
    bf16: bool = False
    log_every: int = 50
    sample_every: int | None = 5000
    checkpoint_every: int | None = 5000
    keep_last: int | None = 3
    out_dir: str = "runs/infdiff"
    seed: int = 0
    device: str | None = None
    max_bad_steps: int = 20
    progress: bool | None = None
    plot_loss: bool = True
    verbose: bool = True
    find_unused_parameters: bool = False
    reseed_data: bool = True

    def __post_init__(self) -> None:
        self.out_dir = str(Path(self.out_dir))
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        checks = [
            (self.lr > 0, "lr must be positive", self.lr),
            (self.weight_decay >= 0, "weight_decay must be >= 0", self.weight_decay),
            (all(0 <= b < 1 for b in self.betas), "betas must lie in [0, 1)", self.betas),
            (self.eps > 0, "eps must be positive", self.eps),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0", self.warmup_steps),
            (self.max_steps >= 0, "max_steps must be >= 0", self.max_steps),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}",
             self.lr_schedule),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must lie in [0, 1]", self.min_lr_ratio),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or "
             "None", self.grad_clip),
            (self.ema_decay is None or 0 <= self.ema_decay <= 1, "ema_decay must lie in "
             "[0, 1] or be None", self.ema_decay),
            (self.ema_start >= 0, "ema_start must be >= 0", self.ema_start),
            (self.log_every >= 1, "log_every must be >= 1", self.log_every),
            (self.sample_every is None or self.sample_every >= 0, "sample_every must be >= 0 "
             "or None", self.sample_every),
            (self.checkpoint_every is None or self.checkpoint_every >= 0, "checkpoint_every "
             "must be >= 0 or None", self.checkpoint_every),
            (self.keep_last is None or self.keep_last >= 1, "keep_last must be >= 1 or None",
             self.keep_last),
            (self.max_bad_steps >= 1, "max_bad_steps must be >= 1", self.max_bad_steps),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}, got {value!r}")

    def resolve_device(self) -> torch.device:
        r"""The device to train on (see :obj:`device`)."""
        if is_distributed() and torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def show_progress(self) -> bool:
        r"""Whether to draw the progress bar (see :obj:`progress`)."""
        return sys.stderr.isatty() if self.progress is None else self.progress

    def to_dict(self) -> dict[str, Any]:
        r"""The configuration as a plain dict (storable in a checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        r"""Rebuilds a configuration from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown TrainerConfig fields: {unknown}")
        return cls(**values)


class NonFiniteLossError(RuntimeError):
    r"""Raised when too many consecutive steps have a non-finite loss or gradient, or when
    the weights themselves become non-finite (nothing is then written to disk)."""


@dataclass(frozen=True)
class TrainResult:
    r"""What :meth:`Trainer.fit` returns.

    Args:
        step (int): Optimiser steps taken in total.
        epoch (int): The data epoch reached.
        loss (float, optional): Mean loss of the last logging window.
        bad_steps (int): Steps skipped for a non-finite loss or gradient, in total.
        checkpoint (pathlib.Path, optional): The final checkpoint (rank 0 only).
    """

    step: int
    epoch: int
    loss: float | None
    bad_steps: int
    checkpoint: Path | None
