r"""Benchmark of the data pipeline: is it fast enough to feed training on the fly?

Cases (default :class:`~pyg_infdiff.data.ShapesConfig`, 4×4 supersampling):

* ``ContinuousShapes[i]``: rendering one built-in item at 32², 64² and 128²;
* ``GraphCollator``: mollifying (σ = 1/64) and subsampling (rate 4, Halton) a batch of 32 images;
* ``make_loader`` end to end (render + collate), 0 and 2 worker processes, batches of 32 at 32²;
* ``FashionMNIST[i]`` at 28² and resized to 64², when the Debian package is installed.

One torch thread by default (as in DataLoader workers); medians of repeats, the cases interleaved
so that they share the machine's load.

Run: ``python bench/data.py`` (prints a markdown table); ``--write`` also replaces the section
between ``<!-- bench:data -->`` and ``<!-- /bench:data -->`` in ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pyg_infdiff.data import ContinuousShapes, FashionMNIST, GraphCollator, make_loader
from pyg_infdiff.noise import GaussianMollifier

BEGIN, END = "<!-- bench:data -->", "<!-- /bench:data -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BATCH = 32


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def median_rate(cases: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict:
    r"""Items per second (median over repeats) of each case ``(fn, items per call)``."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn, _ in cases.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, (fn, _) in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: cases[name][1] / statistics.median(t) for name, t in times.items()}


def run(repeats: int) -> tuple[str, list[str]]:
    cases: dict[str, tuple[Callable[[], object], int]] = {}
    labels: dict[str, tuple[str, str]] = {}
    counter = iter(range(10**9))
    for res in (32, 64, 128):
        dataset = ContinuousShapes(10**9, res)
        n = {32: 16, 64: 8, 128: 2}[res]
        cases[f"shapes{res}"] = (
            lambda d=dataset, n=n: [d[next(counter)] for _ in range(n)],
            n,
        )
        labels[f"shapes{res}"] = ("`ContinuousShapes[i]` (render)", f"{res}²")
    collator = GraphCollator(GaussianMollifier(1 / 64), rate=4, method="halton")
    gen = torch.Generator().manual_seed(0)
    for res in (32, 64):
        batch = list(torch.rand(BATCH, 3, res, res, generator=gen) * 2 - 1)
        cases[f"collate{res}"] = (lambda b=batch: collator(b, generator=gen), BATCH)
        labels[f"collate{res}"] = (f"`GraphCollator` (batch {BATCH}, rate 4)", f"{res}²")
    loader_data = ContinuousShapes(4 * BATCH, 32, seed=1)
    for workers in (0, 2):
        loader = make_loader(loader_data, collator, BATCH, seed=0, num_workers=workers)
        cases[f"loader{workers}"] = (lambda ld=loader: list(ld), len(loader_data))
        labels[f"loader{workers}"] = (
            f"`make_loader` render + collate, {workers} workers",
            "32²",
        )
    fashion = None
    try:
        fashion = FashionMNIST(train=False)
    except FileNotFoundError:
        pass
    if fashion is not None:
        for res in (None, 64):
            ds = FashionMNIST(train=False, resolution=res)
            cases[f"fashion{res}"] = (lambda d=ds: [d[i] for i in range(256)], 256)
            labels[f"fashion{res}"] = ("`FashionMNIST[i]`", f"{res or 28}²")
    rates = median_rate(cases, repeats)
    rows = ["| case | resolution | items/s | ms/item |", "|---|---:|---:|---:|"]
    for key, (label, res) in labels.items():
        rows.append(f"| {label} | {res} | {rates[key]:,.0f} | {1e3 / rates[key]:.2f} |")
    notes = [
        f"Default `ShapesConfig` (2–5 shapes, RGB, edge width 0.01), supersample 4; collation "
        f"with `GaussianMollifier(1/64)` and Halton subsampling; median of {repeats} repeats "
        "(cases interleaved). The loader rows include worker start-up (non-persistent workers, "
        f"{len(loader_data)} items per pass); on 2 shared cores, workers do not pay off here.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, torch "
        f"threads: {torch.get_num_threads()}, {datetime.date.today().isoformat()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end (shared machine). "
        f"Command: `python bench/data.py --write`.",
    ]
    if fashion is None:
        notes.append("Fashion-MNIST rows skipped: `apt-get install dataset-fashion-mnist`.")
    return "\n".join(rows), notes


def write_section(table: str, notes: list[str]) -> None:
    section = "\n".join([
        BEGIN,
        "## Data pipeline: built-in dataset, readers and collation",
        "",
        table,
        "",
        *[f"- {n}" for n in notes],
        END,
    ])
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"  # re-read right before writing
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table, notes = run(args.repeats)
    print(table)
    print("\n".join(f"- {n}" for n in notes))
    if args.write:
        write_section(table, notes)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
