r"""Benchmark: the depthwise edge sum of :class:`KernelIntegralConv`'s graph path (composed,
chunked, compiled), and the training step of a model on sparse nodes of high-resolution
functions (issue 13's step cost).

Three measurements, every case interleaved with the others (:func:`_common.time_cases`), medians:

* **The edge sum alone**, :math:`\sum_{e \to i} \kappa_{\tau(e)} \odot x_{s(e)}` with the
  kernel tabulated per lattice offset, forward and backward, on the edges of a training batch of
  arm (iii): 16 graphs of 1,024 random pixels of :math:`128^2` renders, the radius of
  ``--preset`` (10 pixels of :math:`128^2` for preset 32). *Composition*: gather the kernel
  rows and the sources per edge, multiply, ``index_add_`` (the layer's path before; autograd
  keeps the per-edge tensors for the backward). *Fused*: :func:`pyg_infdiff.nn._edge_sum`'s
  chunked backend (cache-sized chunks, backward by hand, nothing per edge kept). *Compiled*:
  its compiled backend (one loop per sum, written by :func:`torch.compile`, run on one thread;
  the library's default, ``"auto"``, takes it at these sizes; the first call, which compiles,
  is a warm-up).
* **The training step** (loss, backward, clipping, AdamW; ``bench/subsampling.py``'s
  :class:`InfDiffStep`) of ``--preset`` on (i) every pixel of :math:`32^2` renders (no radius
  edges: the dense path, as ``bench/beyond_training.py`` trains it) and on (iii) 1,024 random
  pixels of :math:`128^2` renders (16× subsampled, radius edges: the graph path), the latter
  with the library's default sum (compiled), with the fused sum, with the composition, and
  with the noise drawn as a whole field
  (:meth:`~pyg_infdiff.diffusion.MollifiedDiffusion.draw_noise`) instead of the training draw on
  the lattice (:meth:`~pyg_infdiff.diffusion.MollifiedDiffusion.training_noise`), and with the
  kernel radius of ``--small-radius-px`` (2.5 pixels of 32², the main job's, about half the
  edges of preset 32's 3.57), and (i) with that radius too, the base of that ratio (the arms
  of ``bench/beyond_training.py --radius-px`` share one radius). Collation (subsample, radius
  graph) is a separate column, timed apart, from renders mollified once
  (:class:`~pyg_infdiff.data.MollifiedCache`, as the examples train on the built-in shapes).
* **The noise of one batch** of (i) and (iii), both ways.

Goal (issue 13): a step of (iii) costs at most 1.3× one of (i).

Run::

    python bench/edge_sum.py                 # prints the tables
    python bench/edge_sum.py --write         # also docs/benchmarks.md
    python bench/edge_sum.py --smoke         # tiny sizes, seconds (the tests)
"""
from __future__ import annotations

import argparse
from functools import partial
from unittest import mock

import torch
from _args import positive_float, positive_int
from _common import time_cases
from _infdiff import make_diffusion, unet_config
from _publish import add_publish_args, markdown_table
from _skeleton import add_threads_arg, bench_main, bench_parser, machine_note
from subsampling import InfDiffStep, make_model

from pyg_infdiff.data import ContinuousShapes, GraphCollator, MollifiedCache, ShapesConfig
from pyg_infdiff.diffusion import MollifiedDiffusion
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import UNetConfig
from pyg_infdiff.nn import kernel_conv
from pyg_infdiff.nn._edge_sum import (
    AUTO_MIN_ELEMENTS,
    composed_edge_sum,
    edge_sum,
    set_edge_sum_backend,
)
from pyg_infdiff.nn.stencil import LatticeStencil

TITLE = "## The edge sum and the step of sparse high-resolution training"
GOAL_RATIO = 1.3


def model_config(args: argparse.Namespace, radius_px: float | None = None) -> UNetConfig:
    r"""``--preset``'s configuration, with a kernel radius of :obj:`radius_px` pixels of
    ``--base`` when given."""
    config = unet_config(args.preset, 3)
    if radius_px is None:
        return config
    return UNetConfig.from_dict({**config.to_dict(), "radius": radius_px / args.base})


def collate(args: argparse.Namespace, side: int, rate: float, edges: bool,
            radius_px: float | None = None):
    r"""One training batch of :class:`ContinuousShapes` renders at :obj:`side`², mollified
    once in a :class:`MollifiedCache` and collated as in training (``examples/shapes_demo.py``
    and ``celebahq_train.py --dataset shapes``: subsample, radius edges of the model's radius),
    and the collator (for timing collation)."""
    config = model_config(args, radius_px)
    data = ContinuousShapes(args.batch_size, side, ShapesConfig(channels=3), seed=0)
    cache = MollifiedCache(data, make_diffusion(side).mollifier)
    items = [cache[i] for i in range(args.batch_size)]
    collator = GraphCollator(None, rate=rate, radius=config.radius if edges else None)
    return items, collator


def sum_cases(args: argparse.Namespace, channels: int) -> tuple[dict, int]:
    r"""The two edge sums on the edges of one batch of arm (iii), with :obj:`channels`."""
    items, collator = collate(args, args.high, args.rate, edges=True)
    batch = collator(items, generator=torch.Generator().manual_seed(0))
    src, dst = batch.edge_index
    index = LatticeIndex.from_data(batch)
    stencil = LatticeStencil(index.shape, unet_config(args.preset, 3).radius, "cpu",
                             torch.float32)
    tap = stencil.edge_taps(index.pixel, src, dst)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch.num_nodes, channels, generator=gen, requires_grad=True)
    table = torch.randn(stencil.offset.size(0) + 1, channels, generator=gen, requires_grad=True)
    grad = torch.randn(batch.num_nodes, channels, generator=gen)

    def case(fn, backend="auto"):
        def call():
            with backend_of(backend):
                fn(x, table, src, dst, batch.num_nodes, tap=tap).backward(grad)
            x.grad = table.grad = None
        return call

    return {"composition": case(composed_edge_sum), "fused": case(edge_sum, "fused"),
            "compiled": case(edge_sum, "compiled")}, src.numel()


class backend_of:
    r"""The edge sum's backend (:func:`set_edge_sum_backend`) inside the block."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __enter__(self) -> None:
        self.previous = set_edge_sum_backend(self.backend)

    def __exit__(self, *exc) -> None:
        set_edge_sum_backend(self.previous)


def step_cases(args: argparse.Namespace) -> tuple[dict, dict]:
    r"""The training steps of (i) and (iii) (the library's default sum, fused, composition, the
    noise drawn as a function, and with the smaller radius of ``--small-radius-px``, default
    and fused), and their collations, by the name of the step's arm."""
    steps, collations = {}, {}
    small, small_base = small_arm(args), small_base_arm(args)
    for name, side, rate, edges, radius_px in (
            ("(i)", args.base, 1.0, False, None), ("(iii)", args.high, args.rate, True, None),
            (small_base, args.base, 1.0, False, args.small_radius_px),
            (small, args.high, args.rate, True, args.small_radius_px)):
        diffusion = make_diffusion(side)
        model, optimizer = make_model(model_config(args, radius_px), "cpu")
        items, collator = collate(args, side, rate, edges, radius_px)
        batch = collator(items, generator=torch.Generator().manual_seed(0))
        steps[name] = InfDiffStep(model, diffusion, batch, optimizer,
                                  torch.Generator().manual_seed(0))
        collations[name] = lambda c=collator, it=items: c(it)
    default = steps["(iii)"]

    def fused(step=default):
        with backend_of("fused"):
            step()

    def unfused():
        with mock.patch.object(kernel_conv, "edge_sum", composed_edge_sum):
            default()

    def function_noise():  # the noise drawn as a whole field, as before training_noise
        with mock.patch.object(MollifiedDiffusion, "training_noise", _draw_noise):
            default()

    return {"(i)": steps["(i)"], "(iii)": default, "(iii) fused": fused,
            "(iii) composition": unfused, "(iii), noise as a function": function_noise,
            small_base: steps[small_base], small: steps[small],
            f"{small} fused": partial(fused, steps[small])}, collations


def small_arm(args: argparse.Namespace) -> str:
    return f"(iii) radius {args.small_radius_px:g} px"


def small_base_arm(args: argparse.Namespace) -> str:
    r"""(i) with the smaller radius: the base of the smaller radius's ratio (the arms of
    ``bench/beyond_training.py --radius-px`` all train with one radius)."""
    return f"(i) radius {args.small_radius_px:g} px"


def arm_of(step: str) -> str:
    r"""The arm (collation) of a step case: its name up to "fused", "composition" or ","."""
    for word in (" fused", " composition", ","):
        step = step.split(word)[0]
    return step


def _draw_noise(diffusion: MollifiedDiffusion, *args, **kwargs):
    return diffusion.draw_noise(*args, **kwargs)


def noise_cases(args: argparse.Namespace) -> dict:
    r"""The noise of one training batch of (i) and (iii): the field drawn and read at the
    nodes (:meth:`~MollifiedDiffusion.draw_noise`) and the lattice draw of
    :meth:`~MollifiedDiffusion.training_noise`."""
    cases = {}
    for name, side, rate in (("(i)", args.base, 1.0), ("(iii)", args.high, args.rate)):
        diffusion = make_diffusion(side)
        items, collator = collate(args, side, rate, edges=False)
        batch = collator(items, generator=torch.Generator().manual_seed(0))
        index = LatticeIndex.from_data(batch)
        call = (batch.num_graphs, batch.x.size(1), batch.pos, batch.batch, index)
        gen = torch.Generator().manual_seed(0)
        cases[f"{name} function"] = lambda d=diffusion, c=call, g=gen: d.draw_noise(*c, g)
        cases[f"{name} lattice"] = lambda d=diffusion, c=call, g=gen: d.training_noise(*c, g)
    return cases


def run(args: argparse.Namespace) -> dict:
    sums = {}
    for channels in args.channels:
        cases, num_edges = sum_cases(args, channels)
        timing = time_cases(cases, args.repeats, warmup=1)
        sums[channels] = {k: 1e3 * t.median for k, t in timing.items()}
    steps, collations = step_cases(args)
    step_ms = {k: 1e3 * t.median for k, t in time_cases(steps, args.repeats, warmup=2).items()}
    collate_ms = {k: 1e3 * t.median
                  for k, t in time_cases(collations, args.repeats, warmup=1).items()}
    noise_ms = {k: 1e3 * t.median
                for k, t in time_cases(noise_cases(args), args.repeats, warmup=1).items()}
    return dict(sums=sums, num_edges=num_edges, steps=step_ms, collate=collate_ms, noise=noise_ms,
                nodes=steps["(iii)"].nodes_per_graph,
                edges_per_graph=steps["(iii)"].edges_per_graph,
                small_edges_per_graph=steps[small_arm(args)].edges_per_graph,
                radius_px=model_config(args).radius * args.base,
                batch_elements=(steps["(iii)"].edges_per_graph * args.batch_size
                                * model_config(args).operator_channels))


def report(args: argparse.Namespace, result: dict) -> str:
    sums, steps, coll, noise = result["sums"], result["steps"], result["collate"], result["noise"]
    sum_rows = [[f"{c}", f"{t['composition']:.1f}", f"{t['fused']:.1f}",
                 f"{t['compiled']:.1f}", f"{t['composition'] / t['fused']:.2f}×",
                 f"{t['fused'] / t['compiled']:.2f}×"] for c, t in sums.items()]
    base = steps["(i)"] + coll["(i)"]
    step_rows = []
    for name, ms in steps.items():
        arm = arm_of(name)
        total = ms + coll[arm]
        step_rows.append([name, f"{ms:.0f}", f"{coll[arm]:.0f}", f"{ms / steps['(i)']:.2f}×",
                          f"{total / base:.2f}×"])
    ratio = (steps["(iii)"] + coll["(iii)"]) / base
    verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
    small = small_arm(args)
    small_base = small_base_arm(args)
    small_ratio = (steps[small] + coll[small]) / (steps[small_base] + coll[small_base])
    return "\n".join([
        TITLE, "",
        f"The edge sum alone, forward + backward, on the {result['num_edges']:,} edges of one "
        f"batch of (iii) (ms):", "",
        markdown_table(["channels", "composition", "fused", "compiled",
                        "fused vs composition", "compiled vs fused"], sum_rows), "",
        f"The training step of `--preset {args.preset}`, batch {args.batch_size} (ms):", "",
        markdown_table(["arm", "step", "collation", "step vs (i)", "step + collation vs (i)"],
                       step_rows), "",
        "The noise of one training batch (ms): the field drawn and read at the nodes "
        "(`draw_noise`, as sampling draws it) and the lattice draw of `training_noise` "
        "(`MollifiedNoise.sample_lattice`, what a training step draws):", "",
        markdown_table(["arm", "as a function", "on the lattice", "speed-up"],
                       [[arm, f"{noise[f'{arm} function']:.1f}", f"{noise[f'{arm} lattice']:.1f}",
                         f"{noise[f'{arm} function'] / noise[f'{arm} lattice']:.1f}×"]
                        for arm in ("(i)", "(iii)")]), "",
        f"- (i): every pixel of {args.base}² renders, dense path. (iii): "
        f"{result['nodes']:,} random pixels of {args.high}² renders ({args.rate:g}× "
        f"subsampled), {result['edges_per_graph']:,} radius edges per graph, graph path, "
        f"with the library's default edge sum (`\"auto\"`: compiled loops from "
        f"{AUTO_MIN_ELEMENTS:,} edges × channels, here {result['batch_elements']:,}); 'fused': "
        f"with the chunked sum; 'noise as a function': with the noise of `draw_noise` "
        f"instead. Kernel radius "
        f"{result['radius_px']:.3g} pixels of {args.base}² (the preset's); "
        f"{small_arm(args)}: as (iii) with a radius of {args.small_radius_px:g} pixels "
        f"(`examples/shapes_demo.py`'s), {result['small_edges_per_graph']:,} edges per graph; "
        f"{small_base}: (i) with that radius (its dense stencil shrinks too).",
        f"- Goal (issue 13): a step of (iii), collation included, at most {GOAL_RATIO:g}× one "
        f"of (i): {ratio:.2f}× — **{verdict}** (with the radius of {args.small_radius_px:g} "
        f"pixels in both arms: {small_ratio:.2f}×, "
        f"**{'met' if small_ratio <= GOAL_RATIO else 'NOT met'}**)",
        f"- Medians of {args.repeats} repeats, cases interleaved. " + machine_note(result),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__, epilog="CPU only: the chunked sum is the layer's CPU path (off the "
                     "CPU it runs in one chunk), so there is no --device.")
    p.add_argument("--preset", default="32", help="UNetConfig preset ('tiny' for the smoke run)")
    p.add_argument("--base", type=positive_int, default=32, help="side of (i)'s lattice")
    p.add_argument("--high", type=positive_int, default=128, help="side of (iii)'s renders")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--channels", type=positive_int, nargs="+", default=[32, 64],
                   help="channels of the edge-sum rows (preset 32: 32 and 64)")
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--small-radius-px", type=positive_float, default=2.5,
                   help="kernel radius (pixels of --base) of the extra (iii) arm: 2.5, the main "
                   "job's (examples/shapes_demo.py) and the presets' before 2026-12-07")
    add_threads_arg(p)
    add_publish_args(p, "preset 'tiny' at 16² and 32², batch 2, one repeat (for the tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.base, args.high, args.batch_size = "tiny", 16, 32, 2
        args.channels, args.repeats = [8], 1
    args.preset = args.preset if args.preset == "tiny" else int(args.preset)
    args.rate = (args.high / args.base) ** 2
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "edge_sum", parse_args, run, report, argv, stamp=True)


if __name__ == "__main__":
    main()
