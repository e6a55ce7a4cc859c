r"""Benchmark (issue 13, opt-in): when to stop reading through the training density, and
how stochastic the sampler should be.

A model trained on :math:`M` random nodes per function samples a denser lattice through a
context of :math:`M` nodes (``sample(..., context=...)``): each pixel then reads the context
alone and finishes on its own, so edges finer than the context's spacing come out ragged. With
``context_until=T`` the steps from timestep :math:`T` down read the lattice itself instead.
This script samples the same seeds of one trained model (the README's main job by default) on
one lattice (``--side``, 128 by default) for each :math:`T` of ``--untils`` (``-1``: the
context to the end) and each DDIM :math:`\eta` of ``--etas`` (0: deterministic, 1: as
stochastic as DDPM; every fresh noise is a whole mollified field, so the context nodes follow
the same chain at every resolution either way), and on the plain lattice (no context at all,
:math:`\eta = 0`), and scores each set against
held-out renders of the model's training shapes: multi-scale SWD, KID on the FID Inception
features (``--no-kid`` skips it) and the detail ratio
(:func:`pyg_infdiff.metrics.detail_ratio`, 16-64 cycles per unit: 1 is as much energy finer
than a 32² lattice resolves as the renders have, 0 is blurred; ragged or speckled edges also
raise it).

    python bench/context_until.py --checkpoint runs/shapes_demo --write
    python bench/context_until.py --checkpoint runs/shapes_demo --untils=-1 --etas 0,1 \
        --section context_eta --write
    python bench/context_until.py --smoke --out /tmp/cu     # tiny model, seconds (the tests)

On this machine: about 5 CPU seconds per 128² sample, so 64 seeds × 6 readings take about half
an hour on one thread.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _args import positive_int
from _common import ROOT, machine_description, relative_to_root
from _infdiff import FIGURES, Recipe, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _scoring import (
    MAIN_JOB_BENCH_SHAPES,
    MAIN_JOB_HELD_OUT_SEED,
    draw_samples,
    inception_metrics,
    kid_cell,
    main_job_held_out,
    swd_metrics,
)
from _skeleton import add_threads_arg, bench_main, bench_parser, report_footer

from pyg_infdiff.data import ContinuousShapes, ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.metrics import detail_ratio
from pyg_infdiff.training import Pretrained, load_pretrained

OUT = ROOT / "bench" / "_out" / "context_until"


def detail_band(side: int) -> tuple[int, int]:
    r"""The detail band at :obj:`side`: finer than a quarter of its resolution resolves, up to
    its Nyquist frequency (16-64 cycles per unit at 128², as ``bench/noise_width.py``)."""
    return side // 8, side // 2 + 1

PLAIN = "plain lattice (no context)"


def fmt(eta: float) -> str:
    r"""An :math:`\eta` as the tables and row names write it (``0``, ``0.5``, ``1``)."""
    return f"{eta:g}"


def get_model(args: argparse.Namespace) -> Pretrained:
    r"""The model of ``--checkpoint``, or with ``--smoke`` a tiny one trained for seconds on
    nodes of 32² renders at rate 4 (so that 64² lattices read a context)."""
    if args.checkpoint is not None:
        return load_pretrained(args.checkpoint, weights="ema")
    recipe = Recipe(parametrization="x0", batch_size=4, warmup=5, checkpoint_every=5)
    data = ContinuousShapes(1000, 32, ShapesConfig.named(MAIN_JOB_BENCH_SHAPES), seed=args.seed)
    trained = train_infdiff(args.out / "train", data, unet_config("tiny"), 32, 4.0, 0.05, recipe,
                            data_name="shapes", seed=args.seed)
    return load_pretrained(trained["checkpoint"], weights="ema")


def shapes_of(pretrained: Pretrained) -> str:
    r"""The name (:meth:`ShapesConfig.named`) of the shapes the model was trained on: the main
    job records it; runs from before it did were on ``simple``."""
    return pretrained.info.get("data", {}).get("shapes", "simple")


def run(args: argparse.Namespace) -> dict:
    pretrained = get_model(args)
    model, diffusion, side = pretrained.model, pretrained.diffusion, args.side
    context = pretrained.context_for(side * side)
    if context is None:
        raise SystemExit(f"the model's training nodes do not need a context at {side}²: "
                         "nothing to compare")
    readings: dict[str, dict] = {PLAIN: dict(context=None)}
    for until in args.untils:
        for eta in args.etas:
            name = "context to the end" if until < 0 else f"context, lattice from t = {until}"
            name += f", η = {fmt(eta)}" if args.etas != [0.0] else ""
            readings[name] = dict(context=context, context_until=until, eta=eta)
    images, seconds = {}, {}
    for name, kwargs in readings.items():
        start = time.process_time()
        images[name] = draw_samples(model, diffusion, args.num, side, 3, args.steps, args.batch,
                                    args.seed + 1, torch.device("cpu"), **kwargs)
        seconds[name] = (time.process_time() - start) / args.num
        print(f"{name}: {seconds[name]:.1f} CPU s per sample", flush=True)
    real = main_job_held_out(args.num, side, shapes_of(pretrained))
    scores = swd_metrics(images, real, args.seed)
    if args.kid:
        for name, m in inception_metrics(images, real, args.num, None, seed=args.seed).items():
            scores[name].update(m)
    for name in images:
        scores[name]["detail"] = detail_ratio(images[name], real, *detail_band(side))
        scores[name]["cpu_seconds"] = seconds[name]
    rows = [(name, images[name][:8]) for name in images] + [("held-out renders", real[:8])]
    return {"scores": scores, "figure_rows": rows, "checkpoint": str(pretrained.path),
            "step": pretrained.step, "data": pretrained.info.get("data", {}),
            "context": context, "device": "cpu", "machine": machine_description("cpu")}


def report(args: argparse.Namespace, result: dict, figure: Path | None = None) -> str:
    rows = []
    for name, s in result["scores"].items():
        rows.append([name, f"{s['swd']:.1f}", kid_cell(s), f"{s['detail']:.2f}",
                     f"{s['cpu_seconds']:.1f}"])
    data, context, band = result["data"], result["context"], detail_band(args.side)
    lines = [
        f"## Reading a {args.side}² lattice through the training density, and when to stop"
        if args.etas == [0.0] else f"## Reading a {args.side}² lattice through the training "
        f"density: deterministic or stochastic DDIM (η = {', '.join(map(fmt, args.etas))})", "",
        markdown_table(["reading", "SWD ×10³", "KID ×10³", "detail (renders: 1)",
                        "CPU s / sample"], rows), "",
    ]
    if figure is not None:
        lines += [f"![The first 8 seeds of every reading, above held-out renders]"
                  f"(_static/figures/{figure.name})", ""]
    lines += [
        f"- Model: `{relative_to_root(result['checkpoint'])}` (step {result['step']}), EMA "
        f"weights, trained on {data.get('subsample', '?')}× subsampled "
        f"{data.get('resolution', '?')}² renders of the shapes "
        f"({data.get('shapes', 'simple')}); context: {getattr(context, 'num', '?'):,} random "
        f"pixels of its training lattice per sample.",
        f"- Samples: {args.num} seeds, the same in every reading (DDIM, {args.steps} steps; "
        f"η = {', '.join(map(fmt, args.etas))}, the plain lattice η = 0), as "
        f"sampled (mollified). References: {args.num} renders of held-out items "
        f"(dataset seed {MAIN_JOB_HELD_OUT_SEED}). Detail: energy at {band[0]}–{band[1] - 1} "
        "cycles per unit over the renders' "
        "(`pyg_infdiff.metrics.detail_ratio`).",
        *report_footer(args, result),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file or run folder of a model trained on subsampled shapes "
                   "(the main job's runs/shapes_demo)")
    p.add_argument("--untils", default="-1,30,60,150,300",
                   help="timesteps from which the lattice reads itself (-1: never)")
    p.add_argument("--etas", default="0",
                   help="DDIM stochasticities of the context readings (0: deterministic)")
    p.add_argument("--section", default="context_until",
                   help="the section of docs/benchmarks.md to write (and its figure's name)")
    p.add_argument("--side", type=positive_int, default=128, help="the lattice sampled")
    p.add_argument("--num", type=positive_int, default=64, help="seeds per reading")
    p.add_argument("--batch", type=positive_int, default=8, help="samples per sampling call")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--no-kid", dest="kid", action="store_false",
                   help="skip KID (needs the FID Inception weights)")
    p.add_argument("--out", type=Path, default=OUT, help="folder of the --smoke model")
    p.add_argument("--seed", type=int, default=0)
    add_threads_arg(p, "torch CPU threads")
    add_publish_args(p, "tiny model trained for 3 s, 64², 4 seeds, 2 steps, no KID (the tests)",
                     figures=FIGURES)
    args = p.parse_args(argv)
    if args.smoke:
        args.side, args.num, args.batch, args.steps, args.kid = 64, 4, 4, 2, False
        args.untils = "-1,500"
    elif args.checkpoint is None:
        p.error("pass --checkpoint (e.g. runs/shapes_demo, the main job's run)")
    args.untils = [int(u) for u in args.untils.split(",")]
    args.etas = [float(eta) for eta in args.etas.split(",")]
    if min(args.etas) < 0:
        p.error("--etas must be non-negative")
    return args


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    return compact_figure(save_rows(result["figure_rows"],
                                    args.figures / f"bench_{args.section}.png", cell_size=96))


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, lambda args: args.section, parse_args, run, report, argv,
                      figure=draw_figure)


if __name__ == "__main__":
    main()
