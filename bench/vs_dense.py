r"""Benchmark (issue 5, #2): ∞-Diff against a dense DDPM of similar size.

At each resolution (28² and 64² by default), side by side in one run:

* **∞-Diff**: the multiscale operator U-Net of :meth:`UNetConfig.preset` of the resolution
  (28²: grey, 1.30 M parameters; 64²: RGB, 40.0 M), trained as
  :class:`~pyg_infdiff.training.Trainer` does (AdamW, gradient clip 1; EMA excluded) on graphs
  of all pixels (rate 1) and of a quarter of them (rate 4, the library's training default);
  sampled with :func:`pyg_infdiff.diffusion.sample` (DDIM, :math:`\eta = 0`) on full lattices.
* **dense DDPM**: ``diffusers`` :class:`UNet2DModel` built by ``bench/baseline_ddpm.py`` at the
  parameter count of the ∞-Diff model, with its documented settings: one step of
  :func:`baseline_ddpm.dense_train_step` (epsilon MSE, clip 1, AdamW lr 1e-4, betas
  (0.95, 0.999), weight decay 1e-6 as in ``diffusers``' ``train_unconditional.py``) and
  :func:`baseline_ddpm.dense_sample` with :class:`DDIMScheduler` (:math:`\eta = 0`).

Both train on the same batch of :class:`~pyg_infdiff.data.ContinuousShapes` images and both
sample 100 DDIM steps in batches of the same size; sampling times are reported per image. All
cases are interleaved round-robin (:func:`_common.time_cases`), after one untimed warm-up call
of each (sampling warmed up with 2 steps). Goal: ∞-Diff sampling no slower than the dense model.

Run::

    python bench/vs_dense.py                  # prints markdown tables
    python bench/vs_dense.py --write          # also docs/benchmarks.md
    python bench/vs_dense.py --resolutions 28 --repeats 5
    python bench/vs_dense.py --smoke          # tiny models at 16², 2 sampling steps (tests)
"""
from __future__ import annotations

import argparse

import torch
from _args import positive_int
from _common import machine_description, time_cases
from _infdiff import make_diffusion, parse_preset, resolve_device, unet_config
from _publish import add_publish_args, markdown_table
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from baseline_ddpm import (
    build_dense_unet,
    count_parameters,
    dense_sample,
    dense_train_step,
    make_scheduler,
)
from subsampling import InfDiffStep, make_model

from pyg_infdiff.data import ContinuousShapes, GraphCollator, ShapesConfig
from pyg_infdiff.diffusion import sample

DENSE = "dense DDPM (diffusers)"


def build_cases(args: argparse.Namespace, res: int, device: torch.device) -> tuple[dict, dict]:
    r"""The timed cases of one resolution and what the report needs about them."""
    config = unet_config(args.preset if args.preset is not None else res)
    channels = config.in_channels
    diffusion = make_diffusion(res)
    model, optimizer = make_model(config, device, args.seed)
    ours_params = sum(p.numel() for p in model.parameters())
    torch.manual_seed(args.seed)  # diffusers initialises from the global RNG
    target = ours_params if args.preset != "tiny" else None
    dense = build_dense_unet(res, channels, target, **({"width": 8} if target is None else {}))
    dense = dense.to(device)
    dense_opt = torch.optim.AdamW(dense.parameters(), lr=1e-4, betas=(0.95, 0.999),
                                  weight_decay=1e-6, eps=1e-8)
    train_sched, sample_sched = make_scheduler("ddpm"), make_scheduler("ddim")

    batch_size = args.batch_sizes[res]
    data = ContinuousShapes(batch_size, res, ShapesConfig(channels=channels), seed=args.seed)
    images = [data[i] for i in range(batch_size)]
    dense_images = torch.stack(images).to(device)
    cases, info = {}, {"params": {}, "train": {}, "sample": {}}
    for rate in args.rates:
        collator = GraphCollator(diffusion.mollifier, rate=rate, radius=config.radius)
        batch = collator(images, generator=torch.Generator().manual_seed(args.seed))
        gen = torch.Generator(device=device).manual_seed(args.seed)
        name = f"{res} ∞-Diff rate {rate:g}"
        cases[name] = InfDiffStep(model, diffusion, batch.to(device), optimizer, gen)
        info["train"][name] = f"∞-Diff, rate {rate:g}" + (" (all pixels)" if rate == 1 else "")
    dense_gen = torch.Generator(device=device).manual_seed(args.seed)
    name = f"{res} dense train"
    cases[name] = lambda: dense_train_step(dense, train_sched, dense_images, dense_opt,
                                           generator=dense_gen)
    info["train"][name] = DENSE

    def ours_sample(steps: int) -> torch.Tensor:
        model.eval()
        out = sample(model, diffusion, shape=(res, res), num_samples=args.sample_batch,
                     channels=channels, steps=steps, sampler="ddim", eta=0.0,
                     generator=torch.Generator(device=device).manual_seed(args.seed),
                     progress=False, device=device)
        return out.images

    def dense_sampling(steps: int) -> torch.Tensor:
        return dense_sample(dense, sample_sched, args.sample_batch, res, steps,
                            torch.Generator(device=device).manual_seed(args.seed))

    cases[f"{res} ∞-Diff sample"] = lambda: ours_sample(args.sample_steps)
    cases[f"{res} dense sample"] = lambda: dense_sampling(args.sample_steps)
    info["sample"] = {f"{res} ∞-Diff sample": "∞-Diff", f"{res} dense sample": DENSE}
    info["params"] = {"∞-Diff": ours_params, DENSE: count_parameters(dense)}
    info["dense_config"] = tuple(dense.config.block_out_channels)
    info["warmup"] = [*[c for n, c in cases.items() if "sample" not in n],
                      lambda: ours_sample(2), lambda: dense_sampling(2)]
    return cases, info


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cases, infos = {}, {}
    for res in args.resolutions:
        c, infos[res] = build_cases(args, res, device)
        cases.update(c)
        print(f"{res}²: ∞-Diff {infos[res]['params']['∞-Diff']:,} parameters, dense "
              f"{infos[res]['params'][DENSE]:,} (widths {infos[res]['dense_config']})", flush=True)
    for res in args.resolutions:
        for fn in infos[res]["warmup"]:
            fn()
    print(f"timing {len(cases)} cases: {args.repeats} repeats, interleaved", flush=True)
    timings = time_cases(cases, args.repeats, warmup=0, device=device)
    return {"timings": timings, "infos": infos, "device": device,
            "machine": machine_description(device)}


def _cell(t, scale: float = 1.0) -> str:
    lo, hi = t.spread
    return f"{t.median * scale:.3g} [{lo * scale:.3g}–{hi * scale:.3g}]"


def report(args: argparse.Namespace, result: dict) -> str:
    timings, infos = result["timings"], result["infos"]
    train_rows, sample_rows, goals = [], [], []
    for res in args.resolutions:
        info = infos[res]
        dense_train = timings[f"{res} dense train"].median
        for name, label in info["train"].items():
            params = info["params"][DENSE if label == DENSE else "∞-Diff"]
            t = timings[name]
            train_rows.append([f"{res}²", label, f"{params / 1e6:.2f} M", _cell(t),
                               f"{t.median / dense_train:.2f}×"])
        per = 1.0 / args.sample_batch
        dense_sample_t = timings[f"{res} dense sample"].median
        for name, label in info["sample"].items():
            params = info["params"][label if label == DENSE else "∞-Diff"]
            t = timings[name]
            sample_rows.append([f"{res}²", label, f"{params / 1e6:.2f} M", _cell(t, per),
                                f"{t.median / dense_sample_t:.2f}×"])
        ratio = timings[f"{res} ∞-Diff sample"].median / dense_sample_t
        verdict = "met" if ratio <= 1.0 else "NOT met"
        goals.append(f"- Goal (issue 5 #2) at {res}²: ∞-Diff sampling time ≤ dense: "
                     f"{ratio:.2f}× the dense model's time — **{verdict}**")
    dense_widths = "; ".join(f"{res}²: widths {infos[res]['dense_config']}"
                             for res in args.resolutions)
    presets = ", ".join(f"{res}²: preset {args.preset if args.preset is not None else res}"
                        for res in args.resolutions)
    lines = [
        "## Against a dense DDPM (diffusers) of similar size", "",
        "Training: one optimiser step on a batch of "
        + ", ".join(f"{b} images at {r}²" for r, b in args.batch_sizes.items())
        + " (seconds).", "",
        markdown_table(["resolution", "model", "parameters", "step (s)", "÷ dense"], train_rows),
        "",
        f"Sampling: {args.sample_steps} DDIM steps (η = 0), batches of {args.sample_batch}; "
        "seconds per image.", "",
        markdown_table(["resolution", "model", "parameters", "per image (s)", "÷ dense"],
                       sample_rows),
        "",
        *goals,
        f"- ∞-Diff: `UNetConfig.preset` ({presets}), mollifier σ = half a pixel, cosine "
        "schedule; a step is `training_loss` + backward + clip 1 + AdamW (lr 2e-4), on graphs "
        "collated as in training (mollified, uniform subsampling, radius edges; collation not "
        "timed); sampling is `pyg_infdiff.diffusion.sample(shape=...)` on full lattices "
        "(initial mollified noise field included).",
        f"- Dense: `bench/baseline_ddpm.py` `UNet2DModel` at the ∞-Diff parameter count "
        f"({dense_widths}; 2 ResNet blocks per level, attention at ≤ 16² but the first "
        "level), `dense_train_step` (linear 1000-step DDPM, ε-MSE, clip 1, AdamW lr 1e-4, "
        "betas (0.95, 0.999), weight decay 1e-6), `dense_sample` with `DDIMScheduler`. No EMA "
        "in either step.",
        f"- Timing: median of {args.repeats} repeats (bracket: "
        f"{'quartiles' if args.repeats >= 4 else 'min–max'}), every case warmed up once "
        "untimed, all cases interleaved round-robin; \"÷ dense\" is the median time over the "
        "dense model's at the same resolution (below 1: faster than dense).",
        *report_footer(args, result),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--resolutions", default="28,64", help="comma list of image sides")
    p.add_argument("--rates", default="1,4", help="∞-Diff training subsampling rates")
    p.add_argument("--preset", type=parse_preset, default=None,
                   help="UNetConfig.preset at every resolution (default: each resolution's; "
                   "the dense model follows its parameter count)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training images per step (default: 16 at <= 32², 4 above; x4 on CUDA)")
    p.add_argument("--sample-batch", type=positive_int, default=2, help="images per sampling batch")
    p.add_argument("--sample-steps", type=positive_int, default=100, help="DDIM steps")
    p.add_argument("--repeats", type=positive_int, default=3)
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny models at 16², 2 sampling steps, one repeat (for the tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.resolutions, args.rates = "tiny", "16", "1,4"
        args.repeats, args.sample_steps, args.sample_batch = 1, 2, 1
        args.batch_size = args.batch_size or 2
    args.resolutions = [int(r) for r in str(args.resolutions).split(",")]
    args.rates = [float(r) for r in str(args.rates).split(",")]
    cuda = resolve_device(args.device).type == "cuda"
    args.batch_sizes = {
        res: args.batch_size or (16 if res <= 32 else 4) * (4 if cuda else 1)
        for res in args.resolutions}
    if min(args.rates) < 1:
        p.error("rates must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "vs_dense", parse_args, run, report, argv)


if __name__ == "__main__":
    main()
