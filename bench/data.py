r"""Benchmark of the data pipeline: is it fast enough to feed training on the fly?

Cases (default :class:`~pyg_infdiff.data.ShapesConfig`, 4×4 supersampling):

* ``ContinuousShapes[i]``: rendering one built-in item at 32², 64² and 128²;
* ``GraphCollator``: mollifying (σ = 1/64) and subsampling (rate 4, Halton) a batch of 32 images;
* ``make_loader`` end to end (render + collate), 0 and 2 worker processes, batches of 32 at 32²;
* ``FashionMNIST[i]`` at 28² and resized to 64², when the Debian package is installed.

One torch thread by default (as in DataLoader workers); medians of repeats, the cases interleaved
so that they share the machine's load. CPU only: rendering, collation and the loader's workers
run on the CPU, so there is no ``--device``.

Run::

    python bench/data.py            # prints a markdown table
    python bench/data.py --write    # also replaces the section between <!-- bench:data -->
                                    # and <!-- /bench:data --> in docs/benchmarks.md
    python bench/data.py --smoke    # the same rows on tiny images and batches (the tests)
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _common import machine_description, time_cases
from _infdiff import command_line
from _publish import add_publish_args, publish

from pyg_infdiff.data import ContinuousShapes, FashionMNIST, GraphCollator, make_loader
from pyg_infdiff.noise import GaussianMollifier

TITLE = "## Data pipeline: built-in dataset, readers and collation"
HEADER = ["| case | resolution | items/s | ms/item |", "|---|---:|---:|---:|"]

# sizes of the published run and of --smoke (the same rows, tiny images and batches)
FULL = dict(render={32: 16, 64: 8, 128: 2}, collate=(32, 64), batch=32, loader=32,
            fashion=(None, 64), fashion_items=256)
SMOKE = dict(render={8: 4, 16: 2, 32: 1}, collate=(8, 16), batch=4, loader=8,
             fashion=(None, 16), fashion_items=8)


def median_rate(cases: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict:
    r"""Items per second (median over repeats, one warm-up call) of each case
    ``(fn, items per call)``; the cases interleaved by :func:`_common.time_cases`."""
    timings = time_cases({name: fn for name, (fn, _) in cases.items()}, repeats, warmup=1)
    return {name: cases[name][1] / t.median for name, t in timings.items()}


def run(repeats: int, sizes: dict) -> dict:
    cases: dict[str, tuple[Callable[[], object], int]] = {}
    labels: dict[str, tuple[str, str]] = {}
    counter = iter(range(10**9))
    for res, n in sizes["render"].items():
        dataset = ContinuousShapes(10**9, res)
        cases[f"shapes{res}"] = (
            lambda d=dataset, n=n: [d[next(counter)] for _ in range(n)],
            n,
        )
        labels[f"shapes{res}"] = ("`ContinuousShapes[i]` (render)", f"{res}²")
    batch_size = sizes["batch"]
    collator = GraphCollator(GaussianMollifier(1 / 64), rate=4, method="halton")
    gen = torch.Generator().manual_seed(0)
    for res in sizes["collate"]:
        batch = list(torch.rand(batch_size, 3, res, res, generator=gen) * 2 - 1)
        cases[f"collate{res}"] = (lambda b=batch: collator(b, generator=gen), batch_size)
        labels[f"collate{res}"] = (f"`GraphCollator` (batch {batch_size}, rate 4)", f"{res}²")
    loader_data = ContinuousShapes(4 * batch_size, sizes["loader"], seed=1)
    for workers in (0, 2):
        loader = make_loader(loader_data, collator, batch_size, seed=0, num_workers=workers)
        cases[f"loader{workers}"] = (lambda ld=loader: list(ld), len(loader_data))
        labels[f"loader{workers}"] = (
            f"`make_loader` render + collate, {workers} workers",
            f"{sizes['loader']}²",
        )
    fashion = None
    try:
        fashion = FashionMNIST(train=False)
    except FileNotFoundError:
        pass
    if fashion is not None:
        num = sizes["fashion_items"]
        for res in sizes["fashion"]:
            ds = FashionMNIST(train=False, resolution=res)
            cases[f"fashion{res}"] = (lambda d=ds, num=num: [d[i] for i in range(num)], num)
            labels[f"fashion{res}"] = ("`FashionMNIST[i]`", f"{res or 28}²")
    rates = median_rate(cases, repeats)
    rows = [dict(case=key, label=label, resolution=res, items_per_s=rates[key],
                 ms_per_item=1e3 / rates[key]) for key, (label, res) in labels.items()]
    return dict(rows=rows, fashion=fashion is not None, loader_items=len(loader_data),
                repeats=repeats)


def report(result: dict, command: str) -> str:
    table = HEADER + [f"| {r['label']} | {r['resolution']} | {r['items_per_s']:,.0f} | "
                      f"{r['ms_per_item']:.2f} |" for r in result["rows"]]
    notes = [
        f"Default `ShapesConfig` (2–5 shapes, RGB, edge width 0.01), supersample 4; collation "
        f"with `GaussianMollifier(1/64)` and Halton subsampling; median of {result['repeats']} "
        "repeats (cases interleaved). The loader rows include worker start-up (non-persistent "
        f"workers, {result['loader_items']} items per pass); on 2 shared cores, workers do not "
        "pay off here.",
        f"Machine: {result['machine']} (load average at the end; shared machine). "
        f"Command: `{command}`.",
    ]
    if not result["fashion"]:
        notes.append("Fashion-MNIST rows skipped: `apt-get install dataset-fashion-mnist`.")
    return "\n".join([TITLE, "", *table, "", *[f"- {n}" for n in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="CPU only (rendering, collation and DataLoader workers run on the CPU): there is "
        "no --device.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 as in DataLoader workers)")
    add_publish_args(p, "the same rows on 8²–32² images, batches of 4, one repeat (for the tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = command_line(__file__, argv)
    torch.set_num_threads(args.threads)
    result = run(args.repeats, SMOKE if args.smoke else FULL)
    result["machine"] = machine_description()
    result["command"] = command
    publish("data", report(result, command), args.doc, args.write)
    return result


if __name__ == "__main__":
    main()
