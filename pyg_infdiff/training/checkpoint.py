r"""Safe, atomic training checkpoints.

* **Atomic**: a checkpoint is written to a temporary file in the same folder, flushed and
  :func:`os.fsync`-ed, then renamed over the target with :func:`os.replace`. A crash mid-write
  leaves the previous file untouched.
* **No code runs on load**: :func:`load_checkpoint` uses ``torch.load(..., weights_only=True)``,
  so a checkpoint may hold only tensors and plain containers (dicts, lists, tuples, numbers,
  strings, :obj:`None`). RNG states are byte tensors and configs plain dicts.
* **Keep the last k**: :class:`CheckpointManager` names files ``ckpt_<step>.pt`` and finds the
  latest one by its step number, so there is no separate pointer file to get out of sync.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CheckpointManager",
    "capture_rng_state",
    "check_storable",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "state_is_finite",
]

_NAME = re.compile(r"^(?P<prefix>.+)_(?P<step>\d+)\.pt$")


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    r"""Writes :obj:`state` to :obj:`path` atomically (temporary file, fsync, rename).

    Args:
        state (Mapping[str, Any]): Tensors and plain containers only, so that
            :func:`load_checkpoint` can read it back with ``weights_only=True``.
        path (str or os.PathLike): The target file; its folder is created if needed.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Clean up the partial file, then let the error propagate unchanged.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    r"""Reads a checkpoint with ``torch.load(..., weights_only=True)``.

    Nothing in the file can run code: anything other than tensors and plain containers is
    rejected.

    Args:
        path (str or os.PathLike): The checkpoint file.
        map_location (str or torch.device, optional): Where to put the tensors.
            (default: :obj:`"cpu"`)

    Raises:
        FileNotFoundError: If :obj:`path` does not exist.
        ValueError: If the file holds anything but tensors and plain containers, or is not a
            dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"Refusing to load {path}: it contains objects other than tensors and plain "
            f"containers, which weights_only=True does not allow ({err})"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"Checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def check_storable(obj: Any, where: str = "value") -> None:
    r"""Raises :class:`ValueError` unless :obj:`obj` is made only of what
    ``torch.load(..., weights_only=True)`` reads back: tensors, :obj:`None`, booleans, numbers,
    strings, and lists, tuples and dicts (string or integer keys) of them.

    Args:
        obj (Any): The value to check.
        where (str, optional): Its name, for the error message. (default: :obj:`"value"`)
    """
    if obj is None or isinstance(obj, (bool, int, float, str, Tensor)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where} has a key of type {type(k).__name__}: {k!r}")
            check_storable(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_storable(v, f"{where}[{i}]")
        return
    raise ValueError(
        f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, numbers, strings "
        "and lists/dicts of them (use dataclasses.asdict for config objects)"
    )


def state_is_finite(state: Any) -> bool:
    r"""Whether every floating-point tensor in a nested container is finite."""
    if isinstance(state, Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, Mapping):
        return all(state_is_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(state_is_finite(v) for v in state)
    return True


def capture_rng_state(
    generators: Mapping[str, torch.Generator] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    r"""Captures the global torch RNG (CPU, and CUDA for :obj:`device` if it is a GPU) and
    the states of named :class:`torch.Generator` objects, as byte tensors.

    Args:
        generators (Mapping[str, torch.Generator], optional): Generators to capture.
            (default: :obj:`None`)
        device (torch.device or str, optional): The training device. (default: :obj:`None`)
    """
    device = torch.device(device) if device is not None else None
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }


def restore_rng_state(
    state: Mapping[str, Any],
    generators: Mapping[str, torch.Generator] | None = None,
    device: torch.device | str | None = None,
) -> None:
    r"""Restores what :func:`capture_rng_state` captured.

    Args:
        state (Mapping[str, Any]): The captured state.
        generators (Mapping[str, torch.Generator], optional): Generators to restore, by name;
            every one must be present in :obj:`state`. (default: :obj:`None`)
        device (torch.device or str, optional): The training device. (default: :obj:`None`)
    """
    torch.set_rng_state(state["torch"])
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise ValueError(
                f"The checkpoint has no state for generator {name!r}; it has {sorted(saved)}"
            )
        if saved[name].numel() != gen.get_state().numel():
            # A generator of another kind of device (CPU and CUDA generators keep states of
            # different sizes): its stream cannot continue here. Reseed it reproducibly from
            # the saved state, as for a changed number of processes.
            digest = hashlib.sha256(saved[name].cpu().numpy().tobytes()).digest()
            seed = int.from_bytes(digest[:8], "little") & (2**63 - 1)
            warnings.warn(f"The checkpoint's state of generator {name!r} is of another device "
                          f"type than {gen.device}; reseeding it (seed {seed})", stacklevel=2)
            gen.manual_seed(seed)
            continue
        gen.set_state(saved[name])


class CheckpointManager:
    r"""Saves checkpoints as ``<directory>/<prefix>_<step>.pt`` and keeps the last :obj:`k`.

    Args:
        directory (str or os.PathLike): The checkpoint folder.
        keep_last (int, optional): How many of the newest checkpoints to keep; :obj:`None`
            keeps all. (default: :obj:`3`)
        prefix (str, optional): The file-name prefix. (default: :obj:`"ckpt"`)
    """

    def __init__(
        self, directory: str | os.PathLike, keep_last: int | None = 3, prefix: str = "ckpt"
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        if not prefix or "/" in prefix:
            raise ValueError(f"prefix must be a non-empty file-name part, got {prefix!r}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.prefix = prefix

    def path_for(self, step: int) -> Path:
        r"""The file name of the checkpoint at :obj:`step`."""
        return self.directory / f"{self.prefix}_{step:08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        r"""All checkpoints in the folder as ``(step, path)``, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and match["prefix"] == self.prefix and path.is_file():
                found.append((int(match["step"]), path))
        return sorted(found)

    def latest(self) -> Path | None:
        r"""The checkpoint with the highest step, or :obj:`None` if there is none."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        r"""Saves :obj:`state` atomically as the checkpoint of :obj:`step`, then deletes all
        but the newest :obj:`keep_last` checkpoints. Returns the path written."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        path = save_checkpoint(state, self.path_for(step))
        self.prune()
        return path

    def prune(self) -> list[Path]:
        r"""Deletes all but the newest :obj:`keep_last` checkpoints and stale temporary files
        of this prefix. Returns the deleted checkpoints."""
        removed: list[Path] = []
        if self.keep_last is not None:
            for _, path in self.checkpoints()[: -self.keep_last]:
                path.unlink(missing_ok=True)
                removed.append(path)
        if self.directory.is_dir():
            for tmp in self.directory.glob(f".{self.prefix}_*.pt.*.tmp"):
                tmp.unlink(missing_ok=True)
        return removed

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({str(self.directory)!r}, keep_last={self.keep_last}, "
            f"prefix={self.prefix!r})"
        )
