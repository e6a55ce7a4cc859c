r"""Benchmark (issue 13, #3): how the main job's samples improve with training time, and what a
dense DDPM of the same size learns from the same images in the same time.

The main job (``bash scripts/demo.sh``) trains for 10 minutes and its samples are still colour
blobs. This benchmark says whether that is the budget or the model, with two arms trained side
by side for ``--minutes`` of wall-clock time, one torch thread each:

* **∞-Diff**: the README's main job itself, ``examples/shapes_demo.py`` (x₀ prediction with
  Min-SNR-5, preset 32, 1,024 random pixels of :math:`128^2` renders of
  ``ShapesConfig.simple()``), keeping every ``--checkpoint-every``-th step's checkpoint;
* **dense DDPM**: ``diffusers``' ``UNet2DModel`` of the same size (``--dense-params``) with
  epsilon prediction (``bench/train_dense_ddpm.py``), trained on :math:`32^2` renders of the
  same 2,048 items the main job caches (dataset seed ``--seed``). Its learning rate and batch
  are those the tuned probe of ``bench/dense_tuning.py`` chose for it on Fashion-MNIST
  (5e-3, 32); warm-up, EMA and constant learning rate as the main job.

At each of ``--snapshots`` minutes it takes the EMA weights of each arm (for ∞-Diff the last
checkpoint saved by then) and draws ``--num-samples`` samples on the :math:`32^2` lattice
(DDIM, :math:`\eta = 0`, ``--sample-steps`` steps, the same seeds; ∞-Diff read through 1,024
random :math:`128^2` pixels, as the demo's picture), scored against as many held-out renders
at :math:`32^2` (dataset seed 777): multi-scale SWD, KID on the FID Inception features
(``--no-kid`` skips it) and the detail ratio (energy at 8–16 cycles per unit, finer than a
:math:`16^2` lattice resolves, over the renders': 1 is as sharp as the data, blobs score low).

Writes a table into ``docs/benchmarks.md`` and a figure of 8 samples per arm and snapshot
(``docs/_static/figures/bench_training_horizon.jpg``). The runs are cached in ``--out`` (a
rerun scores them again without training; delete the folder to start over). About
``--minutes`` of training, then ~3 min per snapshot to sample and score on one core
(``--score-threads``: all cores by default). Run::

    python bench/training_horizon.py --minutes 40 --snapshots 5,10,20,40 --write
    python bench/training_horizon.py --smoke --out /tmp/th     # seconds, SWD only (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _args import positive_float, positive_int
from _common import ROOT
from _infdiff import FIGURES, main_job_argv
from _publish import add_publish_args, compact_figure, markdown_table
from _scoring import (
    MAIN_JOB_BENCH_SHAPES,
    draw_samples,
    inception_metrics,
    kid_cell,
    main_job_held_out,
    renders,
    swd_metrics,
)
from _skeleton import add_threads_arg, bench_main, bench_parser, figure_and_footer, run_jobs
from baseline_ddpm import dense_sample, make_scheduler
from tqdm.auto import tqdm
from train_dense_ddpm import DenseRecipe, train_dense

from pyg_infdiff.data import ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import LatticeSubset
from pyg_infdiff.metrics import detail_ratio
from pyg_infdiff.training import load_pretrained

OUT = ROOT / "bench" / "_out" / "training_horizon"
FIGURE = "bench_training_horizon.png"
SIDE = 32
#: Items the main job renders once and trains on (its --cache-items): the dense arm's data.
TRAIN_ITEMS = 2048
#: The detail band at 32²: finer than a 16² lattice resolves, up to the 32² Nyquist frequency.
DETAIL_BAND = (8, 17)
#: The main job's training context: 1,024 random pixels of its 128² renders.
CONTEXT = LatticeSubset((128, 128), 1024)
#: The main job's --batch-size (its --smoke: 4).
MAIN_JOB_BATCH = 16
ARMS = {"infdiff": "∞-Diff (the main job)", "dense": "dense DDPM (diffusers)"}
#: The arms' names in the figure (its font has no ∞ nor ²).
FIGURE_NAMES = {"infdiff": "main job", "dense": "dense DDPM"}


def dense_recipe(args: argparse.Namespace) -> DenseRecipe:
    return DenseRecipe(batch_size=args.dense_batch, lr=args.dense_lr,
                       warmup=5 if args.smoke else 100, schedule="constant", ema="warmup",
                       ema_decay=0.995)


def dense_worker(args: argparse.Namespace) -> dict:
    r"""The dense arm, in its own process: trains on the main job's items rendered at 32²."""
    images = renders(8 if args.smoke else TRAIN_ITEMS, SIDE, 3, args.seed,
                     ShapesConfig.named(MAIN_JOB_BENCH_SHAPES))
    _, result = train_dense(args.out / "dense", dense_recipe(args), args.minutes,
                            target_params=args.dense_params, seed=args.seed, clock="wall",
                            images=images, snapshot_minutes=args.snapshots)
    return result


def train(args: argparse.Namespace) -> None:
    r"""Trains the unfinished arms side by side (a finished main job has written its picture,
    a finished dense run its ``train.json``)."""
    jobs = {}
    if not (args.out / "infdiff" / "samples.png").exists():
        jobs["infdiff"] = main_job_argv(
            args.out / "infdiff", args, "--keep-checkpoints", "0", "--checkpoint-every",
            str(args.checkpoint_every), budget=["--minutes", f"{args.minutes:g}"])
    if not (args.out / "dense" / "train.json").exists():
        jobs["dense"] = [sys.executable, str(Path(__file__).resolve()), "--worker",
                         *args.passthrough]
    args.out.mkdir(parents=True, exist_ok=True)
    run_jobs(jobs, logs=args.out, poll=0.2 if args.smoke else 2.0, what="arm")


def infdiff_snapshots(folder: Path, minutes: list[float]) -> list[dict]:
    r"""For each of :obj:`minutes`, the last checkpoint of the main job in :obj:`folder` saved
    by then (the first one if none was), from the elapsed times of its log."""
    elapsed = {}
    for line in (folder / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "train":
            elapsed[entry["step"]] = entry["elapsed_s"]
    logged = sorted(elapsed)

    def seconds_at(step: int) -> float:  # the elapsed time of the last logged step up to it
        before = [s for s in logged if s <= step]
        return elapsed[before[-1]] if before else 0.0

    checkpoints = sorted(folder.glob("checkpoints/ckpt_*.pt"))
    steps = [int(path.stem.split("_")[1]) for path in checkpoints]
    out = []
    for minute in minutes:
        due = [i for i, step in enumerate(steps) if seconds_at(step) <= 60 * minute]
        i = due[-1] if due else 0
        out.append({"minutes": minute, "steps": steps[i], "seconds": seconds_at(steps[i]),
                    "path": str(checkpoints[i])})
    return out


def draw(args: argparse.Namespace, arm: str, snapshot: dict) -> torch.Tensor:
    r"""``--num-samples`` samples at 32² of one arm's snapshot, the same seeds for both arms."""
    if arm == "infdiff":
        pretrained = load_pretrained(snapshot["path"], weights="ema")
        return draw_samples(pretrained.model.eval(), pretrained.diffusion, args.num_samples,
                            SIDE, 3, args.sample_steps, args.sample_batch, args.seed + 1,
                            torch.device("cpu"), context=CONTEXT)
    from diffusers import UNet2DModel
    from diffusers.utils import logging

    logging.set_verbosity_error()  # not the advice to install accelerate at every load
    model = UNet2DModel.from_pretrained(snapshot["path"]).eval()
    return dense_sample(model, make_scheduler("ddim"), args.num_samples, SIDE,
                        args.sample_steps, torch.Generator().manual_seed(args.seed + 1),
                        batch_size=args.sample_batch).float().clamp(-1, 1)


def run(args: argparse.Namespace) -> dict:
    r"""Trains the arms, then samples and scores every snapshot of both."""
    train(args)
    torch.set_num_threads(args.score_threads)  # the arms are done: sample on every core
    dense = json.loads((args.out / "dense" / "train.json").read_text())
    snapshots = {"infdiff": infdiff_snapshots(args.out / "infdiff", args.snapshots),
                 "dense": dense["snapshots"]}
    real, fakes, rows = main_job_held_out(args.num_samples, SIDE), {}, []
    todo = [(arm, snap) for arm, taken in snapshots.items() for snap in taken]
    for arm, snap in tqdm(todo, desc="sampling the snapshots", unit="snapshot",
                          disable=args.smoke):
        start = time.perf_counter()
        images = draw(args, arm, snap)
        snap["sample_seconds"] = round(time.perf_counter() - start, 1)
        fakes[f"{arm}@{snap['minutes']:g}"] = images
        rows.append((f"{FIGURE_NAMES[arm]}, {snap['minutes']:g} min", images[:8]))
    scores = swd_metrics(fakes, real, seed=args.seed)
    if args.kid:
        for name, values in inception_metrics(fakes, real, real.size(0), None,
                                              seed=args.seed).items():
            scores[name].update(values)
    for name, images in fakes.items():
        scores[name]["detail"] = detail_ratio(images, real, *DETAIL_BAND)
    for arm, taken in snapshots.items():
        for snap in taken:
            snap["scores"] = scores[f"{arm}@{snap['minutes']:g}"]
    last = snapshots["infdiff"][-1]
    pretrained = load_pretrained(last["path"], weights="ema")
    wide = draw_samples(pretrained.model.eval(), pretrained.diffusion, 8, 128, 3,
                        args.sample_steps, 8, args.seed + 1, torch.device("cpu"),
                        context=CONTEXT)
    rows.append((f"{FIGURE_NAMES['infdiff']}, {last['minutes']:g} min, 128x128", wide))
    rows.append(("held-out renders", main_job_held_out(8, SIDE)))
    torch.save(rows, args.out / "figure_rows.pt")
    return {"snapshots": snapshots, "dense_parameters": dense["parameters"],
            "infdiff_parameters": sum(p.numel() for p in pretrained.model.parameters()),
            "device": "cpu"}


def figure(args: argparse.Namespace, result: dict) -> Path:
    rows = torch.load(args.out / "figure_rows.pt")
    path = save_rows(rows, args.figures / FIGURE, cell_size=64)
    return compact_figure(path)


def report(args: argparse.Namespace, result: dict, picture: Path | None = None) -> str:
    lines = ["## The main job against training time, and a dense DDPM on the same images", ""]
    rows = []
    for arm, taken in result["snapshots"].items():
        batch = args.dense_batch if arm == "dense" else 4 if args.smoke else MAIN_JOB_BATCH
        for snap in taken:
            s = snap["scores"]
            rows.append([ARMS[arm], f"{snap['minutes']:g}", f"{snap['seconds'] / 60:.1f}",
                         f"{snap['steps']:,}", f"{snap['steps'] * batch:,}",
                         f"{s['swd']:.1f}", kid_cell(s) if "kid" in s else "—",
                         f"{s['detail']:.2f}"])
    lines += [markdown_table(["arm", "snapshot (min)", "trained (min)", "steps", "images seen",
                              "SWD ×10³", "KID ×10³", "detail"], rows), ""]
    budget = "--smoke" if args.smoke else f"--minutes {args.minutes:g}"
    lines += [
        f"- ∞-Diff: `examples/shapes_demo.py {budget} --threads {args.threads} "
        f"--keep-checkpoints 0 --checkpoint-every {args.checkpoint_every}` (the README's main "
        f"job, {result['infdiff_parameters']:,} parameters, batch {MAIN_JOB_BATCH}); a "
        "snapshot is the last checkpoint saved by its time (EMA weights).",
        f"- Dense DDPM: `UNet2DModel`, {result['dense_parameters']:,} parameters, epsilon "
        f"prediction, lr {args.dense_lr:g}, batch {args.dense_batch} (the tuned probe's choice "
        "on Fashion-MNIST, `bench/dense_tuning.py`), on 32² renders of the main job's "
        f"{TRAIN_ITEMS:,} training items; warm-up, EMA 0.995 and constant learning rate as "
        "the main job. Both arms side by side, one torch thread each, wall-clock time.",
        f"- Samples: {args.num_samples} per snapshot at 32² (DDIM η = 0, {args.sample_steps} "
        "steps, the same seeds; ∞-Diff read through 1,024 random 128² pixels, as the demo), "
        f"against {args.num_samples} held-out renders at 32²"
        + (" (KID on the whole sets: no spread over subsets)" if args.kid else "")
        + f". Detail: energy at {DETAIL_BAND[0]}–{DETAIL_BAND[1] - 1} cycles per unit over "
        "the renders' (`pyg_infdiff.metrics.detail_ratio`).",
    ]
    lines += figure_and_footer(args, result, picture, "8 samples of each arm at each snapshot "
                               "(32²), the last ∞-Diff snapshot at 128², and held-out renders",
                               cached="Runs")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--minutes", type=positive_float, default=40.0,
                   help="wall-clock training budget of each arm (they run at once)")
    p.add_argument("--snapshots", default="5,10,20,40",
                   help="comma-separated minutes of training at which to score both arms")
    p.add_argument("--checkpoint-every", type=positive_int, default=100,
                   help="steps between the main job's checkpoints (all kept)")
    p.add_argument("--num-samples", type=positive_int, default=128)
    p.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--sample-batch", type=positive_int, default=32)
    p.add_argument("--dense-params", type=positive_int, default=1_100_000,
                   help="target parameter count of the dense model")
    p.add_argument("--dense-lr", type=positive_float, default=5e-3)
    p.add_argument("--dense-batch", type=positive_int, default=32)
    p.add_argument("--score-threads", type=positive_int, default=os.cpu_count() or 1,
                   help="torch CPU threads to sample and score with, once both arms are trained")
    p.add_argument("--no-kid", dest="kid", action="store_false", help="SWD and detail only")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder of the runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_threads_arg(p, "torch CPU threads of each arm")
    add_publish_args(p, "the demo's --smoke, a tiny dense model for 3 s, 8 samples of 2 steps, "
                     "SWD (tests)", figures=FIGURES)
    args = p.parse_args(argv)
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:])
                        if a != "--write"]
    if args.smoke:
        args.minutes, args.snapshots, args.checkpoint_every = 0.05, "0.02,0.05", 1
        args.num_samples, args.sample_steps, args.sample_batch = 8, 2, 8
        args.dense_params, args.kid = 20_000, False
    try:
        args.snapshots = sorted(float(m) for m in args.snapshots.split(","))
    except ValueError:
        p.error(f"--snapshots must be comma-separated minutes, got {args.snapshots!r}")
    if not 0 < args.snapshots[0] <= args.snapshots[-1] <= args.minutes:
        p.error(f"--snapshots must lie in (0, --minutes], got {args.snapshots}")
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "training_horizon", parse_args, run, report, argv,
                      figure=figure, stamp=True, worker=dense_worker)


if __name__ == "__main__":
    main()
