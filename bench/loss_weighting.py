r"""Benchmark (issue 13, #3): the main job's model with uniform and with Min-SNR loss weights,
at equal training time.

Each arm runs the README's main job itself, ``examples/shapes_demo.py`` (x₀ prediction, 1,024
random pixels of :math:`128^2` renders of ``ShapesConfig.simple()``, preset 32), for
``--minutes`` of wall-clock training, with ``--snr-gamma`` :math:`\gamma` as its only
difference: :math:`\gamma = 0` weighs every step alike (the ∞-Diff paper's loss),
:math:`\gamma > 0` weighs step :math:`t` by :math:`\min(\mathrm{SNR}_t, \gamma)` rescaled to
mean 1 (:func:`~pyg_infdiff.diffusion.min_snr_weight`). The arms train side by side, one torch
thread each, so they share the machine alike. Then, with the EMA weights of each arm:

* **the denoiser**: the mean squared error of its :math:`T x_0` prediction at a few time steps,
  on ``--denoise-items`` held-out items on the :math:`32^2` lattice (the same items, noise
  fields and steps for every arm). An :math:`x_0` model trained with uniform weights learns the
  near-clean steps last, so even from an almost clean input it returns a blurred image, and
  the last sampling step returns that image;
* **samples**: ``--num-samples`` samples on the :math:`32^2` lattice, the training node count
  (DDIM, :math:`\eta = 0`, ``--sample-steps`` steps, the same seeds in every arm), as drawn
  (mollified), scored against as many held-out renders at :math:`32^2` with the multi-scale
  SWD and with KID and FID on the FID Inception features (``--metrics swd`` skips those).

Writes a table into ``docs/benchmarks.md`` and a figure of the first 8 samples of every arm
(``docs/_static/figures/bench_loss_weighting.png``). Arms are cached in ``--out``
(``arm_g<gamma>/`` is the demo's run folder, ``arm_g<gamma>.json`` its scores); a rerun skips
finished arms. About ``--minutes`` + 1 of training (both arms at once), then ~3 min per arm to
sample and score at the defaults. Run::

    python bench/loss_weighting.py --minutes 6 --write
    python bench/loss_weighting.py --smoke --out /tmp/lw     # a few steps, SWD (tests)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _args import positive_float, positive_int
from _common import ROOT, cached_with_settings, machine_description
from _infdiff import (
    add_main_job_arm_args,
    main_job_argv,
    main_job_arm_smoke,
    sample_main_job_arm,
)
from _publish import markdown_table
from _scoring import inception_metrics, main_job_held_out, swd_metrics
from _skeleton import bench_main, bench_parser, figure_and_footer, run_jobs

from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import call_denoiser
from pyg_infdiff.graph import LatticeIndex, lattice

OUT = ROOT / "bench" / "_out" / "loss_weighting"
FIGURE = "bench_loss_weighting.png"
SIDE = 32
STEPS = (10, 50, 150, 300, 500, 800)


def train_argv(args: argparse.Namespace, gamma: float) -> list[str]:
    r"""The command line of the demo for one arm, run in its own process (one torch
    thread)."""
    return main_job_argv(arm_dir(args, gamma), args, "--snr-gamma", f"{gamma:g}",
                         budget=["--minutes", f"{args.minutes:g}"])


def arm_dir(args: argparse.Namespace, gamma: float) -> Path:
    return args.out / f"arm_g{gamma:g}"


@torch.no_grad()
def denoiser_errors(pretrained, images: torch.Tensor, seed: int) -> dict[str, float]:
    r"""The mean squared error of the model's :math:`T x_0` prediction at each of
    :data:`STEPS`, on :obj:`images` mollified and read on their full lattice."""
    model, diffusion = pretrained.model, pretrained.diffusion
    num, channels, side = images.size(0), images.size(1), images.size(-1)
    x0 = diffusion.mollifier.apply(images, 2).flatten(2).transpose(1, 2).reshape(-1, channels)
    pos = lattice((side, side)).repeat(num, 1)
    batch = torch.arange(num).repeat_interleave(side * side)
    index = LatticeIndex.full((side, side), num)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for step in STEPS:
        t = torch.full((num,), step)
        noise = diffusion.draw_noise(num, channels, pos, batch, index, generator)
        x_t = diffusion.q_sample(x0, t, noise, batch)
        output = call_denoiser(model, x_t, pos, t, batch, None, index)
        out[str(step)] = (diffusion.predict_x0(output, x_t, t, batch) - x0).pow(2).mean().item()
    return out


def sample_arm(args: argparse.Namespace, gamma: float, real: torch.Tensor) -> dict:
    r"""Samples one trained arm and measures its denoiser; its samples go to ``"samples"``."""
    folder = arm_dir(args, gamma)
    pretrained, drawn = sample_main_job_arm(folder, args, SIDE)
    torch.save(drawn["samples"][:8].clone(), folder / "first_samples.pt")
    return {"gamma": gamma, **drawn,
            "denoiser_mse": denoiser_errors(pretrained, real[:args.denoise_items], args.seed),
            "settings": settings_of(args)}


def score(args: argparse.Namespace, fakes: dict[str, torch.Tensor],
          real: torch.Tensor) -> dict[str, dict]:
    r"""SWD of every set of :obj:`fakes`, and KID and FID unless ``--metrics swd`` (the real
    set's Inception features computed once for all of them)."""
    metrics = swd_metrics(fakes, real)
    if args.metrics == "fid" and fakes:
        for name, values in inception_metrics(fakes, real, real.size(0), None,
                                              seed=args.seed).items():
            metrics[name].update(values)
    return metrics


def settings_of(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in (
        "minutes", "num_samples", "sample_steps", "denoise_items", "metrics", "threads",
        "seed", "smoke")}


def cached(args: argparse.Namespace, gamma: float) -> dict | None:
    return cached_with_settings(args.out / f"arm_g{gamma:g}.json", settings_of(args))


def run(args: argparse.Namespace) -> dict:
    r"""Trains the unfinished arms side by side, then samples and scores them one by one."""
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [g for g in args.gammas if cached(args, g) is None]
    run_jobs({arm_dir(args, g).name: train_argv(args, g) for g in todo},
             poll=0.2 if args.smoke else 2.0, what="demo")
    real = main_job_held_out(args.num_samples, SIDE)
    drawn = {f"{gamma:g}": sample_arm(args, gamma, real) for gamma in todo}
    metrics = score(args, {name: arm.pop("samples") for name, arm in drawn.items()}, real)
    for name, arm in drawn.items():
        arm["metrics"] = metrics[name]
        (args.out / f"arm_g{name}.json").write_text(json.dumps(arm, indent=2))
    arms = {g: cached(args, g) for g in args.gammas}
    return {"arms": arms, "device": "cpu", "machine": machine_description("cpu")}


def figure(args: argparse.Namespace, result: dict) -> Path:
    rows = [(label(gamma), torch.load(arm_dir(args, gamma) / "first_samples.pt"))
            for gamma in result["arms"]]
    rows.append(("held-out renders", main_job_held_out(8, SIDE)))
    return save_rows(rows, args.figures / FIGURE, cell_size=96)


def label(gamma: float) -> str:
    return "uniform weights" if gamma == 0 else f"Min-SNR, gamma {gamma:g}"


def report(args: argparse.Namespace, result: dict, picture: Path | None = None) -> str:
    arms = result["arms"]
    lines = ["## Loss weighting of the main job: uniform against Min-SNR, equal training time",
             ""]
    fid = all("fid" in r["metrics"] for r in arms.values())
    rows = []
    for gamma, r in arms.items():
        m = r["metrics"]
        scores = [f"{m['swd']:.1f}"]
        scores += [f"{1e3 * m['kid']:.1f}", f"{m['fid']:.1f}"] if fid else ["—", "—"]
        rows.append([label(gamma), f"{r['steps']:,}", *scores,
                     *[f"{1e3 * r['denoiser_mse'][str(s)]:.2f}" for s in STEPS]])
    lines += [markdown_table(["loss", "steps", "SWD ×10³", "KID ×10³", "FID",
                              *[f"x₀ MSE ×10³ at t={s}" for s in STEPS]], rows), ""]
    s = next(iter(arms.values()))["settings"]
    budget = "--smoke" if s["smoke"] else f"--minutes {s['minutes']:g}"
    lines += [
        f"- Arms: `examples/shapes_demo.py {budget} --threads {s['threads']} --snr-gamma G` "
        "(the README's main job, x₀ prediction, preset 32, 1,024 random pixels of 128² "
        "renders of `ShapesConfig.simple()`), side by side, one torch thread each; G = 0 is "
        "the uniform loss.",
        f"- Samples: {s['num_samples']} per arm on the 32² lattice (the training node count; "
        f"EMA weights, DDIM η = 0, {s['sample_steps']} steps, the same seeds), as drawn "
        f"(mollified), against {s['num_samples']} held-out renders at 32²: multi-scale SWD"
        + (", KID (on the whole sets: no spread over subsets) and FID on the FID Inception "
           "features (few samples: FID is biased upwards; compare the arms, not other tables)."
           if fid else "."),
        f"- x₀ MSE: the denoiser's error on {s['denoise_items']} held-out items on the 32² "
        "lattice, mollified, at each step t (the same noise fields for every arm).",
    ]
    lines += figure_and_footer(args, result, picture,
                               "The first 8 samples of each arm at 32², above held-out renders")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--gammas", type=float, nargs="+", default=[0.0, 5.0],
                   help="--snr-gamma of each arm (0: uniform weights)")
    p.add_argument("--minutes", type=positive_float, default=6.0,
                   help="wall-clock training budget of every arm (they run at once)")
    p.add_argument("--denoise-items", type=positive_int, default=16)
    p.add_argument("--metrics", choices=["fid", "swd"], default="fid")
    add_main_job_arm_args(p, OUT, num_samples=256)
    args = p.parse_args(argv)
    main_job_arm_smoke(args)
    if args.smoke:
        args.denoise_items, args.metrics = 2, "swd"
    args.gammas = list(dict.fromkeys(args.gammas))
    if min(args.gammas) < 0:
        p.error("--gammas must be non-negative")
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "loss_weighting", parse_args, run, report, argv, figure=figure)


if __name__ == "__main__":
    main()
