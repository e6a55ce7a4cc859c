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
from collections.abc import Callable

import torch
from _common import DOC, machine_description, time_cases, write_section

from pyg_infdiff.data import ContinuousShapes, FashionMNIST, GraphCollator, make_loader
from pyg_infdiff.noise import GaussianMollifier

TITLE = "## Data pipeline: built-in dataset, readers and collation"
BATCH = 32


def median_rate(cases: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict:
    r"""Items per second (median over repeats, one warm-up call) of each case
    ``(fn, items per call)``; the cases interleaved by :func:`_common.time_cases`."""
    timings = time_cases({name: fn for name, (fn, _) in cases.items()}, repeats, warmup=1)
    return {name: cases[name][1] / t.median for name, t in timings.items()}


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
        f"Machine: {machine_description()} (load average at the end; shared machine). "
        "Command: `python bench/data.py --write`.",
    ]
    if fashion is None:
        notes.append("Fashion-MNIST rows skipped: `apt-get install dataset-fashion-mnist`.")
    return "\n".join(rows), notes


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
        write_section("data", "\n".join([TITLE, "", table, "", *[f"- {n}" for n in notes]]))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
