r"""Benchmark (issue 16, #6; opt-in and slow): spectral against 3^d convolutions on the lattice of
the dense U-Net, at equal CPU time.

Fashion-MNIST 28², :meth:`UNetConfig.preset` ``(28)`` with its dense U-Net's convolutions

* **conv**: :math:`3 \times 3` convolutions (the preset, 1.30 M parameters);
* **spectral**: :class:`~pyg_infdiff.nn.SpectralConv` (``grid_conv="spectral"``, the official
  code's ``conv_type="spectral"``, 4 modes per axis fitted to the 14², 7², 4² levels).

Each arm trains for the same wall-clock budget (``--minutes``) on one torch thread; the two arms
run side by side as two processes (this script starts ``--worker ARM`` copies of itself), so
both see the same machine for the same time. Recipe: the CPU recipe of ``bench/quality.py``
(:class:`_infdiff.Recipe` with x₀ prediction: batch 32, AdamW lr 5e-4 with 200 warm-up steps,
clip 1, EMA 0.999, mollifier σ = half a pixel, cosine schedule), a quarter of each image's pixels
as nodes (``--rate 4``), :class:`~pyg_infdiff.training.Trainer`. Then each arm draws
``--num-samples`` samples with its EMA weights (DDIM, :math:`\eta = 0`, ``--sample-steps``
steps) and scores them, as drawn (mollified) and Wiener-deblurred (inverse SNR 0.05), against
the first ``--num-real`` Fashion-MNIST test images: FID and KID on the FID Inception features
(:mod:`pyg_infdiff.metrics`), or the weight-free SWD (``--metrics swd``).

Reported per arm: parameters (all, and the dense U-Net's), optimiser steps reached, the median
time of an optimiser step (over the trainer's log windows of ``log_every`` steps, data loading
included), sampling time per image, FID and KID.

Arms are cached in ``--out`` (``arm_<name>.json``; training resumes from its checkpoints), so a
rerun skips finished arms and ``--report-only --write`` writes the table from them.

Durations on this 2-core machine (one thread per arm): ``--minutes`` of training; 1,000 samples
of 50 DDIM steps ~3-5 min per arm; Inception features ~0.27 s per image: the 2,000 test images
once (~9 min, before the arms start, then cached in ``~/.cache/pyg_infdiff/fid_stats``) and
2 × 1,000 samples per arm (~9 min, the arms in parallel). ``--minutes 25``: about 50 min. Run::

    python bench/spectral_grid.py --minutes 25 --write     # both arms side by side, ~50 min
    python bench/spectral_grid.py --report-only --write    # the table from finished arms
    python bench/spectral_grid.py --smoke --out /tmp/s     # tiny model, seconds, SWD (tests)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _args import positive_float, positive_int
from _common import ROOT, machine_description, relative_to_root
from _infdiff import Recipe, resolve_device, train_infdiff, unet_config
from _publish import add_publish_args, markdown_table
from _scoring import draw_samples, inception_metrics, kid_cell, swd_metrics
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, run_jobs
from torch import Tensor

from pyg_infdiff.data import FashionMNIST
from pyg_infdiff.data.images import save_grid
from pyg_infdiff.models import UNetConfig, num_parameters
from pyg_infdiff.training import Pretrained, load_pretrained, read_log

OUT = ROOT / "bench" / "_out" / "spectral_grid"
RESOLUTION = 28
ARMS = {"conv": "3×3 convolutions", "spectral": "spectral convolutions (4 modes)"}
TITLE = "## Spectral against 3×3 convolutions on the lattice: Fashion-MNIST 28²"
REAL_CACHE = "fashion-mnist-test"


def arm_config(args: argparse.Namespace, arm: str) -> UNetConfig:
    r"""The model of an arm: the preset (the ``"tiny"`` model with ``--smoke``) with the arm's
    convolutions on the lattice."""
    base = unet_config("tiny", channels=1) if args.smoke else UNetConfig.preset(RESOLUTION)
    return UNetConfig.from_dict({**base.to_dict(), "grid_conv": arm})


def fashion_test_images(num: int) -> Tensor:
    r"""The first :obj:`num` Fashion-MNIST test images, float in :math:`[-1, 1]`."""
    images = FashionMNIST(train=False).images[:num]
    return (images.float() / 127.5 - 1.0).unsqueeze(1)


def score(args: argparse.Namespace, fakes: dict[str, Tensor]) -> dict:
    r"""FID and KID (or SWD) of sample sets against the test images."""
    if args.metrics == "swd":
        return swd_metrics(fakes, fashion_test_images(args.num_real), args.seed)
    test = FashionMNIST(train=False)
    return inception_metrics(fakes, test, min(args.num_real, len(test)), REAL_CACHE,
                             device=str(resolve_device(args.device)), seed=args.seed)


def median_step_seconds(run_dir: Path) -> float:
    r"""The median over the trainer's log windows of the time per optimiser step."""
    rates = [r["steps_per_sec"] for r in read_log(run_dir / "log.jsonl")
             if r.get("steps_per_sec", 0) > 0]
    if not rates:
        raise RuntimeError(f"no training records in {run_dir / 'log.jsonl'}")
    return statistics.median(1.0 / r for r in rates)


@dataclass
class SampledArm:
    r"""A Fashion-MNIST arm trained for its budget, and its samples at 28²."""

    trained: dict
    pretrained: Pretrained
    recipe: Recipe
    data: FashionMNIST
    images: Tensor
    deblurred: Tensor
    sample_seconds: float


def train_and_sample(args: argparse.Namespace, out: Path, config: UNetConfig,
                     device: torch.device, clock: str = "wall") -> SampledArm:
    r"""Trains :obj:`config` on Fashion-MNIST for ``--minutes`` of :obj:`clock` time
    (resumably, the x₀ recipe, ``--batch-size`` if given, short intervals with ``--smoke``) into
    :obj:`out`, then draws ``--num-samples`` samples at 28² with its EMA weights, as drawn and
    Wiener-deblurred (inverse SNR 0.05). Shared with ``bench/radius_density.py``."""
    recipe = Recipe(parametrization="x0", log_every=10)
    if args.batch_size:
        recipe.batch_size = args.batch_size
    if args.smoke:
        recipe.checkpoint_every, recipe.warmup, recipe.log_every = 5, 5, 1
    data = FashionMNIST(train=True)
    trained = train_infdiff(out, data, config, RESOLUTION, args.rate, args.minutes, recipe,
                            data_name="fashion-mnist", seed=args.seed, clock=clock)
    pretrained = load_pretrained(trained["checkpoint"], weights="ema", device=device)
    start = time.perf_counter()
    images = draw_samples(pretrained.model, pretrained.diffusion, args.num_samples, RESOLUTION,
                          1, args.sample_steps, args.sample_batch, args.seed + 1, device)
    seconds = time.perf_counter() - start
    deblurred = pretrained.diffusion.mollifier.undo(images, 2, inv_snr=0.05).clamp(-1, 1)
    return SampledArm(trained, pretrained, recipe, data, images, deblurred, seconds)


def run_arm(args: argparse.Namespace, arm: str) -> dict:
    r"""Trains one arm for the budget (resumably), samples and scores it: the worker's job."""
    out = args.out / f"arm_{arm}"
    config = arm_config(args, arm)
    device = resolve_device(args.device)
    sampled = train_and_sample(args, out, config, device)
    images, deblurred = sampled.images, sampled.deblurred
    save_grid(deblurred[:64], out / "samples.png", nrow=8)
    return {"arm": arm, "label": ARMS[arm], **sampled.trained,
            "dense_parameters": num_parameters(sampled.pretrained.model.dense),
            "median_step_seconds": median_step_seconds(out),
            "sample_seconds_per_image": sampled.sample_seconds / images.size(0),
            "metrics": score(args, {"mollified": images, "deblurred": deblurred}),
            "config": config.to_dict(), "threads": args.threads,
            "machine": machine_description(device), "settings": settings_of(args)}


def settings_of(args: argparse.Namespace) -> dict:
    r"""The settings a cached arm must match to be reused."""
    return {"minutes": args.minutes, "rate": args.rate, "num_samples": args.num_samples,
            "sample_steps": args.sample_steps, "metrics": args.metrics,
            "num_real": args.num_real, "seed": args.seed, "smoke": args.smoke}


def worker_argv(args: argparse.Namespace, arm: str) -> list[str]:
    r"""The command line of the process that runs one arm."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", arm,
            "--minutes", str(args.minutes), "--rate", str(args.rate),
            "--num-samples", str(args.num_samples), "--num-real", str(args.num_real),
            "--sample-steps", str(args.sample_steps), "--sample-batch", str(args.sample_batch),
            "--metrics", args.metrics, "--out", str(args.out), "--threads", str(args.threads),
            "--seed", str(args.seed)]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if args.device:
        argv += ["--device", args.device]
    return argv + (["--smoke"] if args.smoke else [])


def run(args: argparse.Namespace) -> dict[str, dict]:
    r"""The results of every arm: the cached ones read back, the others run side by side, one
    process each."""
    args.out.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for arm in ARMS:
        path = args.out / f"arm_{arm}.json"
        cached = json.loads(path.read_text()) if path.exists() else None
        if cached is not None and (args.report_only or cached["settings"] == settings_of(args)):
            results[arm] = cached
        elif not args.report_only and arm in args.arms:
            todo.append(arm)
    if todo and args.metrics == "fid":  # the test statistics once, before the arms share them
        score(args, {})
    run_jobs({f"arm_{arm}": worker_argv(args, arm) for arm in todo},
             poll=0.2 if args.smoke else 2.0, what="arm")
    for arm in todo:
        results[arm] = json.loads((args.out / f"arm_{arm}.json").read_text())
    return {arm: results[arm] for arm in ARMS if arm in results}


def report(args: argparse.Namespace, results: dict[str, dict]) -> str:
    r"""The markdown section from the finished arms."""
    fid = any("fid" in m for r in results.values() for m in r["metrics"].values())
    rows = []
    for r in results.values():
        for variant, m in r["metrics"].items():
            value = ([f"{m['fid']:.2f}", kid_cell(m, digits=2)]
                     if "fid" in m else [f"{m['swd']:.2f}", "—"])
            rows.append([r["label"], variant,
                         f"{r['parameters'] / 1e6:.2f} M ({r['dense_parameters'] / 1e6:.2f} M)",
                         f"{r['steps']:,}", f"{1e3 * r['median_step_seconds']:.0f}",
                         f"{r['train_seconds'] / 60:.1f}", *value,
                         f"{r['sample_seconds_per_image']:.2f}"])
    metric = "FID" if fid else "SWD ×10³"
    lines = [TITLE, ""]
    if not rows:
        return "\n".join([*lines, "No arm has finished yet."])
    lines += [markdown_table(["grid convolutions", "samples", "parameters (dense U-Net)",
                              "optimiser steps", "median step (ms)", "train (min)", metric,
                              "KID ×10³", "sampling (s / image)"], rows), ""]
    if len(results) == 2:
        conv, spectral = results["conv"], results["spectral"]
        key = "fid" if fid else "swd"
        ratios = ", ".join(
            f"{v} {spectral['metrics'][v][key] / conv['metrics'][v][key]:.2f}×"
            for v in conv["metrics"])
        lines.append(f"- Spectral against conv: {metric} ratio {ratios}; step time "
                     f"{spectral['median_step_seconds'] / conv['median_step_seconds']:.2f}×, "
                     f"{spectral['steps'] / conv['steps']:.2f}× the steps in the same time, "
                     f"{spectral['parameters'] / conv['parameters']:.2f}× the parameters.")
    shown = next(iter(results.values()))
    s = shown["settings"]
    if any(r["settings"] != s for r in results.values()):
        lines.append("- **Warning**: the arms ran with different settings: "
                     + "; ".join(f"{a}: {r['settings']}" for a, r in results.items()))
    model = "the tiny smoke-test model" if s["smoke"] else "`UNetConfig.preset(28)`"
    recipe = shown["recipe"]
    window = f"{recipe['log_every']} step" + ("s" if recipe["log_every"] != 1 else "")
    lines += [
        f"- Model: {model}, its dense U-Net's convolutions (3^d, or `SpectralConv` with "
        f"`spectral_modes={shown['config']['spectral_modes']}` fitted per level, pointwise "
        "input and output convolutions with the cell coordinates in) as the only difference.",
        f"- Budget: {s['minutes']:g} min of training per arm (wall clock, data loading "
        f"included), the arms side by side, one process and {shown['threads']} torch thread "
        f"each; a {s['rate']:g}× subsample of each image's pixels as nodes; the CPU recipe of "
        f"`bench/quality.py` (batch {recipe['batch_size']}, AdamW lr {recipe['lr']:g}, "
        f"{recipe['warmup']} warm-up steps, clip {recipe['grad_clip']:g}, EMA "
        f"{recipe['ema_decay']:g}, σ = half a pixel, cosine schedule, x₀ prediction). Median "
        f"step: over the trainer's log windows of {window}.",
        f"- Samples: {s['num_samples']:,} per arm with the EMA weights, DDIM η = 0, "
        f"{s['sample_steps']} steps; \"mollified\" as drawn, \"deblurred\" Wiener (inverse SNR "
        "0.05). Scored against the first "
        + (f"{s['num_real']:,} Fashion-MNIST test images: FID and KID on the FID Inception "
           "pool features" if fid else
           "Fashion-MNIST test images: multi-scale SWD, as many real images as samples") + ".",
        "- Machine per arm: " + "; ".join(f"{a}: {r['machine']}" for a, r in results.items())
        + ".",
        f"- Command: `{args.command}` (arms cached in `{relative_to_root(args.out)}`).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--arms", default="conv,spectral", help="comma list of conv, spectral")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="training budget per arm (default: 25; 0.05 with --smoke)")
    p.add_argument("--rate", type=positive_float, default=4.0,
                   help="subsampling rate of the training "
                   "images (1: all pixels)")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--num-real", type=positive_int, default=2000,
                   help="test images to score against")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--sample-batch", type=positive_int, default=50)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch (default: the recipe's 32)")
    p.add_argument("--metrics", choices=["fid", "swd"], default="fid",
                   help="fid: FID and KID (Inception weights needed); swd: weight-free")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder of the arms")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table from the finished arms in --out")
    p.add_argument("--worker", choices=list(ARMS), default=None,
                   help="run one arm in this process (what the script starts for each arm)")
    add_device_arg(p)
    add_threads_arg(p, "torch CPU threads of each arm's process")
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny model, 3 s budgets, 8 samples of 2 steps, SWD (tests)")
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not args.arms or any(a not in ARMS for a in args.arms):
        p.error(f"--arms must be a comma list of {', '.join(ARMS)}")
    if args.minutes is None:
        args.minutes = 0.05 if args.smoke else 25.0
    if args.smoke:
        args.num_samples, args.num_real, args.sample_steps = 8, 8, 2
        args.sample_batch, args.metrics = 8, "swd"
        args.batch_size = args.batch_size or 4
    return args


def worker(args: argparse.Namespace) -> dict:
    r"""One arm in this process (``--worker ARM``): its result goes to ``arm_<ARM>.json``."""
    result = run_arm(args, args.worker)
    (args.out / f"arm_{args.worker}.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "spectral", parse_args, run, report, argv, worker=worker)


if __name__ == "__main__":
    main()
