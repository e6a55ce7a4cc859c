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

import torch
from _common import DOC, machine_description, time_cases, write_section

from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise

TITLE = "## Mollified noise: lattice fast path vs point evaluation"
SIGMA, SIZE, CHANNELS, IRREGULAR = 1 / 128, 256, 3, 16_384


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
        timings = time_cases(fns, repeats, warmup=1)  # warm-up: caches, allocator
        results[num_graphs] = {name: 1e3 * t.median for name, t in timings.items()}
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
        f"Machine: {machine_description()} (load average at the end; shared machine). "
        f"Command: `python bench/noise.py{flags} --write`.",
    ]
    return "\n".join(rows), notes


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
        write_section("noise", "\n".join([TITLE, "", table, "", *[f"- {n}" for n in notes]]))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
