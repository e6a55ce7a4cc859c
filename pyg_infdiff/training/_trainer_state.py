r"""What a :class:`~pyg_infdiff.training.Trainer` checkpoint holds, and how a run resumes from
one exactly: weights, EMA, optimiser, scheduler, counters, the data cursor and the RNG states of
every process."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pyg_infdiff.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    state_is_finite,
)
from pyg_infdiff.training.config import NonFiniteLossError
from pyg_infdiff.training.distributed import all_gather_objects, barrier

__all__ = ["CHECKPOINT_FORMAT", "TrainerStateMixin"]

#: The ``"format"`` entry of every Trainer checkpoint.
CHECKPOINT_FORMAT = "pyg_infdiff.trainer"


class TrainerStateMixin:
    r"""The checkpoint half of :class:`~pyg_infdiff.training.Trainer`: :meth:`state_dict`,
    :meth:`save_checkpoint` and :meth:`resume`. It reads and restores the attributes the
    trainer sets up (model, EMA, optimiser, scheduler, cursor, generators, counters)."""

    # set by Trainer.__init__
    step: int
    bad_steps: int
    consecutive_bad_steps: int
    _last_saved: int | None
    _phase: str

    def state_dict(self, _boundary: Mapping[str, Any] | None = None) -> dict[str, Any]:
        r"""Everything a checkpoint holds (tensors and plain containers only); every process
        must call it, since the RNG states of all processes are gathered."""
        b = _boundary if _boundary is not None else self._capture()
        return {
            "format": CHECKPOINT_FORMAT, "version": 1, "step": self.step,
            "epoch": b["epoch"], "batch_in_epoch": b["batch_in_epoch"],
            "data_seed": self.cursor.seed, "bad_steps": self.bad_steps,
            "consecutive_bad_steps": self.consecutive_bad_steps,
            "world_size": self.world_size, "num_parameters": self.num_parameters,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": all_gather_objects(b["rng"]),
            "trainer_config": self.config.to_dict(), "model_config": self.model_config,
        }

    def save_checkpoint(self, _boundary: Mapping[str, Any] | None = None) -> Path | None:
        r"""Writes ``out_dir/checkpoints/ckpt_<step>.pt`` (rank 0) and prunes old ones.
        Refuses, raising :class:`NonFiniteLossError`, if any weight is not finite."""
        phase, self._phase = self._phase, "checkpoint"
        state = self.state_dict(_boundary)
        if not (state_is_finite(state["model"]) and state_is_finite(state["ema"])):
            raise NonFiniteLossError(f"Weights are not finite at step {self.step}; not writing "
                                     f"a checkpoint (last good: {self.checkpoints.latest()})")
        path = None
        if self.is_main:
            path = self.checkpoints.save(state, self.step)
            self.log.event("checkpoint", step=self.step, path=str(path))
        barrier()
        self._last_saved = self.step
        self._phase = phase
        return path

    def resume(self, checkpoint: str | Path) -> Path | None:
        r"""Loads a checkpoint (see :meth:`fit` for ``"latest"``/``"auto"``) into the model,
        EMA, optimiser, scheduler, counters and RNG states; returns its path."""
        if checkpoint in ("latest", "auto"):
            path = self.checkpoints.latest()
            if path is None:
                if checkpoint == "auto":
                    return None
                raise FileNotFoundError(f"No checkpoints to resume from in {self.checkpoints}")
        else:
            path = Path(checkpoint)
        state = load_checkpoint(path, map_location="cpu")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a Trainer checkpoint (format={state.get('format')})")
        saved = state.get("model_config")
        if saved is not None and self.model_config is not None:
            changed = config_differences(saved, self.model_config)
            if changed:  # same weights, other maths: refuse rather than train on silently
                raise ValueError(
                    f"{path} was written with another model_config than this run's; resume "
                    f"with the settings it was trained with (or start a new run):\n  "
                    + "\n  ".join(changed)
                )
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if state["ema"] is None:
                warnings.warn(f"{path} has no EMA weights; starting the EMA from the model",
                              stacklevel=2)
                self.ema.n_averaged.zero_()
                self.ema.update_parameters(self.model)
            else:
                self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in ("step", "bad_steps", "consecutive_bad_steps"):
            setattr(self, key, int(state[key]))
        self.cursor.seed = int(state["data_seed"])
        self.cursor.seek(int(state["epoch"]), int(state["batch_in_epoch"]))
        if len(state["rng"]) == self.world_size:
            restore_rng_state(state["rng"][self.rank], self.generators, self.device)
        else:  # a different number of processes: fresh, distinct, reproducible seeds
            warnings.warn(f"{path} was written by {len(state['rng'])} process(es), this run "
                          f"has {self.world_size}: RNG states are reseeded", stacklevel=2)
            seed = self.config.seed + 7919 * self.step + 104729 * self.rank
            torch.manual_seed(seed)
            for i, g in enumerate(self.generators.values()):
                g.manual_seed(seed + i + 1)
        self._last_saved = self.step
        self._last_lr = self.optimizer.param_groups[0]["lr"]
        return path

    def _capture(self) -> dict[str, Any]:
        return {"rng": capture_rng_state(self.generators, self.device),
                "epoch": self.cursor.epoch, "batch_in_epoch": self.cursor.batch_in_epoch}

    def _save_once(self, boundary: Mapping[str, Any] | None = None) -> Path | None:
        if self._last_saved == self.step:
            return self.checkpoints.latest() if self.is_main else None
        return self.save_checkpoint(boundary)


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
    r"""The entries in which two nested ``model_config`` dictionaries differ, one line each
    (``"unet.pool: checkpoint 'idw', this run 'tent'"``); an entry missing on one side is
    ``<missing>``."""
    lines = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += config_differences(a, b, f"{name}.")
        elif _plain(a) != _plain(b):
            lines.append(f"{name}: checkpoint {a!r}, this run {b!r}")
    return lines


def _plain(value: Any) -> Any:
    r"""Lists and tuples compare equal (a checkpoint stores tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
