r"""Training logs: JSON lines, CSV and a loss-curve plot.

Every record goes to ``log.jsonl`` (one JSON object per line, with an ``"event"`` field:
``"start"``, ``"train"``, ``"bad_step"``, ``"checkpoint"``, ...). The periodic ``"train"``
records also go to ``log.csv`` with the fixed columns :data:`TRAIN_FIELDS`. Both files are
appended to, so a resumed run continues the same log; :func:`read_log` keeps the last record
of each step, which is the one of the run that carried on.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TRAIN_FIELDS", "RunningMeans", "TrainingLog", "plot_loss_curve", "read_log"]

#: The columns of ``log.csv``, one row per periodic ``"train"`` record.
TRAIN_FIELDS: tuple[str, ...] = (
    "step", "epoch", "loss", "lr", "grad_norm", "steps_per_sec", "bad_steps", "elapsed_s",
)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf literals
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class TrainingLog:
    r"""Appends training records to ``log.jsonl`` and ``log.csv`` in :obj:`directory`.

    Args:
        directory (str or os.PathLike): The run folder.
        enabled (bool, optional): Write files; :obj:`False` (e.g. on non-zero ranks) makes
            every method a no-op. (default: :obj:`True`)
        plot (bool, optional): Let :meth:`plot` draw ``loss.png``. (default: :obj:`True`)
    """

    def __init__(
        self, directory: str | os.PathLike, *, enabled: bool = True, plot: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self.plot_enabled = plot
        self.jsonl_path = self.directory / "log.jsonl"
        self.csv_path = self.directory / "log.csv"
        self.plot_path = self.directory / "loss.png"

    def event(self, event: str, **fields: Any) -> None:
        r"""Writes a record ``{"event": event, "time": <unix time>, **fields}``; ``"train"``
        records also go to the CSV file."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"event": event, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in fields.items()})
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
        if event == "train":
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=TRAIN_FIELDS, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(record)

    def plot(self) -> Path | None:
        r"""Redraws ``loss.png`` from the JSON log; returns its path (:obj:`None` when disabled
        or when there is nothing to plot yet)."""
        if not (self.enabled and self.plot_enabled and self.jsonl_path.exists()):
            return None
        records = read_log(self.jsonl_path)
        if not records:
            return None
        return plot_loss_curve(records, self.plot_path)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({str(self.directory)!r}, enabled={self.enabled})"


def read_log(path: str | os.PathLike, event: str = "train") -> list[dict[str, Any]]:
    r"""Reads the records of one :obj:`event` kind from a JSON-lines log, ordered by step,
    keeping the last record of each step (after a resume, the continuing run's).

    Args:
        path (str or os.PathLike): The ``log.jsonl`` file.
        event (str, optional): The record kind. (default: :obj:`"train"`)
    """
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if record.get("event") == event and "step" in record:
                by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def _smooth(values: Sequence[float], weight: float) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1.0 - weight) * v
        out.append(last)
    return out


def plot_loss_curve(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    key: str = "loss",
    smoothing: float = 0.9,
) -> Path:
    r"""Plots :obj:`key` against ``step`` (log scale when positive; with an exponentially
    smoothed line once there are 20 points or more) to a PNG with matplotlib's non-interactive
    Agg backend.

    Args:
        records (Iterable[Mapping[str, Any]]): Records with ``"step"`` and :obj:`key`.
        path (str or os.PathLike): The PNG file.
        key (str, optional): The quantity to plot. (default: :obj:`"loss"`)
        smoothing (float, optional): Weight in :math:`[0, 1)` of the exponential smoothing.
            (default: :obj:`0.9`)
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [
        (float(r["step"]), float(r[key]))
        for r in records
        if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))
    ]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        steps, values = zip(*points, strict=True)
        log_scale = min(values) > 0
        smooth = len(values) >= 20 and smoothing > 0
        ax.plot(steps, values, color="tab:blue", alpha=0.35 if smooth else 1.0, linewidth=1,
                label=key)
        if smooth:  # smooth the logarithm on a log axis, so the line follows the visible trend
            seq = [math.log(v) for v in values] if log_scale else list(values)
            smoothed = _smooth(seq, smoothing)
            ax.plot(steps, [math.exp(v) for v in smoothed] if log_scale else smoothed,
                    color="tab:blue", linewidth=2, label=f"{key} (smoothed)")
        if log_scale:
            ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.96)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


class RunningMeans:
    r"""Means of the loss and gradient norm, and the step rate, between two log records."""

    def __init__(self) -> None:
        self.start = self.t0 = time.perf_counter()
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.last_loss: float | None = None

    def add(self, loss: float, grad_norm: float) -> None:
        r"""Records one optimiser step."""
        self.losses.append(loss)
        self.norms.append(grad_norm)

    def __len__(self) -> int:
        return len(self.losses)

    def flush(self) -> dict[str, float]:
        r"""Returns ``loss``, ``grad_norm``, ``steps_per_sec`` and ``elapsed_s`` for the steps
        since the last flush, and starts a new window."""
        now = time.perf_counter()
        n = max(len(self.losses), 1)
        out = {"loss": sum(self.losses) / n, "grad_norm": sum(self.norms) / n,
               "steps_per_sec": len(self.losses) / max(now - self.t0, 1e-9),
               "elapsed_s": round(now - self.start, 3)}
        self.last_loss = out["loss"]
        self.losses, self.norms, self.t0 = [], [], now
        return out
