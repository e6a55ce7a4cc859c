r"""Benchmark (issue 13, #3): what the main job learns from its data in a CPU budget, random
colours (``ShapesConfig.simple()``) against five colours on light grey (``ShapesConfig.demo()``,
the demo's default), at equal optimiser steps.

Each arm runs the README's main job itself, ``examples/shapes_demo.py`` (x₀ prediction with
Min-SNR-5, preset 32, 1,024 random pixels of :math:`128^2` renders), for ``--steps`` steps with
``--shapes`` as its only difference: both draw their geometry from the same distribution (one
to three large opaque discs, rectangles and polygons on a flat background), ``simple`` in
random colours on a random background, ``demo`` in the five colours of
:data:`~pyg_infdiff.data.DEMO_PALETTE` on light grey. The arms train side by side, one torch
thread each. Then, with the EMA weights of each arm:

* **samples**: ``--num-samples`` samples on the :math:`32^2` lattice (the training node count;
  DDIM, :math:`\eta = 0`, ``--sample-steps`` steps, the same seeds in both arms), as drawn
  (mollified), scored against as many held-out renders *of the arm's own distribution* at
  :math:`32^2` (dataset seed ``_scoring.MAIN_JOB_HELD_OUT_SEED``) with the multi-scale SWD and
  KID (``--metrics swd`` skips KID). The two arms have different references, so the scores say
  how near each model came to its own data, not which data set is "better";
* **the figure**: the demo's own 8 samples of each arm at :math:`128^2` (read through 1,024
  random pixels, as the demo draws them), above held-out renders of each distribution.

Writes a table into ``docs/benchmarks.md`` and the figure
(``docs/_static/figures/bench_demo_data.png``, a JPEG when the PNG is over 200 KB). Arms are
cached in ``--out`` (``arm_<shapes>/`` is the demo's run folder, ``arm_<shapes>.json`` its
scores); a rerun skips finished arms. About 11 minutes of training at the defaults (both arms
at once), then ~3 min per arm to sample and score (17 min in all, measured). Run::

    python bench/demo_data.py --steps 1000 --write
    python bench/demo_data.py --smoke --out /tmp/dd     # a few steps, SWD (tests)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _args import positive_int
from _common import ROOT, cached_with_settings, machine_description
from _infdiff import (
    add_main_job_arm_args,
    main_job_argv,
    main_job_arm_smoke,
    sample_main_job_arm,
)
from _publish import compact_figure, markdown_table
from _scoring import inception_metrics, kid_cell, main_job_held_out, swd_metrics
from _skeleton import bench_main, bench_parser, figure_and_footer, run_jobs

from pyg_infdiff.data.images import save_rows

OUT = ROOT / "bench" / "_out" / "demo_data"
FIGURE = "bench_demo_data.png"
SIDE = 32
ARMS = ("simple", "demo")
LABELS = {"simple": "random colours (simple)", "demo": "five colours (demo)"}


def arm_dir(args: argparse.Namespace, shapes: str) -> Path:
    return args.out / f"arm_{shapes}"


def settings_of(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in (
        "steps", "num_samples", "sample_steps", "metrics", "threads", "seed", "smoke")}


def cached(args: argparse.Namespace, shapes: str) -> dict | None:
    return cached_with_settings(args.out / f"arm_{shapes}.json", settings_of(args))


def sample_arm(args: argparse.Namespace, shapes: str) -> dict:
    r"""Samples one trained arm at :data:`SIDE`²; its samples go to ``"samples"``."""
    _, drawn = sample_main_job_arm(arm_dir(args, shapes), args, SIDE)
    return {"shapes": shapes, **drawn, "settings": settings_of(args)}


def run(args: argparse.Namespace) -> dict:
    r"""Trains the unfinished arms side by side, then samples and scores them one by one,
    each against held-out renders of its own distribution."""
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [shapes for shapes in ARMS if cached(args, shapes) is None]
    budget = ["--steps", str(args.steps)]
    run_jobs({arm_dir(args, s).name: main_job_argv(arm_dir(args, s), args, budget=budget,
                                                   shapes=s) for s in todo},
             poll=0.2 if args.smoke else 2.0, what="demo")
    for shapes in todo:
        arm = sample_arm(args, shapes)
        fake = {shapes: arm.pop("samples")}
        real = main_job_held_out(args.num_samples, SIDE, shapes)
        arm["metrics"] = swd_metrics(fake, real)[shapes]
        if args.metrics == "kid":
            values = inception_metrics(fake, real, real.size(0), None, seed=args.seed)[shapes]
            arm["metrics"].update(kid=values["kid"], kid_std=values["kid_std"])
        (args.out / f"arm_{shapes}.json").write_text(json.dumps(arm, indent=2))
    return {"arms": {shapes: cached(args, shapes) for shapes in ARMS}, "device": "cpu",
            "machine": machine_description("cpu")}


def figure(args: argparse.Namespace, result: dict) -> Path:
    rows = []
    for shapes in result["arms"]:
        drawn = torch.load(arm_dir(args, shapes) / "samples.pt", weights_only=True)
        side = max(int(key.split("x")[-1]) for key in drawn)
        rows.append((f"{shapes}: samples {side}x{side}", drawn[f"sample {side}x{side}"]))
        rows.append((f"{shapes}: held-out data", main_job_held_out(8, side, shapes)))
    return compact_figure(save_rows(rows, args.figures / FIGURE, cell_size=96))


def report(args: argparse.Namespace, result: dict, picture: Path | None = None) -> str:
    arms = result["arms"]
    kid = all("kid" in arm["metrics"] for arm in arms.values())
    rows = [[LABELS[shapes], f"{arm['steps']:,}", f"{arm['train_seconds'] / 60:.1f}",
             f"{arm['metrics']['swd']:.1f}", kid_cell(arm["metrics"]) if kid else "—"]
            for shapes, arm in arms.items()]
    s = next(iter(arms.values()))["settings"]
    budget = "--smoke" if s["smoke"] else f"--steps {s['steps']}"
    lines = [
        "## The main job's data: random colours against five colours, equal steps", "",
        markdown_table(["shapes", "steps", "training (min)", "SWD ×10³ against own data",
                        "KID ×10³ against own data"], rows), "",
        f"- Arms: `examples/shapes_demo.py --shapes S {budget} --threads {s['threads']}` (the "
        "README's main job: x₀ prediction with Min-SNR-5, preset 32, 1,024 random pixels of "
        "128² renders), side by side, one torch thread each. Both draw their geometry from "
        "the same distribution (`ShapesConfig.simple()`'s: one to three large opaque discs, "
        "rectangles and polygons on a flat background); `simple` colours shapes and "
        "background at random, `demo` (`ShapesConfig.demo()`, the demo's default) in five "
        "colours on light grey. The colour draws differ, so an item seed gives other shapes "
        "in the two.",
        f"- Scores: {s['num_samples']} samples per arm on the 32² lattice (EMA weights, DDIM "
        f"η = 0, {s['sample_steps']} steps, the same seeds), as drawn (mollified), each "
        f"against {s['num_samples']} held-out renders of its own distribution at 32². The "
        "references differ: a score says how near a model came to its own data, not which "
        "data set is better.",
    ]
    lines += figure_and_footer(args, result, picture, "The demo's own 8 samples of each arm at "
                               "128², read through 1,024 random pixels, above held-out renders")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--steps", type=positive_int, default=1000,
                   help="optimiser steps of every arm (they train at once)")
    p.add_argument("--metrics", choices=["kid", "swd"], default="kid")
    add_main_job_arm_args(p, OUT, num_samples=128)
    args = p.parse_args(argv)
    main_job_arm_smoke(args)
    if args.smoke:
        args.metrics = "swd"
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "demo_data", parse_args, run, report, argv, figure=figure)


if __name__ == "__main__":
    main()
