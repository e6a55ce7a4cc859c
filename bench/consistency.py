r"""Benchmark (issue 5, #6): resolution consistency of a trained model.

DDIM (:math:`\eta = 0`, deterministic after the initial draw) from the same seeds at the
training resolution :math:`n` and at :math:`2n` (28² and 56² for a Fashion-MNIST model): the
initial states are the same mollified noise fields read on both lattices, so the two samples of
a seed are two discretisations of one function, up to the model's own discretisation error. The
:math:`2n` samples are average-pooled by 2 and compared with the :math:`n` samples by PSNR
(peak-to-peak 2, images in :math:`[-1, 1]`), per seed, then averaged over 64 seeds.

For scale, the table also gives the PSNR between *different* seeds at :math:`n` (sample
:math:`i` against sample :math:`i + 1`): what unrelated samples score. Rows: the raw (mollified)
samples, which the model produces, and the same after Wiener deblurring
(:meth:`GaussianMollifier.undo`, inverse SNR 0.05), as the examples show them.

Sampling 64 seeds at 28² and 56² with the 28² preset (50 DDIM steps) takes ~2-3 min on this
2-core machine. Run it on the checkpoint of any run written by
:class:`~pyg_infdiff.training.Trainer` with the examples' ``model_config`` (e.g.
``examples/celebahq_train.py --dataset fashion-mnist``, or an arm of ``bench/quality.py``)::

    python bench/consistency.py --checkpoint runs/fashion-mnist28 --write
    python bench/consistency.py --smoke        # untrained tiny model, 2 steps (the tests)

The checkpoint is loaded with :func:`pyg_infdiff.training.load_pretrained`; sampling is
:func:`_infdiff.draw_samples` (``bench/_infdiff.py``).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_description
from _infdiff import FIGURES, draw_samples, make_diffusion, resolve_device, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, device_line
from torch import Tensor

from pyg_infdiff.data.images import save_rows
from pyg_infdiff.models import MultiscaleOperatorUNet
from pyg_infdiff.training import load_pretrained


def psnr(a: Tensor, b: Tensor, peak: float = 2.0) -> Tensor:
    r"""Per-image PSNR in dB, :math:`10 \log_{10}(\text{peak}^2 / \mathrm{MSE})`, of batches
    :math:`(B, C, H, W)`."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-20)
    return 10.0 * torch.log10(peak**2 / mse)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if args.checkpoint is not None:
        pretrained = load_pretrained(args.checkpoint, weights=args.weights, device=device)
        model, diffusion, trained = pretrained.model, pretrained.diffusion, pretrained.resolution
        source = f"`{pretrained.path}` (step {pretrained.step}, {args.weights} weights)"
    else:  # --smoke without a checkpoint: an untrained tiny model
        torch.manual_seed(args.seed)
        model = MultiscaleOperatorUNet(unet_config("tiny")).to(device).eval()
        trained, source = 16, "an untrained tiny model (smoke test)"
        diffusion = make_diffusion(trained)
    base = args.resolution or trained
    if base is None:
        raise SystemExit("The checkpoint does not record its training resolution: pass "
                         "--resolution")
    channels = model.config.out_channels
    sides = (base, base * args.scale)
    samples, seconds = {}, {}
    for side in sides:
        start = time.perf_counter()
        samples[side] = draw_samples(model, diffusion, args.num, side, channels, args.steps,
                                     args.batch, args.seed, device)
        seconds[side] = time.perf_counter() - start
        print(f"{args.num} samples at {side}²: {seconds[side]:.1f} s", flush=True)
    low, high = samples[sides[0]], samples[sides[1]]
    pooled = F.avg_pool2d(high, args.scale)
    rows = {}
    for name, fn in (("mollified", lambda x: x),
                     ("deblurred", lambda x: diffusion.mollifier.undo(x, 2, inv_snr=0.05)
                      .clamp(-1, 1))):
        a, b = fn(low), F.avg_pool2d(fn(high), args.scale)
        same = psnr(b, a)
        other = psnr(a, a.roll(1, dims=0)) if a.size(0) > 1 else torch.full((1,), math.nan)
        rows[name] = {"same": same, "other": other}
    return {"rows": rows, "samples": (low, high, pooled), "sides": sides, "seconds": seconds,
            "source": source, "device": device, "machine": machine_description(device),
            "params": sum(p.numel() for p in model.parameters()), "trained": trained}


def report(args: argparse.Namespace, result: dict, figure: Path | None) -> str:
    n, m = result["sides"]
    table = []
    for name, r in result["rows"].items():
        same, other = r["same"], r["other"]
        table.append([name, f"{same.mean():.2f}", f"{same.median():.2f}",
                      f"{same.min():.2f}–{same.max():.2f}", f"{other.mean():.2f}"])
    lines = [f"## Resolution consistency: the same seeds at {n}² and {m}²", "",
             markdown_table(["samples", f"PSNR {m}²↓{n}² vs {n}² (dB, mean)", "median",
                             "min–max", "different seeds (dB, mean)"], table), ""]
    if figure is not None:
        lines += [f"![The same seeds at {n}² and {m}²](_static/figures/{figure.name})", ""]
    lines += [
        f"- Model: {result['source']}, {result['params'] / 1e6:.2f} M parameters, trained at "
        f"{result['trained']}². {args.num} seeds: DDIM η = 0, {args.steps} steps, "
        f"`pyg_infdiff.diffusion.sample(shape=...)` in batches of {args.batch} (batch b seeded "
        f"{args.seed} + b at both resolutions, so each sample starts from the same mollified "
        f"noise field at both). The {m}² samples are average-pooled by {args.scale}; PSNR with "
        "peak-to-peak 2 (images in [-1, 1]), per seed, then mean/median/range over seeds. "
        "\"Different seeds\": sample i against sample i+1 at the lower resolution. "
        "\"Deblurred\": both sets Wiener-deblurred (inverse SNR 0.05) before pooling.",
        f"- Sampling time: {result['seconds'][n]:.0f} s at {n}², {result['seconds'][m]:.0f} s "
        f"at {m}² for {args.num} samples. {device_line(args, result)}",
        "- Goal: none set by issue 5 (#6 asks for the number).",
        f"- Command: `{args.command}`",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file or run folder (required unless --smoke)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--resolution", type=int, default=None,
                   help="the lower resolution (default: the checkpoint's training resolution)")
    p.add_argument("--scale", type=int, default=2, help="the higher resolution's multiple")
    p.add_argument("--num", type=int, default=64, help="seeds (samples per resolution)")
    p.add_argument("--batch", type=int, default=16, help="samples per sampling call")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0)
    add_device_arg(p)
    add_threads_arg(p)
    add_publish_args(p, "4 seeds, 2 steps; an untrained tiny model without --checkpoint",
                     figures=FIGURES)
    args = p.parse_args(argv)
    if args.smoke:
        args.num, args.batch, args.steps = 4, 4, 2
    elif args.checkpoint is None:
        p.error("--checkpoint is required (or --smoke)")
    if min(args.scale, args.num, args.batch, args.steps) < 1:
        p.error("--scale, --num, --batch and --steps must be positive")
    return args


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    r"""The first 8 seeds at both resolutions, and the higher one pooled."""
    low, high, pooled = (x[:8] for x in result["samples"])
    n, m = result["sides"]
    return compact_figure(save_rows([(f"{n}x{n}", low), (f"{m}x{m}", high),
                                     (f"{m}x{m} pooled to {n}x{n}", pooled)],
                                    args.figures / "bench_consistency.png"))


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "consistency", parse_args, run, report, argv, figure=draw_figure)


if __name__ == "__main__":
    main()
