r"""Benchmark of the data pipeline: is it fast enough to feed training on the fly?

Cases (default :class:`~pyg_infdiff.data.ShapesConfig`, 4×4 supersampling):

* ``ContinuousShapes[i]``: rendering one built-in item at 32², 64² and 128²;
* ``GraphCollator``: mollifying (σ = 1/64) and subsampling (rate 4, Halton) a batch of 32 images;
* ``make_loader`` end to end (render + collate), 0 and 2 worker processes, batches of 32 at 32²;
* ``FashionMNIST[i]`` at 28² and resized to 64², when the Debian package is installed;
* training on sparse nodes of 128² renders (issue 13): batches of 16 graphs at rate 16 (1,024
  nodes per image, mollifier half a 128² pixel) from ``ContinuousShapes`` rendered and mollified
  at every step (today's path) against a :class:`~pyg_infdiff.data.MollifiedCache` rendered and
  mollified once (float16), with the one-time cost and the memory of the cache.

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
from _args import positive_int
from _common import time_cases
from _publish import add_publish_args
from _skeleton import add_threads_arg, bench_main, bench_parser, machine_note

from pyg_infdiff.data import (
    ContinuousShapes,
    FashionMNIST,
    GraphCollator,
    MollifiedCache,
    make_loader,
)
from pyg_infdiff.models import UNetConfig
from pyg_infdiff.noise import GaussianMollifier

TITLE = "## Data pipeline: built-in dataset, readers and collation"
HEADER = ["| case | resolution | items/s | ms/item |", "|---|---:|---:|---:|"]
SPARSE_HEADER = ["| training data path (rate {rate:g}, batch {batch}) | resolution | items/s | "
                 "ms/item | × today |", "|---|---:|---:|---:|---:|"]

# sizes of the published run and of --smoke (the same rows, tiny images and batches)
FULL = dict(render={32: 16, 64: 8, 128: 2}, collate=(32, 64), batch=32, loader=32,
            fashion=(None, 64), fashion_items=256)
SMOKE = dict(render={8: 4, 16: 2, 32: 1}, collate=(8, 16), batch=4, loader=8,
             fashion=(None, 16), fashion_items=8)
# the sparse-node rows: resolution, rate, batch, batches per pass, radius of the edges (preset
# 32's, which the collator or the model builds alike)
SPARSE_FULL = dict(resolution=128, rate=16, batch=16, batches=4,
                   radius=UNetConfig.preset(32).radius)
SPARSE_SMOKE = dict(resolution=16, rate=4, batch=2, batches=2, radius=0.25)


def median_rate(cases: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict:
    r"""Items per second (median over repeats, one warm-up call) of each case
    ``(fn, items per call)``; the cases interleaved by :func:`_common.time_cases`."""
    timings = time_cases({name: fn for name, (fn, _) in cases.items()}, repeats, warmup=1)
    return {name: cases[name][1] / t.median for name, t in timings.items()}


def run(args: argparse.Namespace) -> dict:
    r"""The rows of the first table (:func:`run_table`) and, as ``"sparse"``, of the second
    (:func:`run_sparse`)."""
    result = run_table(args.repeats, SMOKE if args.smoke else FULL)
    result["sparse"] = run_sparse(args.repeats, SPARSE_SMOKE if args.smoke else SPARSE_FULL)
    return result


def run_table(repeats: int, sizes: dict) -> dict:
    r"""Items per second of the dataset, the collator, the loader and Fashion-MNIST."""
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


def run_sparse(repeats: int, sizes: dict) -> dict:
    r"""Items per second of the training data at resolution :math:`R` and rate :math:`s`:
    render + mollify + subsample at every step (today) against a :class:`MollifiedCache`
    (subsample only, with and without radius edges), the cache's one-time build and memory."""
    res, rate, batch = sizes["resolution"], sizes["rate"], sizes["batch"]
    num = batch * sizes["batches"]
    mollifier = GaussianMollifier(0.5 / res)
    dataset = ContinuousShapes(num, res, seed=2)
    cache = MollifiedCache(dataset, mollifier)
    loaders = {
        "render": make_loader(dataset, GraphCollator(mollifier, rate=rate), batch, seed=0),
        "cached": make_loader(cache, GraphCollator(None, rate=rate), batch, seed=0),
        "cached_radius": make_loader(
            cache, GraphCollator(None, rate=rate, radius=sizes["radius"]), batch, seed=0),
    }
    cases = {name: (lambda ld=ld: list(ld), num) for name, ld in loaders.items()}
    cases["build"] = (lambda: MollifiedCache(dataset, mollifier), num)
    rates = median_rate(cases, repeats)
    labels = {
        "render": "render + mollify + subsample every step (today)",
        "cached": "`MollifiedCache` (float16) + subsample",
        "cached_radius": f"`MollifiedCache` + subsample + radius edges (r = {sizes['radius']:.4g})",
        "build": "`MollifiedCache` build (one-time: render + mollify + store)",
    }
    rows = [dict(case=key, label=labels[key], resolution=f"{res}²", items_per_s=rates[key],
                 ms_per_item=1e3 / rates[key], speedup=rates[key] / rates["render"])
            for key in labels]
    return dict(rows=rows, resolution=res, rate=rate, batch=batch, items=num,
                bytes_per_item=cache.nbytes / len(cache))


def report(args: argparse.Namespace, result: dict) -> str:
    table = HEADER + [f"| {r['label']} | {r['resolution']} | {r['items_per_s']:,.0f} | "
                      f"{r['ms_per_item']:.2f} |" for r in result["rows"]]
    notes = [
        f"Default `ShapesConfig` (2–5 shapes, RGB, edge width 0.01), supersample 4; collation "
        f"with `GaussianMollifier(1/64)` and Halton subsampling; median of {result['repeats']} "
        "repeats (cases interleaved). The loader rows include worker start-up (non-persistent "
        f"workers, {result['loader_items']} items per pass); on 2 shared cores, workers do not "
        "pay off here.",
        machine_note(result),
    ]
    if not result["fashion"]:
        notes.append("Fashion-MNIST rows skipped: `apt-get install dataset-fashion-mnist`.")
    sparse = result["sparse"]
    res, rate = sparse["resolution"], sparse["rate"]
    nodes = res * res // int(rate)
    sparse_table = [line.format(rate=rate, batch=sparse["batch"]) for line in SPARSE_HEADER] + [
        f"| {r['label']} | {r['resolution']} | {r['items_per_s']:,.0f} | "
        f"{r['ms_per_item']:.2f} | "
        + ("one-time |" if r["case"] == "build" else f"{r['speedup']:.1f}× |")
        for r in sparse["rows"]]
    per_item = sparse["bytes_per_item"]
    sparse_notes = [
        f"Training on sparse nodes of {res}² renders (`celebahq_train.py --dataset shapes "
        f"--resolution {res} --subsample {rate:g}`): {nodes:,} nodes per image, mollifier "
        f"σ = 0.5/{res}, uniform subsampling, {sparse['items']} items per pass of "
        f"`make_loader` (0 workers), the cases interleaved. The radius edges (of preset 32, "
        "the model of `--preset 32`) are built by the collator or else by the model: a cost of "
        "the step either way, the same on every path.",
        f"The cache costs {per_item / 2**10:.0f} KiB per item in float16 "
        f"({2048 * per_item / 2**20:.0f} MiB for `--cache-items 2048`, half that in uint8) and "
        "one pass of render + mollify (the build row) once; a step then pays for its nodes "
        "only. Its values equal the render + mollify path's within float16 rounding "
        "(tests/data/test_cache.py).",
    ]
    return "\n".join([TITLE, "", *table, "", *[f"- {n}" for n in notes], "",
                      *sparse_table, "", *[f"- {n}" for n in sparse_notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__, epilog="CPU only (rendering, collation and DataLoader workers "
                     "run on the CPU): there is no --device.")
    p.add_argument("--repeats", type=positive_int, default=5)
    add_threads_arg(p, "torch CPU threads (1 as in DataLoader workers)")
    add_publish_args(p, "the same rows on 8²–32² images, batches of 4, one repeat (for the tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "data", parse_args, run, report, argv, stamp=True)


if __name__ == "__main__":
    main()
