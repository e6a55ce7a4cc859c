r"""Benchmark of mollified-noise evaluation: lattice fast path vs point evaluation.

Cases (``sigma = 1/128`` in domain units, i.e. 2 pixels at 256², the mollifier width of a
256² model; cutoff 1e-3 gives K = 152 frequencies per axis; C = 3 channels; B = 1 and 4 fields):

* ``at()`` on full 256² lattices (65,536 nodes per graph): separable matrix products + gather;
* ``evaluate()`` at 16,384 irregular (uniform random) nodes per graph: a 4x subsampled graph;
* ``evaluate()`` at the 65,536 lattice nodes per graph: the naive route for a full lattice;
* for reference, ``GaussianMollifier.apply`` of B x 3 x 256² images (the data side).

Medians of repeats, the cases interleaved so that they share the machine's load; the largest
difference between the fast path and the naive route is reported next to the times.

Run::

    python bench/noise.py                          # prints a markdown table
    python bench/noise.py --threads 1 --write      # also replaces the section between
                                                   # <!-- bench:noise --> and <!-- /bench:noise -->
                                                   # in docs/benchmarks.md
    python bench/noise.py --smoke                  # the same rows at 32² (σ = 1/16; the tests)
"""
from __future__ import annotations

import argparse

import torch
from _args import positive_int
from _common import time_cases
from _infdiff import resolve_device
from _publish import add_publish_args
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, machine_note

from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise

TITLE = "## Mollified noise: lattice fast path vs point evaluation"
CHANNELS = 3
# lattice side and irregular nodes per graph of the published run and of --smoke; σ is 2 pixels
FULL, SMOKE = dict(size=256, irregular=16_384), dict(size=32, irregular=256)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    sizes = SMOKE if args.smoke else FULL
    size, irregular, repeats = sizes["size"], sizes["irregular"], args.repeats
    sigma = 2 / size
    noise = MollifiedNoise(sigma, 2)
    moll = GaussianMollifier(sigma)
    gen = torch.Generator().manual_seed(0)
    results = {}
    for num_graphs in (1, 4):
        field = noise.draw(num_graphs, CHANNELS, gen, device=device)
        index = LatticeIndex.full((size, size), num_graphs, device=device)
        grid_pos = lattice((size, size), device=device).repeat(num_graphs, 1)
        grid_batch = index.batch
        pts = torch.rand(num_graphs * irregular, 2, generator=gen).to(device)
        pts_batch = torch.arange(num_graphs, device=device).repeat_interleave(irregular)
        images = torch.randn(num_graphs, CHANNELS, size, size, generator=gen).to(device)
        fns = {
            "fast": lambda f=field, i=index: f.at(i),
            "points": lambda f=field, p=pts, b=pts_batch: f.evaluate(p, b),
            "naive": lambda f=field, p=grid_pos, b=grid_batch: f.evaluate(p, b),
            "mollify": lambda x=images: moll.apply(x, 2),
        }
        # warm-up: caches, allocator
        timings = time_cases(fns, repeats, warmup=1, device=device)
        results[num_graphs] = {name: 1e3 * t.median for name, t in timings.items()}
        err = (field.at(index) - field.evaluate(grid_pos, grid_batch)).abs().max().item()
        results[num_graphs]["err"] = err
    return dict(ms=results, err=max(r["err"] for r in results.values()), size=size,
                irregular=irregular, num_freq=noise.num_freq, repeats=repeats,
                device=str(device))


def report(args: argparse.Namespace, result: dict) -> str:
    size, irregular, num_freq = result["size"], result["irregular"], result["num_freq"]
    r1, r4 = result["ms"][1], result["ms"][4]
    nodes = f"{size * size:,}"
    rows = ["| case | nodes per graph | B=1 (ms) | B=4 (ms) | vs naive (B=1 / B=4) |",
            "|---|---:|---:|---:|---:|"]
    for key, label, count in [
        ("fast", "`NoiseField.at` full lattice (separable matmuls + gather)", nodes),
        ("points", "`NoiseField.evaluate` irregular points", f"{irregular:,}"),
        ("naive", "`NoiseField.evaluate` at the lattice points (naive)", nodes),
        ("mollify", f"`GaussianMollifier.apply` {CHANNELS}×{size}² images", nodes),
    ]:
        ratio = "—" if key == "mollify" else (
            f"{r1['naive'] / r1[key]:.1f}× / {r4['naive'] / r4[key]:.1f}×")
        rows.append(f"| {label} | {count} | {r1[key]:.1f} | {r4[key]:.1f} | {ratio} |")
    device = "" if result["device"] == "cpu" else f" Device: {result['device']}."
    notes = [
        f"σ = 1/{size // 2} (K = {num_freq} frequencies per axis, {num_freq**2:,} "
        f"coefficients per channel), C = {CHANNELS}, float32, median of {result['repeats']} "
        f"repeats (cases interleaved).{device}",
        f"Largest |fast path − naive| over the lattice: {result['err']:.1e}.",
        machine_note(result),
    ]
    return "\n".join([TITLE, "", *rows, "", *[f"- {n}" for n in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--repeats", type=positive_int, default=7)
    add_threads_arg(p, "torch CPU threads (1 is far steadier on a loaded, shared machine)")
    add_device_arg(p)
    add_publish_args(p, "the same rows on 32² lattices (σ = 1/16, 256 irregular nodes), one "
                        "repeat (for the tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "noise", parse_args, run, report, argv, stamp=True)


if __name__ == "__main__":
    main()
