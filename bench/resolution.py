r"""Benchmark (issue 5, #3): sampling cost at 1×, 2× and 4× the training resolution.

One model per training resolution (:meth:`UNetConfig.preset` 28, grey, and 32, RGB: 1.30 M
parameters each) samples with :func:`pyg_infdiff.diffusion.sample` (DDIM, :math:`\eta = 0`,
100 steps) on full lattices of 1×, 2× and 4× its training side (28 → 56 → 112 and
32 → 64 → 128), the same weights and the same mollified noise (σ = half a training pixel, fixed
in domain units). Sampling cost does not depend on the values of the weights, so the models are
freshly initialised. The cases are interleaved round-robin (:func:`_common.time_cases`);
times are per image, ratios to 1×.

Goal (issue 5): 16× the pixels (4× the side) for at most 20× the cost.

Run::

    python bench/resolution.py                # prints a markdown table
    python bench/resolution.py --write        # also docs/benchmarks.md + the plot
    python bench/resolution.py --presets 32 --steps 50
    python bench/resolution.py --smoke        # tiny model, 2 steps (the tests)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _args import positive_int
from _common import machine_description, time_cases
from _infdiff import FIGURES, make_diffusion, parse_preset, resolve_device, unet_config
from _publish import add_publish_args, markdown_table, save_figure
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from subsampling import make_model

from pyg_infdiff.diffusion import sample

GOAL_SCALE, GOAL_COST = 4, 20.0
TINY_RESOLUTION = 16


def training_resolution(preset: int | str) -> int:
    return TINY_RESOLUTION if preset == "tiny" else int(preset)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cases, params = {}, {}
    for preset in args.presets:
        config = unet_config(preset)
        base = training_resolution(preset)
        diffusion = make_diffusion(base)
        model, _ = make_model(config, device, args.seed)
        model.eval()
        params[preset] = sum(p.numel() for p in model.parameters())
        for scale in args.scales:
            side = base * scale

            def draw(model=model, diffusion=diffusion, side=side, channels=config.in_channels):
                return sample(model, diffusion, shape=(side, side), num_samples=args.batch,
                              channels=channels, steps=args.steps, sampler="ddim", eta=0.0,
                              generator=torch.Generator(device=device).manual_seed(args.seed),
                              progress=False, device=device).images

            cases[preset, scale] = draw
    print(f"timing {len(cases)} cases: {args.warmup} warm-up + {args.repeats} repeats, "
          "interleaved", flush=True)
    named = {f"{p} {s}": fn for (p, s), fn in cases.items()}
    timings = time_cases(named, args.repeats, args.warmup, device)
    rows = []
    for preset in args.presets:
        base = training_resolution(preset)
        t1 = timings[f"{preset} {args.scales[0]}"].median
        for scale in args.scales:
            t = timings[f"{preset} {scale}"]
            rows.append({"preset": preset, "base": base, "scale": scale, "side": base * scale,
                         "pixels": (scale / args.scales[0]) ** 2,
                         "per_image": t.median / args.batch,
                         "spread": tuple(v / args.batch for v in t.spread),
                         "cost": t.median / t1})
    return {"rows": rows, "params": params, "device": device,
            "machine": machine_description(device)}


def report(args: argparse.Namespace, result: dict, figure: Path | None) -> str:
    rows = result["rows"]
    table = []
    for r in rows:
        lo, hi = r["spread"]
        table.append([f"{r['preset']} ({result['params'][r['preset']] / 1e6:.2f} M)",
                      f"{r['side']}² ({r['scale']}×)", f"{r['pixels']:g}×",
                      f"{r['per_image']:.3g} [{lo:.3g}–{hi:.3g}]", f"{r['cost']:.2f}×",
                      f"{r['cost'] / r['pixels']:.2f}"])
    lines = ["## Resolution scaling: sampling cost at 1×, 2×, 4× the training resolution", "",
             markdown_table(["preset (parameters)", "sampled at", "pixels", "per image (s)",
                             "cost", "cost ÷ pixels"], table), ""]
    if figure is not None:
        lines += [f"![Sampling cost vs pixels](_static/figures/{figure.name})", ""]
    for r in rows:
        if r["scale"] == GOAL_SCALE * args.scales[0]:
            verdict = "met" if r["cost"] <= GOAL_COST else "NOT met"
            lines.append(f"- Goal (issue 5 #3), preset {r['preset']}: 16× the pixels "
                         f"({r['base']}² → {r['side']}²) for {r['cost']:.2f}× the cost "
                         f"(goal ≤ 20×) — **{verdict}**")
    lines += [
        f"- Sampling: `pyg_infdiff.diffusion.sample(shape=(n, n))`, DDIM η = 0, {args.steps} "
        f"steps, batches of {args.batch} images (time per image), initial mollified noise field "
        "included; one model per preset (its weights do not change the cost), mollifier "
        "σ = half a training pixel. The kernel integral operators run on the full lattices "
        "through the dense path (direct or FFT convolution, chosen by `KernelIntegralConv`); "
        "their radius is fixed in domain units, so it spans more pixels at higher resolution, "
        "while the dense U-Net stays on its fixed grid.",
        f"- Timing: median of {args.repeats} repeats after {args.warmup} warm-up (bracket: "
        f"{'quartiles' if args.repeats >= 4 else 'min–max'}), all cases interleaved "
        "round-robin; \"cost\" is the median over the 1× median of the same model; \"cost ÷ "
        "pixels\" below 1 means sub-linear in the pixel count.",
        *report_footer(args, result),
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    pixels = sorted({r["pixels"] for r in rows})
    for preset in dict.fromkeys(r["preset"] for r in rows):
        sel = [r for r in rows if r["preset"] == preset]
        ax.plot([r["pixels"] for r in sel], [r["cost"] for r in sel], "o-",
                label=f"preset {preset} ({sel[0]['base']}² → {sel[-1]['side']}²)")
    ax.plot(pixels, pixels, ":", color="grey", label="linear in pixels")
    ax.plot([GOAL_SCALE**2], [GOAL_COST], "r*", markersize=12, label="goal: ≤ 20× at 16×")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(pixels, [f"{p:g}×" for p in pixels])
    ax.set_yticks([1, 2, 4, 8, 16, 32], ["1×", "2×", "4×", "8×", "16×", "32×"])
    ax.set_xlabel("pixels (relative to the training resolution)")
    ax.set_ylabel("sampling time per image (relative)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--presets", default="28,32",
                   help="comma list of UNetConfig presets; each is trained (and sampled 1×) at "
                   "its own resolution ('tiny': 16²)")
    p.add_argument("--scales", default="1,2,4", help="sampling sides as multiples of training")
    p.add_argument("--steps", type=positive_int, default=100, help="DDIM steps")
    p.add_argument("--batch", type=positive_int, default=2, help="images per sampling call")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny model, 2 DDIM steps, one repeat (for the tests)",
                     figures=FIGURES, figure="plot")
    args = p.parse_args(argv)
    if args.smoke:
        args.presets, args.steps, args.repeats, args.batch = "tiny", 2, 1, 1
    args.presets = [parse_preset(s) for s in str(args.presets).split(",")]
    args.scales = [int(s) for s in str(args.scales).split(",")]
    if min(args.scales) < 1:
        p.error("--scales must be positive")
    return args


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    return plot(result["rows"], args.figures / "bench_resolution.png")


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "resolution", parse_args, run, report, argv, figure=draw_figure)


if __name__ == "__main__":
    main()
