r"""Benchmark of mollified-noise evaluation: lattice fast path vs point evaluation.

Cases (``sigma = 1/128`` in domain units, i.e. 2 pixels at 256², the mollifier width of a
256² model; cutoff 1e-3 gives K = 152 frequencies per axis; C = 3 channels; B = 1 and 4 fields):

* ``at()`` on full 256² lattices (65,536 nodes per graph): separable matrix products + gather;
* ``evaluate()`` at 16,384 irregular (uniform random) nodes per graph: a 4x subsampled graph;
* ``evaluate()`` at the 65,536 lattice nodes per graph: the naive route for a full lattice;
* for reference, ``GaussianMollifier.apply`` of B x 3 x 256² images (the data side).

Medians of repeats, the cases interleaved so that they share the machine's load.

Run: ``python bench/noise.py`` (prints a markdown table); ``--write`` also replaces the section
between ``<!-- bench:noise -->`` and ``<!-- /bench:noise -->`` in ``docs/benchmarks.md``.
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

from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise

BEGIN, END = "<!-- bench:noise -->", "<!-- /bench:noise -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SIGMA, SIZE, CHANNELS, IRREGULAR = 1 / 128, 256, 3, 16_384


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up (caches, allocator)
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def run(repeats: int, flags: str = "") -> tuple[str, list[str]]:
    noise = MollifiedNoise(SIGMA, 2)
    moll = GaussianMollifier(SIGMA)
    gen = torch.Generator().manual_seed(0)
    rows, results = [], {}
    for num_graphs in (1, 4):
        field = noise.draw(num_graphs, CHANNELS, gen)
        index = LatticeIndex.full((SIZE, SIZE), num_graphs)
        grid_pos = lattice((SIZE, SIZE)).repeat(num_graphs, 1)
        grid_batch = index.batch
        pts = torch.rand(num_graphs * IRREGULAR, 2, generator=gen)
        pts_batch = torch.arange(num_graphs).repeat_interleave(IRREGULAR)
        images = torch.randn(num_graphs, CHANNELS, SIZE, SIZE, generator=gen)
        fns = {
            "fast": lambda f=field, i=index: f.at(i),
            "points": lambda f=field, p=pts, b=pts_batch: f.evaluate(p, b),
            "naive": lambda f=field, p=grid_pos, b=grid_batch: f.evaluate(p, b),
            "mollify": lambda x=images: moll.apply(x, 2),
        }
        results[num_graphs] = median_ms(fns, repeats)
        err = (field.at(index) - field.evaluate(grid_pos, grid_batch)).abs().max().item()
        results[num_graphs]["err"] = err
    r1, r4 = results[1], results[4]
    nodes = f"{SIZE * SIZE:,}"
    rows.append("| case | nodes per graph | B=1 (ms) | B=4 (ms) | vs naive (B=1 / B=4) |")
    rows.append("|---|---:|---:|---:|---:|")
    for key, label, count in [
        ("fast", "`NoiseField.at` full lattice (separable matmuls + gather)", nodes),
        ("points", "`NoiseField.evaluate` irregular points", f"{IRREGULAR:,}"),
        ("naive", "`NoiseField.evaluate` at the lattice points (naive)", nodes),
        ("mollify", f"`GaussianMollifier.apply` {CHANNELS}×{SIZE}² images", nodes),
    ]:
        ratio = "—" if key == "mollify" else (
            f"{r1['naive'] / r1[key]:.1f}× / {r4['naive'] / r4[key]:.1f}×")
        rows.append(f"| {label} | {count} | {r1[key]:.1f} | {r4[key]:.1f} | {ratio} |")
    notes = [
        f"σ = 1/128 (K = {noise.num_freq} frequencies per axis, {noise.num_freq**2:,} "
        f"coefficients per channel), C = {CHANNELS}, float32, median of {repeats} repeats "
        "(cases interleaved).",
        f"Largest |fast path − naive| over the lattice: {max(r1['err'], r4['err']):.1e}.",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}, "
        f"{datetime.date.today().isoformat()}, load average {load_average()} at the "
        f"end (shared machine). Command: `python bench/noise.py{flags} --write`.",
    ]
    return "\n".join(rows), notes


def write_section(table: str, notes: list[str]) -> None:
    section = "\n".join([
        BEGIN,
        "## Mollified noise: lattice fast path vs point evaluation",
        "",
        table,
        "",
        *[f"- {n}" for n in notes],
        END,
    ])
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else ""  # re-read right before writing
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; 1 is far steadier on a loaded, shared machine")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    flags = "" if args.threads is None else f" --threads {args.threads}"
    table, notes = run(args.repeats, flags + f" --repeats {args.repeats}")
    print(table)
    print("\n".join(f"- {n}" for n in notes))
    if args.write:
        write_section(table, notes)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
