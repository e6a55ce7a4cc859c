r"""Shared utilities of the benchmark scripts: timing, peak memory and machine description.

* :func:`time_cases`: wall-clock medians of repeats after warm-up, the cases interleaved
  round-robin so that they share the machine's load (ratios between them are what to report on a
  shared, noisy machine).
* :func:`peak_memory`: the peak memory of one call (e.g. one training step), measured in a fresh
  subprocess. On CUDA: :func:`torch.cuda.max_memory_allocated` minus the memory allocated before
  the call. On CPU: the process's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the call) minus its resident set before the call, with
  glibc told to serve every block of 64 KiB or more by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``), so
  that freed tensors go back to the system and the warm-up steps do not leave a pool that hides
  the next step's needs. ``tracemalloc`` cannot be used (torch allocates outside Python), and the
  lifetime ``ru_maxrss`` would include model construction and data loading.
* :func:`machine_description`: CPU model, cores, load, torch version and date, for every table.
* :func:`format_bytes`, :func:`relative_to_root`: formatting.

Writing the results into the docs (sections, tables, figures, the common command-line flags)
is ``_publish.py``.

Benchmark scripts are run as ``python bench/<script>.py``, which puts ``bench/`` on ``sys.path``:
import this module as ``from _common import time_cases, ...``.
"""
from __future__ import annotations

import ctypes
import datetime
import gc
import importlib
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyg_infdiff.training.allocator import freed_memory_kept

__all__ = [
    "DOC",
    "ROOT",
    "MemoryPeak",
    "Timing",
    "cpu_name",
    "format_bytes",
    "machine_description",
    "peak_memory",
    "relative_to_root",
    "synchronize",
    "time_cases",
]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
MMAP_THRESHOLD = 65536
_RESULT_TAG = "__peak_memory_result__ "


@dataclass(frozen=True)
class Timing:
    r"""Wall-clock times (seconds) of the timed repeats of one case.

    Args:
        times (tuple[float, ...]): One entry per repeat, warm-up excluded.
    """

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        r"""The median time in seconds."""
        return statistics.median(self.times)

    @property
    def spread(self) -> tuple[float, float]:
        r"""The lower and upper quartiles in seconds (the extremes under 4 repeats)."""
        if len(self.times) < 4:
            return min(self.times), max(self.times)
        q = statistics.quantiles(self.times, n=4)
        return q[0], q[2]

    def __repr__(self) -> str:
        lo, hi = self.spread
        return f"Timing(median={self.median:.4g}s, q=[{lo:.4g}, {hi:.4g}], n={len(self.times)})"


def synchronize(device: torch.device | str | None = None) -> None:
    r"""Waits for queued CUDA work on :obj:`device` (nothing on CPU or :obj:`None`)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_cases(
    cases: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    r"""Times each case, interleaved: all warm-up calls first, then :obj:`repeats` rounds that
    call every case once, in order. Interleaving spreads a shared machine's load changes over all
    cases, so that ratios between them are fair.

    Args:
        cases (Mapping[str, Callable]): Named zero-argument callables.
        repeats (int, optional): Timed calls per case. (default: :obj:`5`)
        warmup (int, optional): Untimed calls per case first. (default: :obj:`1`)
        device (torch.device or str, optional): Synchronised around each call when CUDA.
            (default: :obj:`None`)

    Returns:
        dict[str, Timing]: The times of each case.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(t)) for name, t in times.items()}


@dataclass(frozen=True)
class MemoryPeak:
    r"""The peak memory of one call, measured by :func:`peak_memory`.

    Args:
        peak_bytes (int): Peak memory during the call above what was held before it.
        baseline_bytes (int): Memory held before the call (resident set on CPU, allocated
            tensors on CUDA): the model, optimiser state, data and, on CPU, the interpreter and
            libraries.
        method (str): How it was measured (``"rss-hwm"`` or ``"cuda-max-allocated"``).
    """

    peak_bytes: int
    baseline_bytes: int
    method: str


def _status_bytes(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key}: peak memory needs Linux")
    return int(match.group(1)) * 1024


def _load(factory: str) -> Callable[..., Callable[[], object]]:
    target, sep, name = factory.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(
            f"factory must be 'module:function' or 'file.py:function', got {factory!r}"
        )
    if target.endswith(".py"):
        path = Path(target).resolve()
        sys.path.append(str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    step = _load(spec["factory"])(*spec["args"], **spec["kwargs"])
    for _ in range(spec["warmup"]):
        step()
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc: return free heap pages
    if trim is not None:
        trim(0)
    if spec["device"] == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        return {"peak_bytes": peak, "baseline_bytes": before, "method": "cuda-max-allocated"}
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    step()
    peak = _status_bytes("VmHWM") - before
    return {"peak_bytes": peak, "baseline_bytes": before, "method": "rss-hwm"}


def peak_memory(
    factory: str,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    warmup: int = 2,
    device: str = "cpu",
    threads: int | None = None,
    timeout: float | None = 600,
) -> MemoryPeak:
    r"""Peak memory of one call of a step function, in a fresh Python subprocess.

    The subprocess imports ``factory`` (``"module:function"`` or ``"path/to/file.py:function"``),
    calls it with :obj:`args` and :obj:`kwargs` to build everything (model, optimiser, data) and
    get back a zero-argument ``step``; calls ``step`` :obj:`warmup` times (optimiser state,
    lazily loaded kernels), then measures one more call. See the module docstring for the CPU
    method (resident-set high-water mark with glibc's ``mmap`` threshold fixed at 64 KiB).

    Args:
        factory (str): Where the step builder lives.
        args (Sequence, optional): Positional arguments of the builder, JSON-serialisable.
            (default: :obj:`()`)
        kwargs (Mapping, optional): Keyword arguments, JSON-serialisable. (default: :obj:`None`)
        warmup (int, optional): Untimed calls first. (default: :obj:`2`)
        device (str, optional): :obj:`"cpu"` or :obj:`"cuda"`; the builder must put its model
            there itself. (default: :obj:`"cpu"`)
        threads (int, optional): ``torch.set_num_threads`` in the subprocess.
            (default: :obj:`None`, this process's setting)
        timeout (float, optional): Seconds before the subprocess is killed. (default: :obj:`600`)

    Returns:
        MemoryPeak: Peak bytes above the baseline, the baseline and the method.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"'device' must be 'cpu' or 'cuda', got {device!r}")
    if warmup < 1:
        raise ValueError(f"'warmup' must be >= 1 (the first step allocates state), got {warmup}")
    spec = {
        "factory": factory,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "warmup": warmup,
        "device": device,
        "threads": torch.get_num_threads() if threads is None else threads,
    }
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # bench/ goes last on the child's path: its scripts must not shadow standard modules.
    code = f"import sys; sys.path.append({str(ROOT / 'bench')!r}); import _common; _common._child()"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"peak-memory subprocess for {factory} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return MemoryPeak(**json.loads(lines[-1][len(_RESULT_TAG):]))


def cpu_name() -> str:
    r"""The CPU model from ``/proc/cpuinfo`` (or :func:`platform.processor`)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | str | None = None) -> str:
    r"""One line describing where a benchmark ran: CPU model, logical cores (and those usable by
    this process), torch threads, the 1-minute load average, the GPU when :obj:`device` is CUDA,
    Python and torch versions and the UTC date and time."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    parts = [f"{cpu_name()}, {cores} logical cores"]
    if usable != cores:
        parts[0] += f" ({usable} usable)"
    parts.append(f"{torch.get_num_threads()} torch threads")
    if hasattr(os, "getloadavg"):
        parts.append(f"load {os.getloadavg()[0]:.1f}")
    if device is not None and torch.device(device).type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    parts.append(f"Python {platform.python_version()}, torch {torch.__version__}")
    if freed_memory_kept():
        parts.append("freed memory kept (`keep_freed_memory()`, as the examples)")
    now = datetime.datetime.now(datetime.timezone.utc)
    parts.append(now.strftime("%Y-%m-%d %H:%M UTC"))
    return "; ".join(parts)


def cached_json(path: str | os.PathLike, compute: Callable[[], Any]) -> Any:
    r"""The JSON at :obj:`path`, or :obj:`compute()` written there (folders made as needed):
    the cache of a benchmark's finished parts."""
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return value


def cached_with_settings(path: str | os.PathLike, settings: dict) -> dict | None:
    r"""The JSON result at :obj:`path` if it exists and was measured with :obj:`settings`
    (its ``"settings"`` entry), else :obj:`None`: a finished arm that a rerun may reuse."""
    path = Path(path)
    result = json.loads(path.read_text()) if path.exists() else None
    return result if result is not None and result.get("settings") == settings else None


def cached_timed(path: str | os.PathLike, settings: dict, compute: Callable[[], Any]
                 ) -> tuple[Any, float]:
    r"""What :obj:`compute()` returns (tensors, e.g. samples) and the seconds it took: read
    from :obj:`path` if it was computed there with the same :obj:`settings`, else computed and
    saved there with them (``torch.save``; folders made as needed). The cache of a benchmark's
    costly tensors, such as one model's samples, that a rerun may reuse while its settings
    (checkpoint, seeds, sampler, ...) hold."""
    path = Path(path)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved["settings"] == settings:
            return saved["value"], float(saved["seconds"])
    start = time.perf_counter()
    value = compute()
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"settings": settings, "value": value, "seconds": seconds}, path)
    return value, seconds


def relative_to_root(path: str | os.PathLike) -> str:
    r""":obj:`path` relative to the repository root when it lies below it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def format_bytes(num: float) -> str:
    r"""``1536 -> "1.5 KiB"``, binary units up to GiB."""
    for unit in ("B", "KiB", "MiB"):
        if abs(num) < 1024:
            return f"{num:.0f} B" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.2f} GiB"


def _child() -> None:
    print(_RESULT_TAG + json.dumps(_measure(json.loads(sys.stdin.read()))), flush=True)
