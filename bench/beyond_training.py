r"""Benchmark (issue 13, opt-in): beyond the training resolution with detail, at equal CPU
training time.

Four arms on :class:`~pyg_infdiff.data.ContinuousShapes`, one architecture (``--preset``, 32 by
default), each trained for ``--minutes`` with the public library parts (resumably):

* **(i)** a model trained on the full :math:`32^2` lattice (every pixel a node), sampled at
  :math:`32^2`, :math:`64^2` and :math:`128^2`;
* **(ii)** bicubic ×2 and ×4 of (i)'s :math:`32^2` samples;
* **(iii)** the same architecture trained on nodes of :math:`128^2` renders at 16×
  subsampling: as many nodes per image as (i), mollifier half a :math:`128^2` pixel (the
  data's resolution, not the node density), sampled at the same resolutions.
  With ``--noise-at nodes`` the noise of (iii) is mollified at half the spacing of its nodes
  instead (2 pixels of :math:`128^2`; the data mollifier stays at half a pixel): the rule of
  (i), whose noise is half its node spacing too (``bench/noise_width.py`` measured both
  widths on the main job's model). That arm trains into its own folder, (i) and (iv) are
  shared, and the run writes its own section and figure (``beyond_training_noise_nodes``);
* **(iv)** the same architecture on every pixel of the :math:`128^2` renders (16× the nodes
  per step).

(``--base`` and ``--factor`` change 32 and 4; the rate of (iii) is ``factor²``.) The training
images of every arm are the same functions (dataset seed ``--seed``), rendered once per
resolution, mollified once and cached (:class:`~pyg_infdiff.data.MollifiedCache`, float16,
``--items`` of them); the build is not part of the training budget and is reported apart.
Every arm trains with the main job's recipe (``examples/shapes_demo.py``: :math:`T x_0`
prediction, Min-SNR-5 loss weights, ``--snr-gamma``) and the kernel radius of ``--radius-px``
pixels of the base resolution (default: the preset's). Samples use the same seeds in every arm
(DDIM with ``--eta``, 1 by default as the main job: every fresh noise is a whole mollified field,
so the seeds stay one function at every resolution) and are deblurred with each
arm's own mollifier (Wiener, inverse SNR 0.05, as the examples' ``--deblur``). Each set is
scored against renders of held-out items at the same resolution (area-averaged pixels) with the
multi-scale SWD, on the deblurred and on the raw samples, and with KID on the FID Inception
features (deblurred; ``--no-kid`` skips it). A "held-out renders" row is the metrics' floor.

Goals (issue 13): at :math:`128^2` (iii) beats (i) and (ii) on SWD and KID; (iii) within 1.5×
of (iv)'s SWD at a step cost at most 1.3× that of (i).

Durations on this 2-core machine (one thread, preset 32): ``4 × --minutes`` of training; the
caches ~1 min (2,048 items at 128², kept in ``--out`` for reruns); sampling 128 seeds with 50
DDIM steps ~1.5 min at 32², ~3 min at 64², ~15 min at 128² per model arm (three of them); KID
~10 min. Samples are kept per arm and resolution in ``--out``/``samples`` with their settings
(checkpoint, seeds, sampler, reading): a rerun draws again only what changed. Run::

    python bench/beyond_training.py --minutes 10 --write   # trains into bench/_out/beyond_training/
    python bench/beyond_training.py --smoke --out /tmp/bt   # tiny model, seconds (the tests)

Writes a table into ``docs/benchmarks.md`` and ``docs/_static/figures/bench_beyond_training.jpg``
(the first seeds of every arm at the highest resolution, and (iii) at the base, with renders);
with ``--noise-at nodes``, the section and figure ``beyond_training_noise_nodes``::

    python bench/beyond_training.py --minutes 8 --num 64 --threads 1 --radius-px 2.5 \
        --noise-at nodes --out bench/_out/bt3 --write   # reuses (i) and (iv) of a run in bt3
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from functools import partial
from pathlib import Path

from _args import positive_float, positive_int
from _beyond_training_arms import (
    FLOOR,
    arm_folder,
    arm_names,
    bicubic_name,
    config_radius_px,
    noise_pixels,
    recipe_of,
    variant,
)
from _common import ROOT, cached_timed, machine_description, relative_to_root
from _infdiff import FIGURES, Recipe, resolve_device, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _scoring import (
    context_label,
    draw_samples,
    inception_metrics,
    kid_cell,
    renders,
    swd_metrics,
    upsample,
)
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from torch import Tensor

from pyg_infdiff.data import ContinuousShapes, MollifiedCache, ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.metrics import find_inception_weights
from pyg_infdiff.noise import GaussianMollifier
from pyg_infdiff.training import load_pretrained

OUT = ROOT / "bench" / "_out" / "beyond_training"
def build_cache(args: argparse.Namespace, side: int, channels: int) -> tuple[MollifiedCache,
                                                                              float]:
    r"""The training set at one resolution, rendered and mollified once (half a pixel)."""
    data = ContinuousShapes(args.items, side, ShapesConfig(channels=channels), seed=args.seed)
    path = args.out / "cache" / f"shapes{side}_n{args.items}_s{args.seed}.pt"
    start = time.perf_counter()
    cache = MollifiedCache(data, GaussianMollifier(0.5 / side), path=path)
    seconds = time.perf_counter() - start
    print(f"cache {side}²: {cache.nbytes / 2**20:.1f} MiB, "
          + ("loaded" if cache.loaded else f"built in {cache.build_seconds:.1f} s"), flush=True)
    return cache, (cache.build_seconds if not cache.loaded else seconds)


def train_arms(args: argparse.Namespace, channels: int) -> dict:
    config = dataclasses.replace(unet_config(args.preset, channels),
                                 radius=config_radius_px(args) / args.base)
    recipe_kwargs = recipe_of(args)
    high, rate = args.base * args.factor, float(args.factor**2)
    caches = {}
    for side in (args.base, high):
        caches[side] = build_cache(args, side, channels)
    plan = {"i": (args.base, 1.0), "iii": (high, rate), "iv": (high, 1.0)}
    trained = {}
    for arm, (side, arm_rate) in plan.items():
        recipe = Recipe(**recipe_kwargs, noise_sigma_pixels=noise_pixels(args, arm_rate))
        # full lattices: no radius edges, the model takes its dense path (at 128² the edges
        # of preset 32's radius, 10 pixels, would number ~80 M per batch)
        trained[arm] = train_infdiff(args.out / arm_folder(args, arm), caches[side][0], config,
                                     side, arm_rate, args.minutes, recipe, data_name="shapes",
                                     seed=args.seed, radius_edges=arm_rate > 1,
                                     device=str(resolve_device(args.device)),
                                     clock=args.clock)
    cache_info = {side: {"mib": c.nbytes / 2**20, "seconds": s, "items": len(c)}
                  for side, (c, s) in caches.items()}
    return {"trained": trained, "caches": cache_info, "config": config}


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    channels = 3
    high, rate = args.base * args.factor, float(args.factor**2)
    names = arm_names(args.base, high, rate)
    if args.noise_at == "nodes":
        names["iii"] += ", noise at the node spacing"
    training = train_arms(args, channels)
    sides = [args.base * 2**k for k in range(int(math.log2(args.factor)) + 1)]
    raw: dict[str, dict[int, Tensor]] = {}
    deblurred: dict[str, dict[int, Tensor]] = {}
    seconds: dict[tuple[str, int], float] = {}
    contexts: dict[tuple[str, int], str] = {}
    for arm in ("i", "iii", "iv"):
        pretrained = load_pretrained(training["trained"][arm]["checkpoint"], weights="ema",
                                     device=device)
        model, diffusion = pretrained.model, pretrained.diffusion
        raw[arm], deblurred[arm] = {}, {}
        for side in sides:
            # on lattices denser than its training nodes, the model reads through a context
            # of its training density (Pretrained.context_for), unless --no-context
            context = None if args.no_context else pretrained.context_for(side * side)
            contexts[arm, side] = context_label(context)
            settings = {"checkpoint": str(training["trained"][arm]["checkpoint"]),
                        "num": args.num, "steps": args.steps, "batch": args.batch,
                        "seed": args.seed + 1, "eta": args.eta, "context": contexts[arm, side],
                        "device": str(device)}
            draw = partial(draw_samples, model, diffusion, args.num, side, channels, args.steps,
                           args.batch, args.seed + 1, device, context, eta=args.eta)
            # kept with their settings: a rerun that changes one arm samples that arm only
            raw[arm][side], seconds[arm, side] = cached_timed(
                args.out / "samples" / f"{arm_folder(args, arm)}_{side}.pt", settings, draw)
            deblurred[arm][side] = diffusion.mollifier.undo(raw[arm][side], 2,
                                                            inv_snr=0.05).clamp(-1, 1)
            print(f"{names[arm]}: {args.num} samples at {side}²: {seconds[arm, side]:.0f} s",
                  flush=True)
    scores: dict[tuple[int, str], dict] = {}
    truth = {}
    for side in sides:
        real = renders(args.num, side, channels, args.data_seed)
        floor = renders(args.num, side, channels, args.data_seed + 1)
        truth[side] = real
        sets = {names["i"]: (deblurred["i"][side], raw["i"][side])}
        if side != args.base:
            sets[bicubic_name(args.base, side)] = (
                upsample(deblurred["i"][args.base], side), upsample(raw["i"][args.base], side))
        for arm in ("iii", "iv"):
            sets[names[arm]] = (deblurred[arm][side], raw[arm][side])
        sets[FLOOR] = (floor, floor)
        for kind, index in (("swd", 0), ("swd_raw", 1)):
            fakes = {name: v[index] for name, v in sets.items()}
            for name, m in swd_metrics(fakes, real, args.seed).items():
                scores.setdefault((side, name), {})[kind] = m["swd"]
        if args.kid:
            fakes = {name: v[0] for name, v in sets.items()}
            kid = inception_metrics(fakes, real, args.num, None, device=str(device),
                                    seed=args.seed)
            for name, m in kid.items():
                scores[side, name].update(kid=m["kid"], kid_std=m["kid_std"])
    figure_rows = [(f"(i) {high}x{high}", deblurred["i"][high][:8]),
                   (f"(ii) bicubic {high}x{high}", upsample(deblurred["i"][args.base][:8], high)),
                   (f"(iii) {high}x{high}", deblurred["iii"][high][:8]),
                   (f"(iii) {args.base}x{args.base}", deblurred["iii"][args.base][:8]),
                   (f"(iv) {high}x{high}", deblurred["iv"][high][:8]),
                   (f"data {high}x{high}", truth[high][:8])]
    (args.out / "result.json").write_text(json.dumps(
        {f"{s} {n}": m for (s, n), m in scores.items()}, indent=2))
    steps = {arm: t["steps"] for arm, t in training["trained"].items()}
    step_seconds = {arm: t["train_seconds"] / max(1, t["steps"])
                    for arm, t in training["trained"].items()}
    return {"scores": scores, "sides": sides, "names": names, "base": args.base, "high": high,
            "rate": rate, "steps": steps, "step_seconds": step_seconds,
            "trained": training["trained"], "caches": training["caches"],
            "params": training["trained"]["i"]["parameters"],
            "seconds": seconds, "contexts": contexts, "figure_rows": figure_rows,
            "device": device,
            "machine": machine_description(device)}


def goals(result: dict, kid: bool) -> list[str]:
    scores, names, high = result["scores"], result["names"], result["high"]
    bicubic = bicubic_name(result["base"], high)
    ours, first, iv = (scores[high, names[a]] for a in ("iii", "i", "iv"))
    second = scores[high, bicubic]
    metrics = ["swd"] + (["kid"] if kid else [])
    beats = all(ours[m] < min(first[m], second[m]) for m in metrics)
    lines = [
        f"- Goal: at {high}², (iii) beats (i) and (ii) on "
        + " and ".join(m.upper() for m in metrics) + ": "
        + "; ".join(f"{m.upper()} {ours[m] * (1e3 if m == 'kid' else 1):.1f} vs "
                    f"{first[m] * (1e3 if m == 'kid' else 1):.1f} and "
                    f"{second[m] * (1e3 if m == 'kid' else 1):.1f}" for m in metrics)
        + f" — **{'met' if beats else 'NOT met'}**"
        + ("" if kid else " (KID not run: `--no-kid`)"),
    ]
    ratio = ours["swd"] / iv["swd"]
    step_ratio = result["step_seconds"]["iii"] / result["step_seconds"]["i"]
    met = ratio <= 1.5 and step_ratio <= 1.3
    lines.append(f"- Goal: (iii) within 1.5× of (iv)'s SWD at {high}² ({ratio:.2f}×) at a step "
                 f"cost ≤ 1.3× that of (i) ({step_ratio:.2f}×) — **{'met' if met else 'NOT met'}**")
    return lines


def report(args: argparse.Namespace, result: dict, figure: Path | None) -> str:
    scores, names, base, high = result["scores"], result["names"], result["base"], result["high"]
    headers = ["resolution", "images", "sampled", "SWD ×10³ (deblurred)", "SWD ×10³ (raw)"]
    how = {(side, names[arm]): label for (arm, side), label in result["contexts"].items()}
    if args.kid:
        headers += ["KID ×10³ (deblurred)"]
    rows = []
    for side in result["sides"]:
        for (s, name), m in scores.items():
            if s != side:
                continue
            row = [f"{side}²", name, how.get((side, name), "—"), f"{m['swd']:.1f}",
                   f"{m['swd_raw']:.1f}"]
            if args.kid:
                row += [kid_cell(m, digits=2)]
            rows.append(row)
    train_headers = ["arm", "data", "nodes / image", "steps", "s / step", "images seen"]
    train_rows = []
    for arm, (side, rate) in (("i", (base, 1.0)), ("iii", (high, result["rate"])),
                              ("iv", (high, 1.0))):
        t = result["trained"][arm]
        noise = noise_pixels(args, rate)
        train_rows.append([names[arm], f"{side}², rate {rate:g}, σ = 0.5/{side}"
                           + ("" if noise is None else f", noise σ = {noise:g}/{side}"),
                           f"{math.ceil(side * side / rate):,}", f"{t['steps']:,}",
                           f"{result['step_seconds'][arm]:.3f}", f"{t['images_seen']:,}"])
    recipe = recipe_of(args)
    caches = "; ".join(f"{side}²: {c['items']:,} items, {c['mib']:.0f} MiB, "
                       f"{c['seconds']:.0f} s" for side, c in result["caches"].items())
    lines = [f"## Beyond the training resolution with detail: sparse nodes of {high}² renders "
             f"vs a {base}² model, at equal training time", "",
             markdown_table(headers, rows), "", markdown_table(train_headers, train_rows), ""]
    if figure is not None:
        lines += [f"![The same seeds in every arm at {high}² (and (iii) at {base}²), with "
                  f"renders](_static/figures/{figure.name})", ""]
    lines += [
        *goals(result, args.kid),
        f"- Model: `--preset {args.preset}` in every arm ({result['params'] / 1e6:.2f} M "
        f"parameters), EMA weights, each trained for {args.minutes:g} min of "
        f"{'CPU' if args.clock == 'cpu' else 'wall-clock'} time (data loading included) "
        "with the recipe of `examples/shapes_demo.py`: "
        + (f"Min-SNR-{args.snr_gamma:g} loss weights" if args.snr_gamma
           else "uniform loss weights")
        + f", batch {recipe['batch_size']}, lr {recipe['lr']:g}, {recipe['warmup']} warm-up "
        f"steps, EMA {recipe['ema_decay']}, predicting T x0, kernel radius "
        f"{config_radius_px(args):.3g} pixels of {base}² (full lattices on the model's dense "
        f"path, without radius edges). Training data: the same {args.items:,} "
        f"functions (seed {args.seed}) rendered at {base}² and {high}², mollified once by "
        "half a pixel of their resolution and cached in float16 (`MollifiedCache`; outside "
        f"the budget: {caches}).",
        f"- Samples: {args.num} seeds, the same in every arm and at every resolution (DDIM η = "
        f"{args.eta:g}, {args.steps} steps), deblurred by each arm's mollifier (Wiener, "
        "inverse SNR 0.05); "
        "'raw' = as sampled. References: renders of held-out items (dataset seed "
        f"{args.data_seed}; floor: seed {args.data_seed + 1}), 4×4 supersampled. SWD: multi-scale "
        "sliced Wasserstein (levels ≥ 16²)"
        + ("; KID on the FID Inception features, biased at this sample count: compare rows."
           if args.kid else "; KID not run (`--no-kid`)."),
        *report_footer(args, result, f" Runs in `{relative_to_root(args.out)}`."),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--minutes", type=positive_float, default=10.0,
                   help="training budget per arm, wall clock (resumable; a larger one continues)")
    p.add_argument("--preset", default="32", help="UNetConfig preset of every arm ('tiny': the "
                   "smoke-test model)")
    p.add_argument("--base", type=positive_int, default=32, help="resolution of arm (i)")
    p.add_argument("--factor", type=int, default=4,
                   help="arms (iii) and (iv) train on base*factor renders, (iii) at rate factor²")
    p.add_argument("--items", type=positive_int, default=2048, help="training items (cached per "
                   "resolution)")
    p.add_argument("--num", type=positive_int, default=128, help="seeds per arm and resolution")
    p.add_argument("--batch", type=positive_int, default=16, help="samples per sampling call")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--kid", action=argparse.BooleanOptionalAction, default=None,
                   help="KID on the FID Inception features (needs their weights; default: on, "
                   "off with --smoke)")
    p.add_argument("--data-seed", type=int, default=1000,
                   help="dataset seed of the reference renders (held out from training)")
    p.add_argument("--out", type=Path, default=OUT, help="folder of the runs and caches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="what --minutes counts: this process's CPU time (fair when the arms "
                   "train one after the other on a shared machine) or wall-clock time")
    p.add_argument("--snr-gamma", type=float, default=5.0,
                   help="Min-SNR-gamma loss weights of every arm (the main job's 5; 0: the "
                   "paper's uniform weights)")
    p.add_argument("--radius-px", type=positive_float, default=None,
                   help="kernel radius of every arm in pixels of --base (default: the "
                   "preset's; the main job uses 2.5)")
    p.add_argument("--eta", type=float, default=1.0,
                   help="DDIM stochasticity of the samples (the main job's 1; 0: deterministic)")
    p.add_argument("--noise-at", choices=["data", "nodes"], default="data",
                   help="the noise's width: half a pixel of the data in every arm (the "
                   "library's default), or, for (iii), half the spacing of its nodes (the data "
                   "mollifier stays at half a pixel)")
    p.add_argument("--no-context", action="store_true",
                   help="sample every arm on plain lattices, without the context of its "
                   "training density that the library uses on denser lattices")
    add_device_arg(p)
    add_threads_arg(p, "torch CPU threads")
    add_publish_args(p, "tiny model, 16² vs 64² renders at rate 16, 3 s per arm, 4 seeds, 2 "
                     "steps, no KID (the tests)", figures=FIGURES)
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.base, args.items = "tiny", 16, 8
        args.num, args.batch, args.steps = 4, 4, 2
        args.minutes = min(args.minutes, 0.05)
    if args.kid is None:
        args.kid = not args.smoke
    args.preset = args.preset if args.preset == "tiny" else int(args.preset)
    if not args.snr_gamma >= 0:  # nan too
        p.error(f"--snr-gamma must be >= 0, got {args.snr_gamma}")
    if not 0 <= args.eta <= 1:
        p.error(f"--eta must lie in [0, 1], got {args.eta}")
    if args.factor < 2 or args.factor & (args.factor - 1):
        p.error(f"--factor must be a power of 2 >= 2, got {args.factor}")
    if args.kid:
        try:
            find_inception_weights()
        except FileNotFoundError as err:
            p.error(f"KID: {err} (or pass --no-kid)")
    return args


def section(args: argparse.Namespace) -> str:
    r"""The section of the docs (and the figure's name): one per choice of ``--noise-at``."""
    return "beyond_training" + variant(args)


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    return compact_figure(save_rows(result["figure_rows"],
                                    args.figures / f"bench_{section(args)}.png", cell_size=128))


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, section, parse_args, run, report, argv, figure=draw_figure)


if __name__ == "__main__":
    main()
