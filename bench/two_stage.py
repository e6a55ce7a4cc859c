r"""Benchmark (issue 15; opt-in and slow): two-stage against single-stage unconditional ∞-Diff on
Fashion-MNIST 28², at equal total CPU time.

* **Two-stage**: the diffusion autoencoder of ``bench/autoencoder.py`` (``--autoencoder``, its
  run folder; EMA weights) and a latent diffusion model trained on it as
  ``examples/latent_train.py`` trains one (its defaults: every training image and its mirror
  image encoded on the full lattice, standardised, :class:`~pyg_infdiff.models.LatentMLP` of the
  ``cpu`` preset, L1 noise prediction, constant :math:`\beta`, AdamW, EMA) for
  ``--latent-minutes`` of CPU time or the example's step count, whichever ends first. Samples:
  :math:`\mathbf{z}` by the example's latent sampler, decoded by DDIM (``--sample-steps``).
* **Single-stage**: the unconditioned :meth:`UNetConfig.preset` ``(28)`` trained with the
  autoencoder's recipe, rate and data (read from its ``budget.json``) for the CPU time of the
  whole two-stage model: the autoencoder's training plus the encoding and the latent training.
  It trains in a worker process (``--worker``) while the latent stage trains here: both clocks
  count their own process's CPU time (one torch thread each), so a loaded machine only slows
  them. Samples: DDIM (``--sample-steps``).

Both arms' ``--num-samples`` samples are Wiener-deblurred (inverse SNR 0.05) and scored as
``bench/spectral_grid.py`` scores them: FID and KID against the first ``--num-real``
Fashion-MNIST test images (SWD with ``--smoke``). Everything is cached in ``--out``
(``latent.json``, ``two_stage.json``, ``single.json``; the single-stage training resumes from
its checkpoints), so a rerun finishes a partial run. Run::

    python bench/two_stage.py --write        # ~25 CPU min of training, then ~20 min
    python bench/two_stage.py --smoke --out /tmp/ts   # tiny models, seconds (tests)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from _args import positive_float, positive_int
from _common import ROOT, machine_description, relative_to_root
from _infdiff import FIGURES, LossBudget, Recipe, resolve_device, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _scoring import draw_samples, kid_cell
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from spectral_grid import score

from pyg_infdiff.data import FashionMNIST
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import (
    LatentDiffusion,
    LatentStats,
    constant_schedule,
    decode_latents,
    sample_latents,
)
from pyg_infdiff.models import LatentMLP, LatentMLPConfig, UNetConfig
from pyg_infdiff.training import Trainer, TrainerConfig, distributed_sampler, load_pretrained
from pyg_infdiff.training.checkpoint import load_checkpoint

OUT = ROOT / "bench" / "_out" / "two_stage"
AUTOENCODER = ROOT / "bench" / "_out" / "autoencoder" / "train"
RESOLUTION = 28
_spec = importlib.util.spec_from_file_location("latent_train_example",
                                               ROOT / "examples" / "latent_train.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)  # its parse_args (the recipe) and encode_dataset


def training_data() -> FashionMNIST:
    return FashionMNIST(train=True, resolution=RESOLUTION, resize="area")  # as the autoencoder


def deblur(diffusion, images: torch.Tensor) -> torch.Tensor:
    return diffusion.mollifier.undo(images, 2, inv_snr=0.05).clamp(-1, 1)


# --------------------------------------------------------------------------- the first stage
def first_stage(args: argparse.Namespace) -> dict:
    r"""The autoencoder's ledger (``budget.json`` of ``bench/autoencoder.py``), with
    ``seconds``: the CPU time it trained for; with ``--smoke`` and no ``--autoencoder``, a tiny
    one is trained first (as ``bench/autoencoder.py --smoke``)."""
    if args.autoencoder is None:
        from autoencoder import configs

        args.autoencoder = args.out / "autoencoder"
        encoder, unet = configs(True, 8)
        recipe = Recipe(parametrization="x0", batch_size=4, checkpoint_every=5, warmup=5)
        train_infdiff(args.autoencoder, training_data(), unet, RESOLUTION, 4.0, 0.05, recipe,
                      data_name="fashion-mnist", seed=args.seed, encoder=encoder, clock="cpu")
    ledger = json.loads((Path(args.autoencoder) / "budget.json").read_text())
    if not ledger.get("done") or ledger.get("clock") != "cpu":
        raise SystemExit(f"{args.autoencoder}: not a finished CPU-clocked bench/autoencoder.py run")
    result = ledger["result"]
    seconds = ledger["spent_at"].get(str(result["steps"]), result["train_seconds"])
    return {**result, "seconds": seconds}


# --------------------------------------------------------------------------- the latent stage
def example_args(args: argparse.Namespace, checkpoint: str) -> argparse.Namespace:
    r"""``examples/latent_train.py``'s settings (its defaults; tiny ones with ``--smoke``)."""
    extra = ["--max-items", "32", "--steps", "20", "--latent-sample-steps", "20"]
    return example.parse_args(["--autoencoder", checkpoint, "--seed", str(args.seed),
                               *(extra if args.smoke else [])])


def load_latent(path: str):
    r"""The EMA latent model of a checkpoint, its process and its latent statistics."""
    state = load_checkpoint(path)
    info = state["model_config"]
    model = LatentMLP(LatentMLPConfig.from_dict(info["latent"]))
    model.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items()
                           if k.startswith("module.")})
    return (model.eval(), LatentDiffusion.from_dict(info["latent_diffusion"]),
            LatentStats.from_dict(info["latent_stats"]))


def latent_stage(args: argparse.Namespace, ae: dict, run) -> dict:
    r"""Encodes the training set and trains the latent model as the example does, timing both
    by this process's CPU clock; cached in ``latent.json``."""
    path, out = args.out / "latent.json", args.out / "latent"
    settings = latent_settings(args, ae)
    cached = json.loads(path.read_text()) if path.exists() else None
    if cached is not None and cached["settings"] == settings:
        return cached
    ex = example_args(args, ae["checkpoint"])
    ex.resolution, device = RESOLUTION, resolve_device(args.device)
    start = time.process_time()
    latents = example.encode_dataset(run.model, training_data(), ex, device)
    encode_seconds = time.process_time() - start
    start = time.process_time()
    stats = LatentStats.from_latents(latents)
    train = stats.normalize(latents)
    diffusion = LatentDiffusion(constant_schedule(ex.diffusion_steps), loss=ex.loss)
    config = LatentMLPConfig(run.model.latent_dim, ex.hidden, ex.layers, ex.time_embed_dim,
                             ex.dropout)
    torch.manual_seed(ex.seed)
    model = LatentMLP(config)
    sampler = distributed_sampler(train, shuffle=True, seed=ex.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(train, batch_size=min(ex.batch_size, len(train)),
                                         sampler=sampler, drop_last=True)
    shutil.rmtree(out, ignore_errors=True)  # a partial latent run starts again
    config_ = TrainerConfig(
        lr=ex.lr, weight_decay=ex.weight_decay, betas=(0.9, 0.99), warmup_steps=ex.warmup,
        max_steps=ex.steps, grad_clip=ex.grad_clip, ema_decay=ex.ema_decay,
        log_every=ex.log_every, sample_every=0, checkpoint_every=ex.checkpoint_every,
        keep_last=ex.keep_last, out_dir=str(out), seed=ex.seed, device=str(device),
        progress=False, verbose=False)
    budget = LossBudget(partial(diffusion.training_loss), 60 * args.latent_minutes, {},
                     time.process_time)
    model_config = {"latent": config.to_dict(), "latent_diffusion": diffusion.to_dict(),
                    "latent_stats": stats.to_dict(), "stage1_checkpoint": ae["checkpoint"],
                    "data": {"dataset": "fashion-mnist", "resolution": RESOLUTION,
                             "channels": 1, "num_latents": len(train)}}
    trainer = Trainer(model, budget, config_, model_config=model_config, pass_generator=True)
    budget.trainer = trainer
    result = trainer.fit(loader)
    result = {"encode_seconds": encode_seconds, "train_seconds": time.process_time() - start,
              "steps": result.step, "max_steps": ex.steps, "checkpoint": str(result.checkpoint),
              "num_latents": len(train), "parameters": trainer.num_parameters,
              "sampler": ex.latent_sampler, "sample_steps": ex.latent_sample_steps,
              "diffusion_steps": ex.diffusion_steps, "settings": settings}
    path.write_text(json.dumps(result, indent=2))
    return result


def latent_settings(args: argparse.Namespace, ae: dict) -> dict:
    return {"autoencoder": ae["checkpoint"], "latent_minutes": args.latent_minutes,
            "seed": args.seed, "smoke": args.smoke}


# --------------------------------------------------------------------------- the two arms
def sample_settings(args: argparse.Namespace, **extra) -> dict:
    return {"num_samples": args.num_samples, "sample_steps": args.sample_steps,
            "metrics": args.metrics, "num_real": args.num_real, "seed": args.seed,
            "smoke": args.smoke, **extra}


def timed(draw) -> tuple[torch.Tensor, dict]:
    r"""``draw()`` and its CPU and wall-clock seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    images = draw()
    return images, {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def finish_arm(args: argparse.Namespace, name: str, diffusion, images, seconds, extra) -> dict:
    r"""Deblurs, scores and caches one arm's samples (``<name>.json``, ``<name>.pt``)."""
    images = deblur(diffusion, images)
    torch.save(images[:64].clone(), args.out / f"{name}.pt")
    n = images.size(0)
    result = {**extra, "sample_cpu_per_image": seconds["cpu"] / n,
              "sample_wall_per_image": seconds["wall"] / n,
              "metrics": score(args, {"deblurred": images})["deblurred"],
              "machine": machine_description(resolve_device(args.device))}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result


def two_stage_arm(args: argparse.Namespace, ae: dict, run, latent: dict) -> dict:
    settings = sample_settings(args, latent=latent["checkpoint"])
    path = args.out / "two_stage.json"
    cached = json.loads(path.read_text()) if path.exists() else None
    if cached is not None and cached["settings"] == settings:
        return cached
    device = resolve_device(args.device)
    model, diffusion, stats = load_latent(latent["checkpoint"])

    def draw() -> torch.Tensor:
        z = sample_latents(model, diffusion, args.num_samples, stats.dim, stats=stats,
                           sampler=latent["sampler"], steps=latent["sample_steps"],
                           generator=torch.Generator(device).manual_seed(args.seed),
                           device=device)
        return torch.cat([decode_latents(
            run.model, run.diffusion, z[s:s + args.sample_batch], channels=1,
            shape=(RESOLUTION, RESOLUTION), steps=args.sample_steps, eta=0.0, progress=False,
            generator=torch.Generator(device).manual_seed(args.seed + 1 + b), device=device,
        ).images.float().clamp(-1, 1).cpu()
            for b, s in enumerate(range(0, args.num_samples, args.sample_batch))])

    images, seconds = timed(draw)
    return finish_arm(args, "two_stage", run.diffusion, images, seconds, {"settings": settings})


def single_stage_arm(args: argparse.Namespace) -> dict:
    r"""The worker's job: trains the single-stage model for the autoencoder's CPU time, then
    (once the parent has written ``latent.json``) on to the two-stage total, samples and
    scores it."""
    ae = first_stage(args)
    out, latent_path, parent = args.out / "single", args.out / "latent.json", os.getppid()
    config = unet_config("tiny", 1) if args.smoke else UNetConfig.preset(RESOLUTION)
    train = partial(train_infdiff, out, training_data(), config, RESOLUTION, ae["rate"],
                    recipe=Recipe(**ae["recipe"]), data_name="fashion-mnist", seed=args.seed,
                    clock="cpu")
    ledger = json.loads((out / "budget.json").read_text()) if (out / "budget.json").exists() \
        else {}
    if not latent_path.exists() and not ledger.get("done"):
        train(minutes=ae["seconds"] / 60)
    while not latent_path.exists():
        if os.getppid() != parent:
            raise SystemExit("the parent process is gone before writing latent.json")
        time.sleep(5)
    latent = json.loads(latent_path.read_text())
    total = ae["seconds"] + latent["encode_seconds"] + latent["train_seconds"]
    trained = train(minutes=total / 60)
    device = resolve_device(args.device)
    run = load_pretrained(trained["checkpoint"], weights="ema", device=device)
    images, seconds = timed(lambda: draw_samples(
        run.model, run.diffusion, args.num_samples, RESOLUTION, 1, args.sample_steps,
        args.sample_batch, args.seed + 1, device))
    return finish_arm(args, "single", run.diffusion, images, seconds,
                      {**trained, "settings": sample_settings(args, budget_seconds=total)})


def run(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    ae = first_stage(args)
    argv = [*args.argv, "--autoencoder", str(args.autoencoder)]
    path = args.out / "latent.json"
    latent = json.loads(path.read_text()) if path.exists() else None
    if latent is not None and latent["settings"] != latent_settings(args, ae):
        path.unlink()  # stale: the worker must wait for the new one
        latent = None
    single = args.out / "single.json"
    single = json.loads(single.read_text()) if single.exists() else None
    done = latent is not None and single is not None and single["settings"] == sample_settings(
        args, budget_seconds=ae["seconds"] + latent["encode_seconds"] + latent["train_seconds"])
    worker = None if done else subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", *argv], cwd=ROOT)
    try:
        device = resolve_device(args.device)
        autoencoder = load_pretrained(ae["checkpoint"], weights="ema", device=device)
        latent = latent_stage(args, ae, autoencoder)
        two = two_stage_arm(args, ae, autoencoder, latent)
    except BaseException:
        if worker is not None:
            worker.terminate()  # the trainer checkpoints on SIGTERM; a rerun resumes
        raise
    if worker is not None and worker.wait() != 0:
        raise RuntimeError("the single-stage worker failed; see its output above")
    single = json.loads((args.out / "single.json").read_text())
    return {"autoencoder": ae, "latent": latent, "two_stage": two, "single": single,
            "device": str(device), "machine": machine_description(device)}


# --------------------------------------------------------------------------- the report
def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    rows = [(label, torch.load(args.out / f"{name}.pt", weights_only=True)[:16])
            for name, label in (("single", "single-stage"), ("two_stage", "two-stage"))]
    args.figures.mkdir(parents=True, exist_ok=True)
    return compact_figure(save_rows(rows, args.figures / "bench_two_stage.png"))


def report(args: argparse.Namespace, result: dict, picture: Path | None) -> str:
    ae, lat, two, one = (result[k] for k in ("autoencoder", "latent", "two_stage", "single"))
    fid = "fid" in two["metrics"]
    key, metric = ("fid", "FID") if fid else ("swd", "SWD ×10³")
    total = ae["seconds"] + lat["encode_seconds"] + lat["train_seconds"]

    def row(name: str, train: str, steps: str, r: dict) -> list[str]:
        m = r["metrics"]
        kid = kid_cell(m, digits=2) if fid else "—"
        return [name, train, steps, f"{m[key]:.2f}", kid,
                f"{r['sample_cpu_per_image']:.3f} ({r['sample_wall_per_image']:.3f})"]

    mins = lambda s: f"{s / 60:.1f} min"  # noqa: E731
    rows = [row("two-stage", f"{mins(ae['seconds'])} autoencoder + {mins(lat['encode_seconds'])}"
                f" encoding + {mins(lat['train_seconds'])} latent = {mins(total)}",
                f"{ae['steps']:,} + {lat['steps']:,} latent", two),
            row("single-stage", mins(one["train_seconds"]), f"{one['steps']:,}", one)]
    a, b = two["metrics"][key], one["metrics"][key]
    s, recipe = one["settings"], one["recipe"]
    lines = [
        "## Two-stage against single-stage ∞-Diff: Fashion-MNIST 28², equal CPU time", "",
        markdown_table(["arm", "training (CPU)", "optimiser steps", metric, "KID ×10³",
                        "sampling CPU s / image (wall)"], rows), "",
        f"- Goal (issue 15): two-stage {metric} not worse than single-stage at equal total CPU "
        f"time: {a:.2f} vs {b:.2f} — **{'met' if a <= b else 'NOT met'}**",
        f"- Two-stage: the autoencoder of `{relative_to_root(Path(args.autoencoder))}` "
        f"({ae['parameters'] / 1e6:.2f} M parameters, EMA weights); its latent model trained as "
        f"`examples/latent_train.py` does on the {lat['num_latents']:,} latents of the training "
        f"images and their mirror images ({lat['parameters'] / 1e6:.2f} M parameters, "
        f"{lat['steps']:,} of at most {lat['max_steps']:,} steps, a "
        f"{lat['settings']['latent_minutes']:g} min CPU budget); z by {lat['sampler'].upper()} "
        f"({lat['sample_steps'] or lat['diffusion_steps']} steps), decoded by DDIM "
        f"{s['sample_steps']} steps, η = 0.",
        f"- Single-stage: {'the tiny smoke model' if s['smoke'] else '`UNetConfig.preset(28)`'}"
        f" ({one['parameters'] / 1e6:.2f} M parameters), the autoencoder's recipe and data "
        f"(batch {recipe['batch_size']}, AdamW {recipe['lr']:g}, {recipe['warmup']} warm-up, "
        f"EMA {recipe['ema_decay']:g}, {recipe['parametrization']} prediction, rate "
        f"{one['rate']:g}, σ = half a pixel) for the two-stage total of {mins(total)} of CPU "
        f"time (spent: {mins(one['train_seconds'])}), in a worker process alongside the latent "
        f"stage; DDIM {s['sample_steps']} steps, η = 0.",
        f"- Scores: {s['num_samples']:,} samples per arm, Wiener-deblurred (inverse SNR 0.05), "
        + (f"FID and KID against the first {s['num_real']:,} Fashion-MNIST test images "
           "(`bench/spectral_grid.py`'s scoring)" if fid else "SWD against as many test images")
        + ". Sampling time: CPU seconds of the process per image (wall clock in brackets; "
        "shared machine), latent sampling included for two-stage.",
        *report_footer(args, result, f" Run folder: `{relative_to_root(args.out)}`."),
    ]
    if picture is not None:
        lines += ["", "![16 samples of each arm: single-stage (top), two-stage (bottom)]"
                  f"(_static/figures/{picture.name})"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--autoencoder", type=Path, default=None,
                   help="run folder of bench/autoencoder.py (default: its output; with "
                   "--smoke a tiny one trained into --out)")
    p.add_argument("--latent-minutes", type=positive_float, default=None,
                   help="CPU budget of the latent training (default: 3; 0.02 with --smoke)")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--num-real", type=positive_int, default=2000,
                   help="test images to score against")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps of the images")
    p.add_argument("--sample-batch", type=positive_int, default=50)
    p.add_argument("--metrics", choices=["fid", "swd"], default="fid")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder")
    p.add_argument("--worker", action="store_true", help="run the single-stage arm (internal)")
    add_device_arg(p)
    add_threads_arg(p, "torch CPU threads of each process")
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny models, seconds of training, 8 samples of 2 steps, SWD (tests)",
                     figures=FIGURES)
    args = p.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--worker"]
    if args.latent_minutes is None:
        args.latent_minutes = 0.02 if args.smoke else 3.0
    if args.autoencoder is None and not args.smoke:
        args.autoencoder = AUTOENCODER
    if args.smoke:
        args.num_samples, args.num_real, args.sample_steps = 8, 8, 2
        args.sample_batch, args.metrics = 4, "swd"
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "two_stage", parse_args, run, report, argv, figure=draw_figure,
                      worker=single_stage_arm)


if __name__ == "__main__":
    main()
