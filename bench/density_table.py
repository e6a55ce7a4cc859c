r"""The Monte-Carlo density of every preset at its training resolution and subsampling rates 1, 2,
4, 8 and 16: the expected nodes per kernel ball (:func:`pyg_infdiff.models.monte_carlo_density`),
and, as a check of the formula, the counts measured on one random subset of the lattice.

Two tables:

* expected nodes per ball (interior value, :math:`\rho V_d r^d`) and the effective count at a node
  after the window weights, per preset and rate; the cells below the warning threshold
  (:data:`pyg_infdiff.models.density.MIN_NODES_PER_BALL`) are marked;
* the same expectations against counts measured with ``pyg_infdiff.graph.radius`` /
  ``radius_graph`` on one uniform subset: at random points whose ball lies inside the domain, and
  at the interior nodes (themselves included).

No timings: the numbers do not depend on the machine (CPU only, no ``--device``).

Run::

    python bench/density_table.py                  # prints the section
    python bench/density_table.py --write          # also replaces the section between
                                                   # <!-- bench:density --> and
                                                   # <!-- /bench:density --> in docs/concepts.md
    python bench/density_table.py --smoke          # presets 28 and 32, rates 1 and 4 (the tests)
"""
from __future__ import annotations

import argparse

import torch
from _common import ROOT
from _publish import add_publish_args, markdown_table
from _skeleton import add_threads_arg, bench_main, bench_parser

from pyg_infdiff.graph import pixel_to_pos, radius, radius_graph, subsample
from pyg_infdiff.models import UNetConfig, monte_carlo_density
from pyg_infdiff.models.density import MIN_NODES_PER_BALL

CONCEPTS = ROOT / "docs" / "concepts.md"
FULL = dict(presets=(28, 32, 64, 128, 256), rates=(1, 2, 4, 8, 16), points=4000)
SMOKE = dict(presets=(28, 32), rates=(1, 4), points=200)
# The subsampling rate that examples/celebahq_train.py uses by default for each preset.
DEFAULT_RATE = {28: 4, 32: 4, 64: 4, 128: 4, 256: 8}


def measure(config: UNetConfig, side: int, rate: float, points: int, seed: int = 0) -> dict:
    r"""Mean neighbour counts on one uniform subset of the ``side``-lattice: at random points
    and at nodes whose ball lies inside the domain (nodes included in their own count)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (side,) * config.ndim
    r = config.radius
    pos = pixel_to_pos(subsample(shape, rate=rate, generator=gen), shape)
    query = r + (1 - 2 * r) * torch.rand(points, config.ndim, generator=gen)
    at_points = radius(pos, query, r).size(1) / points
    edges = radius_graph(pos, r, loop=True)
    interior = ((pos > r) & (pos < 1 - r)).all(-1)
    degree = torch.bincount(edges[1], minlength=pos.size(0))
    return dict(points=at_points, nodes=float(degree[interior].double().mean()))


def run(args: argparse.Namespace) -> dict:
    r"""The table of :func:`run_table` at the sizes of the run, with its command line."""
    return dict(run_table(**(SMOKE if args.smoke else FULL)), command=args.command)


def run_table(presets: tuple[int, ...], rates: tuple[int, ...], points: int) -> dict:
    r"""The expected and measured densities of every preset and rate."""
    rows = []
    for preset in presets:
        config = UNetConfig.preset(preset)
        for rate in rates:
            report = monte_carlo_density(config, preset, rate)
            level = report.levels[0]
            rows.append(dict(preset=preset, rate=rate, radius=level.radius, pixels=level.pixels,
                             expected=level.expected, at_node=level.at_node,
                             effective=level.effective, per_cell=report.nodes_per_cell,
                             grid=config.grid_shape[0],
                             measured=measure(config, preset, rate, points)))
    return dict(rows=rows, presets=presets, rates=rates, points=points)


def _cell(row: dict) -> str:
    text = f"{row['expected']:.1f} / {row['effective']:.1f}"
    if row["expected"] < MIN_NODES_PER_BALL:
        text = f"**{text}** ⚠"
    if DEFAULT_RATE.get(row["preset"]) == row["rate"]:
        text += " (default)"
    return text


def report(args: argparse.Namespace, result: dict) -> str:
    rates = result["rates"]
    by_key = {(r["preset"], r["rate"]): r for r in result["rows"]}
    table = []
    for preset in result["presets"]:
        first = by_key[(preset, rates[0])]
        table.append([f"{preset} ({preset}²)", f"{first['radius']:.4f} ({first['pixels']:.3g} px)",
                      *[_cell(by_key[(preset, rate)]) for rate in rates]])
    main = markdown_table(["preset (data)", "radius", *[f"rate {r}" for r in rates]], table)
    cells = markdown_table(
        ["preset (data)", "pool grid", *[f"rate {r}" for r in rates]],
        [[f"{p} ({p}²)", f"{by_key[(p, rates[0])]['grid']}²",
          *[f"{by_key[(p, r)]['per_cell']:.2f}" for r in rates]] for p in result["presets"]],
    )
    check = markdown_table(
        ["preset", "rate", "expected at a point", "measured", "expected at a node", "measured"],
        [[r["preset"], r["rate"], f"{r['expected']:.2f}", f"{r['measured']['points']:.2f}",
          f"{r['at_node']:.2f}", f"{r['measured']['nodes']:.2f}"] for r in result["rows"]],
    )
    notes = [
        "Cells: expected nodes per kernel ball around an interior point, "
        "ρ V_d r^d with ρ = pixels / rate (the interior value: balls cut by a face of the "
        "domain hold fewer), and the effective count at a node after the window weights, "
        "E[Σw]² / E[Σw²] (the node itself included, with weight 1: at high rates it exceeds "
        "the count at a point). **Bold** ⚠: below the warning threshold "
        f"`MIN_NODES_PER_BALL = {MIN_NODES_PER_BALL:g}` of "
        "`pyg_infdiff.models.check_monte_carlo_density`; (default): the rate "
        "`examples/celebahq_train.py` uses for the preset.",
        f"Measured: mean counts on one uniform subset of the lattice, at {result['points']:,} "
        "random points whose ball lies inside the domain, and at the nodes whose ball does "
        "(each node counted in its own ball). At a node the pixels of a small ball differ "
        "from its area (37 within 3.57 px against 40.0, 25 within 3 px against 28.3: the "
        "pixels at exactly 3 px are outside).",
        f"Command: `{args.command}`.",
    ]
    return "\n".join([main, "", "Nodes per cell of the pooling lattice (`grid_shape`), the "
                      "Monte-Carlo density of the pooling:", "", cells, "",
                      "Check of the formula:", "", check, "", *[f"- {n}" for n in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    add_threads_arg(p, "torch CPU threads (CPU only: no --device; nothing is timed)")
    add_publish_args(p, "presets 28 and 32 at rates 1 and 4, 200 points (for the tests)")
    p.set_defaults(doc=CONCEPTS)
    args = p.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "density", parse_args, run, report, argv)


if __name__ == "__main__":
    main()
