r"""Benchmark (issue 7, and issue 5 #5 on the built-in data; opt-in): samples above the
training resolution.

A model trained at 32² on :class:`~pyg_infdiff.data.ContinuousShapes` (``--checkpoint``, e.g. the
run of ``examples/shapes_demo.py``; or trained here for ``--minutes`` with the public library
parts, resumably) samples the same seeds at 32², 64² and 128² (DDIM, :math:`\eta = 0`). Because
the dataset is analytic, the ground truth exists at every resolution: each sample set is compared
with renders of held-out dataset items at the same resolution (area-averaged pixels), and with
bicubic upsampling of the 32² samples, by the weight-free multi-scale sliced Wasserstein distance
(SWD, lower is better) and, with ``--fid`` and the Inception weights, FID/KID.

Two comparisons per set: **deblurred** samples (Wiener, inverse SNR 0.05, as the examples'
``--deblur``; a further row deblurs only below the training resolution and rolls the rest off,
``undo(..., band=32)``) against the sharp renders, and
**mollified** samples (as the model draws them) against the renders mollified by the same
:math:`T`, the model's own target. A "held-out renders" row gives the metric's floor (renders of
other items against the renders). Goal (issue 5 #5, on this data): ∞-Diff samples beat bicubic
upsampling at 64² and 128².

Durations on this 2-core machine (one thread, preset 32, 256 seeds, 50 DDIM steps): sampling
~3 min at 32², ~6 min at 64², ~30 min at 128²; ``--fid`` adds ~15 min of Inception features;
``--minutes`` adds the training budget. ``--num 128`` halves the sampling. Run::

    python bench/beyond_resolution.py --checkpoint runs/shapes_demo --write
    python bench/beyond_resolution.py --minutes 30 --write   # trains into bench/_out/beyond/
    python bench/beyond_resolution.py --smoke --out /tmp/b   # tiny model, seconds (the tests)

Writes a table into ``docs/benchmarks.md`` and ``docs/_static/figures/bench_beyond.jpg`` (the
first seeds: samples at each resolution, bicubic, renders).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _args import positive_float, positive_int
from _common import ROOT, machine_description, relative_to_root
from _infdiff import FIGURES, Recipe, resolve_device, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _scoring import draw_samples, inception_metrics, renders, swd_metrics, upsample
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from torch import Tensor

from pyg_infdiff.data import ContinuousShapes, ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.metrics import find_inception_weights
from pyg_infdiff.training import Pretrained, load_pretrained

OUT = ROOT / "bench" / "_out" / "beyond"
BAND_ONLY = "∞-Diff sample, Wiener below the training band"
#: The recipe of ``examples/shapes_demo.py`` (the README's main job).
SHAPES_RECIPE = dict(batch_size=16, lr=1e-3, warmup=100, ema_decay=0.995, ema_start=100)


def get_model(args: argparse.Namespace, device: torch.device) -> Pretrained:
    if args.checkpoint is None:
        config = unet_config("tiny" if args.smoke else 32)
        recipe = Recipe(**SHAPES_RECIPE, checkpoint_every=5 if args.smoke else 250)
        if args.smoke:
            recipe.batch_size, recipe.warmup, recipe.ema_start = 4, 5, 0
        dataset = ContinuousShapes(100_000, args.base, ShapesConfig(channels=config.in_channels),
                                   seed=args.seed)
        trained = train_infdiff(args.out / "train", dataset, config, args.base, args.rate,
                                args.minutes, recipe, data_name="shapes", seed=args.seed)
        checkpoint = trained["checkpoint"]
    else:
        checkpoint = args.checkpoint
    return load_pretrained(checkpoint, weights="ema", device=device)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    pretrained = get_model(args, device)
    model, diffusion, info = pretrained.model, pretrained.diffusion, pretrained.info
    base = info.get("data", {}).get("resolution", args.base)
    channels = model.config.out_channels

    def mollify(x: Tensor) -> Tensor:
        return diffusion.mollifier.apply(x, 2)

    def deblur(x: Tensor) -> Tensor:  # Wiener on every frequency of the lattice
        return diffusion.mollifier.undo(x, 2, inv_snr=0.05).clamp(-1, 1)

    def deblur_band(x: Tensor) -> Tensor:  # Wiener below the training band, rolled off above
        return diffusion.mollifier.undo(x, 2, inv_snr=0.05, band=base).clamp(-1, 1)

    sides = [base * s for s in args.scales]
    raw, seconds = {}, {}
    for side in sides:
        start = time.perf_counter()
        raw[side] = draw_samples(model, diffusion, args.num, side, channels, args.steps,
                                 args.batch, args.seed + 1, device)
        seconds[side] = time.perf_counter() - start
        print(f"{args.num} samples at {side}²: {seconds[side]:.0f} s", flush=True)
    sets: dict[int, dict[str, dict[str, Tensor]]] = {}
    truth = {}
    for side in sides:
        real = renders(args.num, side, channels, args.data_seed)
        floor = renders(args.num, side, channels, args.data_seed + 1)
        truth[side] = {"deblurred": real, "mollified": mollify(real)}
        rows = {"∞-Diff sample": {"deblurred": deblur(raw[side]), "mollified": raw[side]},
                "held-out renders (floor)": {"deblurred": floor, "mollified": mollify(floor)}}
        if side != base:
            rows[BAND_ONLY] = {"deblurred": deblur_band(raw[side]), "mollified": None}
            rows[f"bicubic ×{side // base} of {base}² samples"] = {
                "deblurred": upsample(deblur(raw[base]), side),
                "mollified": upsample(raw[base], side)}
        sets[side] = rows
    scores: dict[tuple[int, str, str], dict] = {}
    for side in sides:
        for kind in ("deblurred", "mollified"):
            fakes = {name: v[kind] for name, v in sets[side].items() if v[kind] is not None}
            for name, m in swd_metrics(fakes, truth[side][kind], args.seed).items():
                scores[side, name, kind] = dict(m)
            if args.fid and kind == "deblurred":
                fid = inception_metrics(fakes, truth[side][kind], args.num, None,
                                        device=str(device), seed=args.seed)
                for name, m in fid.items():
                    scores[side, name, kind].update(m)
    figure_rows = [(f"sample {s}x{s}", deblur(raw[s][:8])) for s in sides]
    figure_rows += [(f"bicubic {s}x{s}", upsample(deblur(raw[base][:8]), s))
                    for s in sides if s != base]
    figure_rows += [(f"data {s}x{s}", truth[s]["deblurred"][:8]) for s in sides]
    return {"scores": scores, "sets": {s: list(v) for s, v in sets.items()}, "sides": sides,
            "base": base, "seconds": seconds, "figure_rows": figure_rows,
            "checkpoint": pretrained.path, "step": pretrained.step, "data": info.get("data", {}),
            "params": sum(p.numel() for p in model.parameters()),
            "device": device, "machine": machine_description(device)}


def report(args: argparse.Namespace, result: dict, figure: Path | None) -> str:
    scores, base, data = result["scores"], result["base"], result["data"]
    fid = args.fid
    headers = ["resolution", "images", "SWD ×10³ deblurred vs renders",
               "SWD ×10³ mollified vs mollified renders"]
    if fid:
        headers += ["FID (deblurred)", "KID ×10³ (deblurred)"]
    rows, goals = [], []
    for side in result["sides"]:
        for name in result["sets"][side]:
            d, m = scores[side, name, "deblurred"], scores.get((side, name, "mollified"))
            row = [f"{side}²", name, f"{d['swd']:.1f}", f"{m['swd']:.1f}" if m else "—"]
            if fid:
                row += [f"{d['fid']:.1f}", f"{1e3 * d['kid']:.1f}"]
            rows.append(row)
        if side != base:
            bicubic = f"bicubic ×{side // base} of {base}² samples"
            for kind in ("deblurred", "mollified"):
                ours = scores[side, "∞-Diff sample", kind]["swd"]
                theirs = scores[side, bicubic, kind]["swd"]
                verdict = "met" if ours < theirs else "NOT met"
                goals.append(f"- Goal (issue 5 #5 on this data) at {side}², {kind}: ∞-Diff "
                             f"SWD {ours:.1f} vs bicubic {theirs:.1f} — **{verdict}**")
    source = (f"`{relative_to_root(result['checkpoint'])}` (step {result['step']})"
              if args.checkpoint else
              f"trained here for {args.minutes:g} min (`{relative_to_root(result['checkpoint'])}`)")
    lines = [f"## Beyond the training resolution: {base}² model sampled at "
             + ", ".join(f"{s}²" for s in result["sides"]), "",
             markdown_table(headers, rows), ""]
    if figure is not None:
        lines += [f"![Samples at {', '.join(f'{s}²' for s in result['sides'])}, bicubic "
                  f"upsampling and renders](_static/figures/{figure.name})", ""]
    timing = ", ".join(f"{s}²: {t:.0f} s" for s, t in result["seconds"].items())
    lines += [
        *goals,
        f"- Model: {source}, {result['params'] / 1e6:.2f} M parameters, EMA weights, trained "
        f"at {base}² on `{data.get('dataset', '?')}` with {data.get('subsample', '?')}× "
        "subsampling"
        + (" (the recipe of `examples/shapes_demo.py`: batch 16, lr 1e-3, 100 warm-up steps, "
           "EMA 0.995)." if args.checkpoint is None else "."),
        f"- Samples: {args.num} seeds, the same at every resolution (DDIM η = 0, {args.steps} "
        f"steps; sampling took {timing}). References: {args.num} renders of held-out items "
        f"(dataset seed {args.data_seed}; floor row: seed {args.data_seed + 1}) at each "
        "resolution, 4×4 supersampled. SWD: multi-scale sliced Wasserstein on 7×7 Laplacian-"
        "pyramid patches (levels ≥ 16², mean over levels), as many fakes as reals"
        + ("; FID/KID on the FID Inception features (biased at this sample count: compare "
           "rows, not with published numbers)." if fid else "; FID/KID not run (`--fid`)."),
        *report_footer(args, result),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file or run folder of a 32² ContinuousShapes model")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="without --checkpoint: train for this budget into --out/train "
                   "(resumable)")
    p.add_argument("--rate", type=positive_float, default=4.0,
                   help="training subsampling (with --minutes)")
    p.add_argument("--base", type=positive_int, default=32,
                   help="training resolution (with --minutes)")
    p.add_argument("--scales", default="1,2,4", help="sampling sides as multiples of the base")
    p.add_argument("--num", type=positive_int, default=256, help="seeds per resolution")
    p.add_argument("--batch", type=positive_int, default=16, help="samples per sampling call")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--fid", action="store_true",
                   help="also FID/KID (needs the FID Inception weights)")
    p.add_argument("--data-seed", type=int, default=1000,
                   help="dataset seed of the reference renders (held out from training)")
    p.add_argument("--out", type=Path, default=OUT, help="folder of the run trained here")
    p.add_argument("--seed", type=int, default=0)
    add_device_arg(p)
    add_threads_arg(p, "torch CPU threads")
    add_publish_args(p, "tiny model trained for 3 s at 16², 4 seeds, 2 steps (the tests)",
                     figures=FIGURES)
    args = p.parse_args(argv)
    if args.smoke:
        args.num, args.batch, args.steps, args.base = 4, 4, 2, 16
        if args.checkpoint is None:
            args.minutes = args.minutes or 0.05
    if args.checkpoint is None and args.minutes is None:
        p.error("pass --checkpoint (a 32² ContinuousShapes run) or --minutes (train one here)")
    if args.fid:
        try:
            find_inception_weights()
        except FileNotFoundError as err:
            p.error(f"--fid: {err}")
    args.scales = [int(s) for s in args.scales.split(",")]
    if args.scales[0] != 1:
        p.error("--scales must start at 1")
    return args


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    return compact_figure(save_rows(result["figure_rows"], args.figures / "bench_beyond.png",
                                    cell_size=128))


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "beyond_resolution", parse_args, run, report, argv,
                      figure=draw_figure)


if __name__ == "__main__":
    main()
