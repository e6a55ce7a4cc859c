r"""A generic training loop: AdamW with linear warm-up, gradient clipping, EMA, optional bf16
autocast, progress bar, JSON/CSV logs and a loss plot, periodic samples and atomic
checkpoints that resume exactly, NaN/Inf guards and distributed data parallel.
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from pyg_infdiff.training._trainer_state import TrainerStateMixin
from pyg_infdiff.training.checkpoint import (
    CheckpointManager,
    check_storable,
    restore_rng_state,
)
from pyg_infdiff.training.config import NonFiniteLossError, TrainerConfig, TrainResult
from pyg_infdiff.training.cursor import DataCursor, move_to_device
from pyg_infdiff.training.distributed import (
    all_reduce_sum,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
    wrap_ddp,
)
from pyg_infdiff.training.ema import create_ema, update_ema
from pyg_infdiff.training.logging import RunningMeans, TrainingLog
from pyg_infdiff.training.lr import lr_factor
from pyg_infdiff.training.signals import StopSignal

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "TrainerConfig"]

logger = logging.getLogger(__name__)

LossFn = Callable[..., Tensor]
SampleFn = Callable[[nn.Module, int, Path], Any]


class Trainer(TrainerStateMixin):
    r"""Trains :obj:`model` by minimising :obj:`loss_fn(model, batch)` over a stream of batches.

    One step: fetch a batch (cycling the data forever, calling ``set_epoch`` on the data and
    its sampler and reseeding the data loader's :obj:`generator` at each epoch), move it to the
    device, compute the loss (under bf16 autocast if asked), skip the step if the loss is not
    finite on any process, back-propagate, clip the gradient norm (skip if it is not finite),
    take an AdamW step with linear warm-up, update the EMA. Every :obj:`log_every` steps a
    record goes to the JSON/CSV log; every :obj:`checkpoint_every` steps a checkpoint is written
    and the loss plot redrawn; every :obj:`sample_every` steps :obj:`sample_fn` draws samples
    with the EMA model.

    **Resume** (``fit(resume=...)``) restores weights, EMA, optimiser, scheduler, step, the
    RNG states (global CPU/CUDA and the trainer's generators, per process) and the data
    position (epoch and batches consumed, replayed by re-iterating the epoch), so on CPU a
    resumed run reaches the same weights as an uninterrupted one. Exact replay needs a data
    order that depends only on the epoch: a :class:`~torch.utils.data.DataLoader` with a
    :obj:`generator`, a sampler or iterable with ``set_epoch``, or a fixed order; randomness in
    collation should come from the global RNG (or worker seeds) or from a generator passed in
    :obj:`generators`.

    **Interrupts**: the first Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a
    checkpoint and raises :class:`KeyboardInterrupt`; a second one aborts at once. An
    exception raised by the data or the loss (single process) rolls the step back and writes a
    checkpoint before propagating. After :obj:`max_bad_steps` consecutive non-finite steps
    training stops with :class:`NonFiniteLossError`, writing nothing, so the last good
    checkpoint stays the newest.

    Args:
        model (torch.nn.Module): The model; moved to the device, wrapped in DDP when
            :mod:`torch.distributed` is initialised.
        loss_fn (Callable): ``loss_fn(model, batch) -> Tensor`` (a scalar), e.g.
            ``functools.partial(diffusion.training_loss)``.
        config (TrainerConfig, optional): Hyper-parameters. (default: :obj:`TrainerConfig()`)
        train_data (Iterable, optional): The batches, used when :meth:`fit` gets none.
            (default: :obj:`None`)
        sample_fn (Callable, optional): ``sample_fn(model, step, out_dir)`` writes samples
            (e.g. a PNG grid) into ``out_dir``; it gets the EMA model in eval mode, runs under
            :func:`torch.no_grad` on rank 0 only and cannot disturb the training RNG.
            (default: :obj:`None`)
        model_config (dict, optional): Plain description of the model saved in checkpoints so
            that it can be rebuilt. (default: :obj:`None`)
        generators (Mapping[str, torch.Generator], optional): Further generators the data or
            the loss draw from, checkpointed and restored by name. (default: :obj:`None`)
        pass_generator (bool, optional): Call ``loss_fn(model, batch, generator=g)`` with the
            trainer's own generator :attr:`generator` (seeded with ``seed + rank`` on the
            training device, checkpointed). (default: :obj:`False`)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        config: TrainerConfig | None = None,
        *,
        train_data: Iterable[Any] | None = None,
        sample_fn: SampleFn | None = None,
        model_config: Mapping[str, Any] | None = None,
        generators: Mapping[str, torch.Generator] | None = None,
        pass_generator: bool = False,
    ) -> None:
        self.config = config if config is not None else TrainerConfig()
        cfg = self.config
        check_storable(model_config, "model_config")
        if generators is not None and "trainer" in generators:
            raise ValueError("The generator name 'trainer' is reserved for Trainer.generator")
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = is_main_process()
        self.device = cfg.resolve_device()
        self.model = model.to(self.device)
        self.ddp_model = wrap_ddp(self.model, self.device,
                                  find_unused_parameters=cfg.find_unused_parameters)
        self.loss_fn, self.sample_fn, self.train_data = loss_fn, sample_fn, train_data
        self.model_config = dict(model_config) if model_config is not None else None
        self.pass_generator = pass_generator
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed + self.rank)
        self.generators = {"trainer": self.generator, **(generators or {})}
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("The model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                           weight_decay=cfg.weight_decay)
        # LambdaLR calls this with the number of updates so far; it reads the config at every
        # call, so a callback that moves max_steps (a time budget) moves the decay's end.
        self.scheduler = LambdaLR(self.optimizer, lambda s: lr_factor(
            s + 1, cfg.warmup_steps, cfg.max_steps, cfg.lr_schedule, cfg.min_lr_ratio))
        self.ema = (create_ema(self.model, cfg.ema_decay, warmup=cfg.ema_warmup)
                    if cfg.ema_decay is not None else None)
        self.out_dir = Path(cfg.out_dir)
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", cfg.keep_last)
        self.log = TrainingLog(self.out_dir, enabled=self.is_main, plot=cfg.plot_loss)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self.step = self.bad_steps = self.consecutive_bad_steps = 0
        self.cursor = DataCursor(cfg.seed, reseed=cfg.reseed_data, protect=self.generators,
                                 device=self.device)
        self._phase = "idle"
        self._snapshot: dict[str, Any] | None = None
        self._stop_signal = StopSignal(lambda signum: self._say(
            f"{signal.Signals(signum).name}: stopping after this step (again: abort at once)"))
        self._stop = False
        self._last_saved: int | None = None
        self._last_sampled: int | None = None
        self._last_lr = cfg.lr

    # ------------------------------------------------------------------ public API
    def fit(
        self, data: Iterable[Any] | None = None, *, resume: str | Path | None = None
    ) -> TrainResult:
        r"""Trains until :obj:`config.max_steps` optimiser steps have been taken.

        Args:
            data (Iterable, optional): The batches (cycled over epochs); defaults to
                :obj:`train_data`. (default: :obj:`None`)
            resume (str or pathlib.Path, optional): A checkpoint to continue from,
                ``"latest"`` for the newest in ``out_dir/checkpoints`` (error if none), or
                ``"auto"`` for the newest if there is one. All processes read the same file,
                so the run folder must be shared. (default: :obj:`None`)

        Returns:
            A :class:`TrainResult`; the final checkpoint is written on the way out.

        Raises:
            KeyboardInterrupt: After SIGINT/SIGTERM, once a checkpoint is written.
            NonFiniteLossError: After :obj:`max_bad_steps` consecutive non-finite steps.
        """
        data = data if data is not None else self.train_data
        if data is None:
            raise ValueError("No training data: pass it to fit() or as Trainer(train_data=...)")
        self._stop = False
        resumed = self.resume(resume) if resume is not None else None
        if resumed is None and self.step == 0:
            torch.manual_seed(self.config.seed + self.rank)
        self._say(
            f"{self.num_parameters:,} parameters; step {self.step}/{self.config.max_steps}"
            f"{f', resumed from {resumed}' if resumed else ''}; device {self.device}, "
            f"{self.world_size} process(es)"
        )
        self.log.event(
            "start", step=self.step, num_parameters=self.num_parameters,
            resumed_from=str(resumed) if resumed else None, world_size=self.world_size,
            device=str(self.device), config=self.config.to_dict(), model_config=self.model_config,
        )
        window = RunningMeans()
        bar = tqdm(total=self.config.max_steps, initial=self.step, unit="step",
                   dynamic_ncols=True, disable=not (self.is_main and self.config.show_progress()))
        try:
            with self._stop_signal:
                while self.step < self.config.max_steps:
                    out = self._train_step(data)
                    if out is not None:
                        window.add(*out)
                        bar.update(1)
                        bar.set_postfix(loss=f"{out[0]:.4g}", refresh=False)
                        self._periodic(window)
                    if self._stop:
                        self._save_once()
                        self.log.event("interrupted", step=self.step)
                        raise KeyboardInterrupt(f"training stopped at step {self.step}")
                if len(window):
                    self._log(window)
                final = self._save_once()
                if self.config.sample_every and self._last_sampled != self.step:
                    self.sample()
        except BaseException as exc:
            self._on_exception(exc)
            raise
        finally:
            bar.close()
            self.log.plot()
        return TrainResult(self.step, self.cursor.epoch, window.last_loss, self.bad_steps, final)

    def sample(self) -> None:
        r"""Calls :obj:`sample_fn` with the EMA model (or the model without EMA) on rank 0,
        writing into ``out_dir/samples``; every process must call it."""
        self._last_sampled = self.step
        if self.sample_fn is not None and self.is_main:
            model = self.ema.module if self.ema is not None else self.model
            was_training = model.training
            model.eval()
            out = self.out_dir / "samples"
            out.mkdir(parents=True, exist_ok=True)
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                self.sample_fn(model, self.step, out)
            model.train(was_training)
        barrier()

    # ------------------------------------------------------------------ one step
    def _train_step(self, data: Iterable[Any]) -> tuple[float, float] | None:
        self._snapshot = self._capture()
        self._phase = "compute"
        batch = move_to_device(self.cursor.next(data), self.device)
        self.ddp_model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            if self.pass_generator:
                loss = self.loss_fn(self.ddp_model, batch, generator=self.generator)
            else:
                loss = self.loss_fn(self.ddp_model, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}")
        flag = float(self._stop_signal.received is not None)
        stats = torch.stack([loss.detach().float().reshape(()),
                             torch.tensor(flag, device=loss.device)])
        loss_sum, stop = all_reduce_sum(stats).tolist()
        self._stop = self._stop or stop > 0
        loss_value = loss_sum / self.world_size
        if not math.isfinite(loss_value):
            return self._bad_step("loss", loss_value)
        loss.backward()
        # With grad_clip=None the norm is still computed (max_norm=inf clips nothing).
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(grad_norm):
            return self._bad_step("gradient", grad_norm)
        self._phase = "update"
        self._last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.consecutive_bad_steps = 0
        if self.ema is not None:
            update_ema(self.ema, self.model, self.step, start=self.config.ema_start)
        self._phase = "idle"
        return loss_value, grad_norm

    def _bad_step(self, what: str, value: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._phase = "idle"
        self.bad_steps += 1
        self.consecutive_bad_steps += 1
        self.log.event("bad_step", step=self.step, reason=f"non-finite {what}", value=value,
                       consecutive=self.consecutive_bad_steps, total=self.bad_steps)
        logger.warning("Skipped a step after step %d: non-finite %s (%s), %d in a row",
                       self.step, what, value, self.consecutive_bad_steps)
        if self.consecutive_bad_steps >= self.config.max_bad_steps:
            raise NonFiniteLossError(
                f"{self.consecutive_bad_steps} consecutive steps had a non-finite loss or "
                f"gradient (last: {what} = {value}) after step {self.step}; training stopped "
                f"and wrote nothing. The last good checkpoint is {self.checkpoints.latest()}; "
                "lower the learning rate or set grad_clip, then resume from it."
            )
        return None

    def _log(self, window: RunningMeans) -> None:
        self.log.event("train", step=self.step, epoch=self.cursor.epoch, lr=self._last_lr,
                       bad_steps=self.bad_steps, **window.flush())

    def _periodic(self, window: RunningMeans) -> None:
        cfg = self.config
        if self.step % cfg.log_every == 0:
            self._log(window)
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()
            self.log.plot()
        if cfg.sample_every and self.step % cfg.sample_every == 0:
            self.sample()

    # ------------------------------------------------------------------ interrupts
    def _on_exception(self, exc: BaseException) -> None:
        phase, self._phase = self._phase, "idle"
        if isinstance(exc, NonFiniteLossError) or phase in ("update", "checkpoint"):
            return
        boundary = None
        if phase == "compute" and self._snapshot is not None:  # roll the step back
            self.optimizer.zero_grad(set_to_none=True)
            boundary = self._snapshot
            restore_rng_state(boundary["rng"], self.generators, self.device)
            self.cursor.seek(boundary["epoch"], boundary["batch_in_epoch"])
        if self.world_size > 1 or self.step == 0 or self._last_saved == self.step:
            return  # collectives are unsafe after a one-sided failure
        try:
            path = self.save_checkpoint(boundary)
        except (OSError, RuntimeError, ValueError) as err:
            warnings.warn(f"Could not write a checkpoint after {exc!r}: {err!r}", stacklevel=2)
            return
        self._say(f"{type(exc).__name__} at step {self.step}: saved {path}")

    def _say(self, message: str) -> None:
        logger.info(message)
        if self.is_main and self.config.verbose:
            tqdm.write(f"[trainer] {message}", file=sys.stderr)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(step={self.step}, "
                f"num_parameters={self.num_parameters}, out_dir={str(self.out_dir)!r})")
