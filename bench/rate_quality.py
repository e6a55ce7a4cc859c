r"""Benchmark (issue 14 #2; opt-in and slow): what subsampling costs in sample quality, beside
what it saves in step time and memory, on Fashion-MNIST 28² and on the built-in shapes at 64²
(``--dataset shapes``).

One ∞-Diff model per subsampling rate of ``--rates`` (1, 2, 4, 8, 16 and 32 by default: 784 to
25 nodes per image), all with the same recipe and seed: the library's Fashion-MNIST recipe
(arm (a) of ``bench/quality.py``, :meth:`UNetConfig.preset` ``(28)``, :math:`x_0`
prediction, AdamW, 200 warm-up steps then constant, clip 1, EMA 0.999) at the learning rate
and batch that ``bench/dense_tuning.py``'s probe kept for it (5e-4, 32). Each rate trains for
``--minutes`` of CPU time on one torch thread (:func:`time.process_time`), two runs at a time
side by side, one per core; every checkpoint is kept until the scores are in. Two models per
rate are scored:

* **equal CPU time**: the last checkpoint of each run;
* **equal optimiser steps**: each run's checkpoint at the largest multiple of the checkpoint
  interval that every run reached (the slowest rate sets it).

Each model draws ``--num-samples`` samples (EMA weights, DDIM :math:`\eta = 0` with
``--sample-steps`` steps, the same seeds for every model), Wiener-deblurred (inverse SNR 0.05)
as the quality benchmark's best rows, scored by FID and KID on the FID Inception features
against the first ``--num-real`` test images (the statistics ``bench/quality.py`` caches), in
the worker, on its one thread. Beside the scores:

* **step time**: CPU seconds per optimiser step of each run, data collation included;
* **peak memory**: the activation memory of one training step at the run's batch (resident-set
  high-water mark above the step's start, in a fresh subprocess: ``bench/subsampling.py``'s
  method and step);
* **Monte-Carlo density**: expected nodes per kernel ball of the operator blocks, and per cell
  of the pooling grid (:func:`pyg_infdiff.models.monte_carlo_density`).

``--dataset shapes`` runs the same protocol on :class:`~pyg_infdiff.data.ContinuousShapes`
(the default :class:`~pyg_infdiff.data.ShapesConfig`) rendered at 64², 2,048 items rendered and
mollified once (:class:`~pyg_infdiff.data.MollifiedCache`), with the main job's model and recipe
(``examples/shapes_demo.py``: :meth:`UNetConfig.preset` ``(32)``, :math:`x_0` prediction with
Min-SNR-5 weights, lr 1e-3, batch 16, EMA 0.995), rates 1 to 16 (4,096 to 256 nodes per
image; rate 1 takes the model's dense path on its full lattices).
Each model samples its own 64² lattice, read through its training density where it was trained
on a subset (``context=``, as the main job reads it; :meth:`Pretrained.context_for`), and is
scored by SWD and KID against held-out renders (dataset seed 1000): KID, not FID, because a few
hundred samples bias FID far more than KID.

``--subsample-method`` draws each step's nodes another way (``stratified``: one random pixel
per block of a Z-order curve; ``halton``; see :func:`pyg_infdiff.graph.subsample`), uniform
by default as in the examples; another method writes its own section, whose name is also the
default cache folder (``rate_quality_stratified``, ``rate_quality_shapes_halton``).

Everything is cached in ``--out`` (default ``bench/_out/rate_quality`` and
``bench/_out/rate_quality_shapes``): runs resume from their checkpoints, finished runs, samples
and scores are reused, so an interrupted benchmark continues where it stopped. On this machine
the default run takes about an hour on both cores, the shapes run about as long::

    python bench/rate_quality.py --write
    python bench/rate_quality.py --dataset shapes --write
    python bench/rate_quality.py --rates 1,4 --subsample-method stratified --out \
        bench/_out/rq_strat --write                        # stratified nodes (own section)
    python bench/rate_quality.py --smoke --out /tmp/rq     # seconds per part, SWD (tests)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import get_args

import torch
from _args import positive_float, positive_int
from _common import ROOT, cached_json, format_bytes, peak_memory
from _infdiff import FIGURES, Recipe, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table, save_figure
from _scoring import draw_samples, inception_metrics, kid_cell, renders, swd_metrics
from _skeleton import add_threads_arg, bench_main, bench_parser, machine_note, run_jobs
from torch import Tensor

from pyg_infdiff.data import ContinuousShapes, FashionMNIST, MollifiedCache, ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.graph.subsample import SubsampleMethod
from pyg_infdiff.models import UNetConfig, monte_carlo_density
from pyg_infdiff.noise import GaussianMollifier
from pyg_infdiff.training import load_pretrained

OUT = ROOT / "bench" / "_out"
#: Per dataset: its name in the docs, its docs section (also the cache folder and, after
#: ``bench_``, the figures), the resolution and channels, the default rates, CPU minutes, samples
#: and real images, and the model's preset.
DATASETS = {
    "fashion-mnist": dict(title="Fashion-MNIST", section="rate_quality", resolution=28,
                          channels=1, rates="1,2,4,8,16,32", minutes=10.0, num_samples=1000,
                          num_real=2000, preset=28),
    "shapes": dict(title="the built-in shapes", section="rate_quality_shapes", resolution=64,
                   channels=3, rates="1,2,4,8,16", minutes=8.0, num_samples=128, num_real=128,
                   preset=32),
}
LR, BATCH = 5e-4, 32  # what bench/dense_tuning.py's probe kept for ∞-Diff on Fashion-MNIST
SHAPES_CACHE = 2048  # shapes rendered and mollified once per run (as the main job does)
HELD_OUT_SEED = 1000  # the dataset seed of the shapes' reference renders
# issue 14 #2: FID at rate 4 within 15% of rate 1 at equal optimiser steps
GOAL_RATE, GOAL_RATIO = 4.0, 1.15
MODELS = {"steps": "equal steps", "time": "equal CPU time"}


# --------------------------------------------------------------------------- runs
def run_folder(args: argparse.Namespace, rate: float) -> Path:
    return args.out / f"rate{rate:g}"


def model_config(args: argparse.Namespace) -> UNetConfig:
    if args.smoke:
        return unet_config("tiny", channels=args.channels)
    return unet_config(DATASETS[args.dataset]["preset"], channels=args.channels)


def recipe(args: argparse.Namespace) -> Recipe:
    r"""The recipe of every rate; every checkpoint kept (the equal-step models need them)."""
    if args.dataset == "shapes":  # the main job's (examples/shapes_demo.py)
        out = Recipe(parametrization="x0", lr=1e-3, batch_size=16, warmup=100, ema_decay=0.995,
                     ema_start=100, snr_gamma=5.0, keep_last=None)
    else:
        out = Recipe(parametrization="x0", lr=LR, batch_size=BATCH, keep_last=None)
    out.subsample_method = args.subsample_method
    if args.smoke:
        out.checkpoint_every, out.warmup, out.batch_size = 5, 5, 8
    return out


def radius_edges(args: argparse.Namespace, rate: float) -> bool:
    r"""Whether a rate's graphs get radius edges: not the full 64² lattices of the shapes, which
    take the model's dense path (78 edges per node there); Fashion-MNIST keeps the radius graph
    at every rate, as its published run did."""
    return args.dataset != "shapes" or rate > 1.0


def training_set(args: argparse.Namespace):
    if args.dataset == "fashion-mnist":
        return FashionMNIST(train=True)
    shapes = ContinuousShapes(100_000, args.resolution, ShapesConfig(), seed=args.seed)
    sigma = recipe(args).sigma_pixels / args.resolution
    return MollifiedCache(shapes, GaussianMollifier(sigma), 16 if args.smoke else SHAPES_CACHE)


def train(args: argparse.Namespace, rate: float) -> dict:
    return train_infdiff(run_folder(args, rate), training_set(args), model_config(args),
                         args.resolution, rate, args.minutes, recipe(args),
                         data_name=args.dataset, seed=args.seed, clock="cpu",
                         radius_edges=radius_edges(args, rate))


def checkpoints(folder: Path) -> dict[int, Path]:
    r"""The checkpoints of a run folder by step."""
    return {int(path.stem.split("_")[-1]): path
            for path in sorted((folder / "checkpoints").glob("ckpt_*.pt"))}


def equal_steps(results: dict[float, dict], interval: int) -> int:
    r"""The step of the equal-step models: the largest multiple of the checkpoint
    :obj:`interval` that every run of :obj:`results` (``{rate: {"steps": ...}}``) reached."""
    fewest = min(r["steps"] for r in results.values())
    if fewest < interval:
        raise ValueError(f"a run made {fewest} steps, fewer than one checkpoint interval "
                         f"({interval}): train longer")
    return fewest // interval * interval


def scored_checkpoints(args: argparse.Namespace, rate: float, step: int) -> dict[str, Path]:
    r"""The two models of a rate: ``"steps"`` (its checkpoint at :obj:`step`) and ``"time"``
    (its last checkpoint)."""
    found = checkpoints(run_folder(args, rate))
    if step not in found:
        raise FileNotFoundError(f"{run_folder(args, rate)} has no checkpoint at step {step} "
                                f"(it has {sorted(found)})")
    return {"steps": found[step], "time": found[max(found)]}


def prune(args: argparse.Namespace, rate: float, step: int) -> None:
    r"""Deletes the checkpoints that neither model of a rate uses (after its scores)."""
    keep = set(scored_checkpoints(args, rate, step).values())
    for path in checkpoints(run_folder(args, rate)).values():
        if path not in keep:
            path.unlink()


def held_out_name() -> str:
    r"""The name under which the held-out renders' Inception statistics are cached (computed
    once, not by every scoring worker): their dataset seed and shapes."""
    shapes = hashlib.sha1(repr(ShapesConfig()).encode()).hexdigest()[:8]
    return f"shapes-seed{HELD_OUT_SEED}-{shapes}"


def inception_reference(args: argparse.Namespace) -> tuple[Tensor | FashionMNIST, str]:
    r"""The real images of the Inception metrics and the name their statistics are cached
    under: held-out renders of the shapes, or the Fashion-MNIST test set."""
    if args.dataset == "shapes":
        return renders(args.num_real, args.resolution, 3, HELD_OUT_SEED), held_out_name()
    return FashionMNIST(train=False), "fashion-mnist-test"


def metrics_of(args: argparse.Namespace, images: Tensor) -> dict:
    r"""SWD with ``--smoke``; FID and KID on Fashion-MNIST; SWD, KID and FID on the shapes."""
    if args.dataset == "shapes":
        real, name = inception_reference(args)
        out = swd_metrics({"x": images}, real, args.seed)["x"]
        if not args.smoke:
            out.update(inception_metrics({"x": images}, real, args.num_real, name,
                                         seed=args.seed)["x"])
        return out
    if args.smoke:
        test = FashionMNIST(train=False).images[: args.num_real]
        return swd_metrics({"x": images}, (test.float() / 127.5 - 1.0).unsqueeze(1),
                           args.seed)["x"]
    real, name = inception_reference(args)
    return inception_metrics({"x": images}, real, args.num_real, name, seed=args.seed)["x"]


def score_all(args: argparse.Namespace, step: int) -> None:
    r"""Scores every rate in the worker processes. The real Inception statistics are cached
    here first (not with ``--smoke``, which scores by SWD alone): otherwise every worker of a
    first run would extract the same features of ``--num-real`` images at once (three at once
    took about 12 min each for 2,000 on this 2-core machine)."""
    if not args.smoke:
        real, name = inception_reference(args)
        inception_metrics({}, real, args.num_real, name, seed=args.seed)
    launch(args, "score", ["--step", str(step)])


def score_rate(args: argparse.Namespace, rate: float, step: int) -> dict[str, dict]:
    r"""Samples and scores of both models of a rate, cached in its run folder."""
    folder, scores = run_folder(args, rate), {}
    for model, path in scored_checkpoints(args, rate, step).items():
        samples = folder / f"samples_{model}.pt"

        def compute(path=path, samples=samples) -> dict:
            pretrained = load_pretrained(path, weights="ema", device="cpu")
            side = args.resolution
            # Fashion-MNIST: the plain lattice, as in bench/quality.py; the shapes: as the
            # main job reads them, through the training density where that was a subset
            context = (pretrained.context_for(side * side) if args.dataset == "shapes"
                       else None)
            start = time.process_time()
            drawn = draw_samples(pretrained.model, pretrained.diffusion, args.num_samples,
                                 side, args.channels, args.sample_steps, 50, args.seed + 1,
                                 torch.device("cpu"), context=context)
            seconds = time.process_time() - start
            images = pretrained.diffusion.mollifier.undo(drawn, 2, inv_snr=0.05).clamp(-1, 1)
            torch.save(images, samples)
            step_of = int(path.stem.split("_")[-1])
            return {**metrics_of(args, images), "step": step_of,
                    "cpu_seconds_per_image": seconds / args.num_samples}

        scores[model] = cached_json(folder / f"score_{model}.json", compute)
    return scores


def worker(args: argparse.Namespace) -> dict:
    r"""One rate's job in this process (one thread): its training run, or its scores."""
    if args.phase == "train":
        return train(args, args.rate)
    return score_rate(args, args.rate, args.step)


def launch(args: argparse.Namespace, phase: str, extra: list[str] | None = None) -> None:
    r"""Runs :func:`worker` for every rate, ``--jobs`` processes (one thread each) at a time,
    each logging to ``--out``/``rate<rate>_<phase>.log``."""
    script = str(Path(__file__).resolve())
    jobs = {f"rate{rate:g}_{phase}": [sys.executable, script, "--worker", "--phase", phase,
                                      "--rate", f"{rate:g}", *(extra or []), *args.passthrough]
            for rate in args.rates}
    run_jobs(jobs, slots=args.jobs, logs=args.out, poll=0.2 if args.smoke else 2.0,
             what=f"{phase} run")


def memory(args: argparse.Namespace, rate: float) -> int:
    r"""Peak activation memory of one training step at :obj:`rate` (bytes), cached."""
    def compute() -> dict:
        preset = "tiny" if args.smoke else DATASETS[args.dataset]["preset"]
        factory = f"{ROOT / 'bench' / 'subsampling.py'}:build_step"
        peak = peak_memory(factory, kwargs=dict(preset=preset, resolution=args.resolution,
                                                rate=rate, batch_size=recipe(args).batch_size,
                                                seed=args.seed,
                                                radius_edges=radius_edges(args, rate)),
                           warmup=1, threads=1)
        return {"peak_bytes": peak.peak_bytes, "method": peak.method}

    return cached_json(args.out / "memory" / f"rate{rate:g}.json", compute)["peak_bytes"]


# --------------------------------------------------------------------------- run, report
def run(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    launch(args, "train")
    results = {rate: json.loads((run_folder(args, rate) / "budget.json").read_text())["result"]
               for rate in args.rates}
    step = equal_steps(results, recipe(args).checkpoint_every)
    print(f"equal-step models at step {step:,}", flush=True)
    score_all(args, step)
    config = model_config(args)
    rows = []
    for rate in args.rates:
        scores = score_rate(args, rate, step)  # cached by the workers
        prune(args, rate, step)
        density = monte_carlo_density(config, args.resolution, rate)
        run_ = results[rate]
        rows.append({
            "rate": rate, "nodes": round(args.resolution ** 2 / rate),
            "ball": density.levels[0].expected if density.levels else 0.0,
            "cell": density.nodes_per_cell,
            "steps": run_["steps"], "seconds_per_step": run_["train_seconds"] / run_["steps"],
            "peak_bytes": memory(args, rate), "scores": scores,
        })
    return {"rows": rows, "equal_steps": step}


def by_swd(args: argparse.Namespace) -> bool:
    r"""Whether the table's first measure is SWD (``--smoke``, the shapes) rather than FID."""
    return args.smoke or args.dataset == "shapes"


def quality(args: argparse.Namespace, score: dict) -> str:
    return f"{score['swd']:.1f}" if by_swd(args) else f"{score['fid']:.1f}"


def report(args: argparse.Namespace, result: dict, picture: Path | None = None) -> str:
    metric = "SWD ×10³" if by_swd(args) else "FID"
    rows, base = [], result["rows"][0]
    for row in result["rows"]:
        s, t = row["scores"]["steps"], row["scores"]["time"]
        rows.append([
            f"{row['rate']:g}", row["nodes"], f"{row['ball']:.1f} / {row['cell']:.2f}",
            f"{row['seconds_per_step']:.3f}",
            f"{base['seconds_per_step'] / row['seconds_per_step']:.2f}×",
            format_bytes(row["peak_bytes"]), f"{base['peak_bytes'] / row['peak_bytes']:.2f}×",
            quality(args, s), kid_cell(s), f"{row['steps']:,}", quality(args, t), kid_cell(t),
        ])
    step = result["equal_steps"]
    lines = [
        f"## Quality against the subsampling rate: {DATASETS[args.dataset]['title']} "
        f"{args.resolution}²"
        + ("" if args.subsample_method == "uniform" else f", {args.subsample_method} nodes"), "",
        f"One model per rate, the same recipe and seed (lr {recipe(args).lr:g}, batch "
        f"{recipe(args).batch_size}, nodes drawn by `method=\"{args.subsample_method}\"`), "
        f"{args.minutes:g} CPU minutes each on one thread, two "
        f"side by side. Equal steps: every model at step {step:,}, the most every run reached; "
        f"equal time: every model at the end of its run. {args.num_samples:,} samples each "
        f"(DDIM {args.sample_steps} steps, deblurred) against {args.num_real:,} "
        + ("held-out renders, each model read through its training density (`context=`)."
           if args.dataset == "shapes" else "test images."),
        "",
        markdown_table(["rate", "nodes / image", "nodes per ball / per grid cell",
                        "CPU s / step", "speed-up", "peak memory", "memory ÷",
                        f"{metric}, {step:,} steps", "KID ×10³", "steps in the time",
                        f"{metric}, equal time", "KID ×10³"], rows),
    ]
    goals = goal_lines(args, result)
    lines += ["", *goals] if goals else []
    if picture is not None:
        lines += ["", f"![{metric} against the rate at equal steps and equal CPU time, with step "
                  f"time and peak memory](_static/figures/{picture.name})", "",
                  "![The first samples of each equal-time model, one row per rate]"
                  f"(_static/figures/{args.samples_figure})"]
    lines += ["", "- CPU s / step: the run's CPU time over its steps, data collation included "
              "(one thread). Peak memory: one training step's activations in a fresh "
              "subprocess (`bench/subsampling.py`'s method), model, optimiser state and batch "
              "excluded. Nodes per ball: expected nodes in an operator block's kernel ball "
              "away from the border; per grid cell: nodes per cell of the pooling grid.",
              "- " + machine_note(result)]
    return "\n".join(lines)


def goal_lines(args: argparse.Namespace, result: dict) -> list[str]:
    r"""Issue 14 #2's target: FID at rate 4 within 15% of rate 1 at equal optimiser steps."""
    by_rate = {row["rate"]: row["scores"]["steps"] for row in result["rows"]}
    if by_swd(args) or 1.0 not in by_rate or GOAL_RATE not in by_rate:
        return []
    ratio = by_rate[GOAL_RATE]["fid"] / by_rate[1.0]["fid"]
    verdict = "**met**" if ratio <= GOAL_RATIO else "**NOT met**"
    return [f"- Goal (issue 14 #2): FID at rate {GOAL_RATE:g} within "
            f"{(GOAL_RATIO - 1) * 100:.0f}% of rate 1 at equal optimiser steps: "
            f"{by_rate[GOAL_RATE]['fid']:.1f} vs {by_rate[1.0]['fid']:.1f} ({ratio:.2f}×) — "
            f"{verdict}"]


def figure_name(args: argparse.Namespace) -> str:
    return f"bench_{args.section}"


def figure(args: argparse.Namespace, result: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    rates = [row["rate"] for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    metric = "SWD ×10³" if by_swd(args) else "FID"
    key = "swd" if by_swd(args) else "fid"
    for model, label in MODELS.items():
        axes[0].plot(rates, [row["scores"][model][key] for row in rows], "o-", label=label)
    axes[0].set_title(f"{metric} (lower is better)", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].plot(rates, [row["seconds_per_step"] for row in rows], "o-")
    axes[1].set_title("CPU seconds per training step", fontsize=10)
    axes[2].plot(rates, [row["peak_bytes"] / 2**20 for row in rows], "o-")
    axes[2].set_title("peak activation memory of a step (MiB)", fontsize=10)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.set_xlabel("subsampling rate")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    samples = [(f"rate {row['rate']:g}",
                torch.load(run_folder(args, row["rate"]) / "samples_time.pt",
                           weights_only=True)[:12]) for row in rows]
    name = figure_name(args)
    # colour sample grids are photograph-like: a JPEG where a PNG would be too large
    args.samples_figure = compact_figure(save_rows(samples, args.figures / f"{name}_samples.png",
                                                   cell_size=56)).name
    return save_figure(fig, args.figures / f"{name}.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist",
                   help="Fashion-MNIST at 28² or the built-in shapes at 64²")
    p.add_argument("--rates", default=None,
                   help="subsampling rates (default: 1-32 on Fashion-MNIST, 1-16 on shapes)")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="CPU minutes of each run (default: 10 on Fashion-MNIST, 8 on shapes)")
    p.add_argument("--sample-steps", type=positive_int, default=50,
                   help="DDIM steps of the samples")
    p.add_argument("--num-samples", type=positive_int, default=None,
                   help="samples per model (default: 1,000 on Fashion-MNIST, 128 on shapes)")
    p.add_argument("--num-real", type=positive_int, default=None,
                   help="real images to score against (default: 2,000 test images of "
                   "Fashion-MNIST, 128 held-out renders of shapes)")
    p.add_argument("--subsample-method", choices=get_args(SubsampleMethod),
                   default="uniform", help="how each step's training nodes are drawn "
                   "(pyg_infdiff.graph.subsample); not the default: its own section")
    p.add_argument("--jobs", type=positive_int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--out", type=Path, default=None,
                   help="cache folder (default: bench/_out/rate_quality[_shapes])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["train", "score"], help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--step", type=int, help=argparse.SUPPRESS)
    add_threads_arg(p)
    add_publish_args(p, "seconds per part: tiny models, rates 1 and 4, 8 samples of 2 steps, "
                     "SWD (the tests)", figures=FIGURES)
    args = p.parse_args(argv)
    # What the worker processes get: this command's own options.
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:])
                        if a != "--write"]
    defaults = DATASETS[args.dataset]
    for name in ("rates", "minutes", "num_samples", "num_real"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    args.resolution, args.channels = defaults["resolution"], defaults["channels"]
    args.section = defaults["section"]
    if args.subsample_method != "uniform":
        args.section += f"_{args.subsample_method}"
    if args.out is None:
        args.out = OUT / args.section
    args.rates = sorted(float(v) for v in args.rates.split(","))
    if args.smoke:
        args.rates, args.minutes, args.sample_steps = [1.0, 4.0], 0.05, 2
        args.num_samples, args.num_real = 8, 64
    if min(args.rates) < 1:
        p.error("--rates must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, lambda args: args.section, parse_args, run, report, argv,
                      figure=figure, stamp=True, worker=worker)


if __name__ == "__main__":
    main()
