r"""Benchmark (issue 12, item 3): the kernel radius of preset 28 against the density of the
training nodes, chosen from a measurement of quality, consistency and cost.

The operator layers are Monte-Carlo quadratures over the nodes in a kernel ball. With :math:`N =
\lceil 28^2 / \text{rate} \rceil` uniform nodes in :math:`[0, 1]^2` (196 at ``--rate 4``), a ball
of radius :math:`r` holds :math:`k = N \pi r^2` on average (borders ignored), so the arm of each
:math:`k` of ``--nodes-per-ball`` (default 5, 10, 20, 40; preset 28's :math:`r = \sqrt{40 / \pi} /
28` is :math:`k = 10` at rate 4, chosen by this benchmark; it was :math:`2.5 / 28`, :math:`k
\approx 4.9`, when it ran) takes :math:`r = \sqrt{k / (N \pi)}`. The arms are
:meth:`UNetConfig.preset` ``(28)`` with that radius as their only difference, trained as the arms
of ``bench/spectral_grid.py`` (Fashion-MNIST 28², :class:`_infdiff.Recipe` with x₀ prediction, a
``--rate`` subsample of the pixels as nodes) for an equal CPU-time budget (``--minutes``,
:func:`_infdiff.train_infdiff` with ``clock="cpu"``, one torch thread), each in a worker process,
at most ``--parallel`` at once. Then, with the EMA weights:

* **quality**: ``--num-samples`` samples at 28² (DDIM, :math:`\eta = 0`, ``--sample-steps``),
  Wiener-deblurred, FID and KID against the first 2,000 Fashion-MNIST test images
  (``spectral_grid.score``);
* **consistency**: ``--consistency-seeds`` seeds at 28², 56², 112² on plain lattices, PSNR of
  28² against the average-pooled 56² and 112² samples (mollified) and the seeds whose class
  changes at either scale (``bench/consistency.py``'s measures and cached classifier);
* **cost**: the median time of an optimiser step, the steps reached, and the nodes per ball
  measured: the mean in-degree (self loops included) of the radius graph of one collated batch.

**Rule** (fixed before the first run): let :math:`F^*` be the best FID (SWD in the smoke test)
and :math:`C^*` the fewest class changes over the arms. Recommend the smallest :math:`k` whose
FID is at most :math:`1.1 F^*` and whose class changes are at most :math:`C^* + 1`; when no
arm meets both, the smallest :math:`k` whose FID is at most :math:`1.1 F^*`.

Arms are cached in ``--out`` (``arm_k<k>.json``, training resumes from its checkpoints; a worker
locks its arm, so two runs never train one arm at once): a rerun skips finished arms, and
``--report-only`` writes the table from them. About 16 CPU-minutes per arm at the defaults
(8 of training, ~4 of sampling, ~3 of Inception features). Run::

    python bench/radius_density.py --write                # 4 arms, 2 at a time
    python bench/radius_density.py --smoke --out /tmp/r   # tiny model, seconds, SWD (tests)
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _args import positive_float, positive_int
from _classifier import fit_classifier, predict
from _common import ROOT, machine_description, relative_to_root
from _infdiff import make_diffusion, resolve_device, unet_config
from _publish import add_publish_args, markdown_table
from _scoring import draw_samples, kid_cell
from _skeleton import add_threads_arg, bench_main, bench_parser, report_footer, run_jobs
from consistency import OUT as CLASSIFIER_OUT
from consistency import SCALES, compare, targets
from spectral_grid import REAL_CACHE, median_step_seconds, score, train_and_sample

from pyg_infdiff.data import GraphCollator
from pyg_infdiff.graph import subsample_size
from pyg_infdiff.models import UNetConfig

OUT = ROOT / "bench" / "_out" / "radius_density"
RESOLUTION = 28
TITLE = "## Kernel radius against node density: Fashion-MNIST 28², preset 28"
RULE = ("the smallest k whose FID is within 10% of the best and whose class changes are within "
        "1 of the fewest; if none, the smallest k whose FID is within 10% of the best")


def radius_for(k: float, num_nodes: int) -> float:
    r"""The radius whose ball holds :obj:`k` of :obj:`num_nodes` uniform nodes in the unit
    square on average, :math:`\sqrt{k / (N \pi)}` (borders ignored)."""
    return math.sqrt(k / (num_nodes * math.pi))


def num_nodes(rate: float) -> int:
    r"""The training nodes of an image, :math:`\lceil 28^2 / \text{rate} \rceil`."""
    return subsample_size(RESOLUTION**2, rate=rate)


def arm_config(args: argparse.Namespace, k: float) -> UNetConfig:
    r"""The model of an arm: preset 28 (the ``"tiny"`` model with ``--smoke``) with the radius
    of :obj:`k` nodes per ball."""
    base = unet_config("tiny", channels=1) if args.smoke else UNetConfig.preset(RESOLUTION)
    return UNetConfig.from_dict({**base.to_dict(), "radius": radius_for(k, num_nodes(args.rate))})


def measured_nodes_per_ball(data, radius: float, rate: float, batch: int, seed: int) -> float:
    r"""The mean in-degree (self loops included) of the radius graph of one collated batch."""
    collator = GraphCollator(None, rate=rate, radius=radius,
                             generator=torch.Generator().manual_seed(seed))
    graph = collator([data[i] for i in range(batch)])
    return graph.edge_index.size(1) / graph.num_nodes


def consistency(args: argparse.Namespace, pretrained, classifier) -> dict:
    r"""PSNR of the 28² samples against the pooled 56² and 112² ones, and the seeds whose class
    changes (``bench/consistency.py``'s measures), on plain lattices."""
    model, diffusion = pretrained.model, pretrained.diffusion
    samples, seconds = {}, {}
    for side in (RESOLUTION, *(RESOLUTION * s for s in SCALES)):
        start = time.perf_counter()
        samples[side] = draw_samples(model, diffusion, args.consistency_seeds, side, 1,
                                     args.sample_steps, args.consistency_batch, args.seed,
                                     torch.device("cpu"))
        seconds[side] = time.perf_counter() - start
    low = samples[RESOLUTION]
    highs = {s: samples[RESOLUTION * s] for s in SCALES}
    rows = compare(low, highs, lambda x: diffusion.mollifier.undo(x, 2, inv_snr=0.05))
    classes = predict(classifier, low)
    changed = {s: predict(classifier, F.avg_pool2d(h, s)) != classes for s, h in highs.items()}
    t = targets({"rows": rows, "changed": changed})
    return {"psnr": {str(s): {"mean": p["mean"], "min": p["min"]} for s, p in t["scales"].items()},
            "class_changes": t["changed"], "sample_seconds": {str(s): v for s, v in
                                                               seconds.items()}}


def run_arm(args: argparse.Namespace, k: float) -> dict:
    r"""Trains one arm for the budget (resumably), samples and scores it: the worker's job."""
    out = args.out / f"arm_k{k:g}"
    config = arm_config(args, k)
    device = resolve_device("cpu")
    sampled = train_and_sample(args, out, config, device, clock="cpu")
    mollifier = sampled.pretrained.diffusion.mollifier
    classifier = fit_classifier(classifier_folder(args), mollifier, smoke=args.smoke,
                                seed=args.seed)
    return {"k": k, "radius": config.radius, **sampled.trained,
            "nodes_per_ball": measured_nodes_per_ball(sampled.data, config.radius, args.rate,
                                                      sampled.recipe.batch_size, args.seed),
            "median_step_seconds": median_step_seconds(out),
            "sample_seconds_per_image": sampled.sample_seconds / sampled.images.size(0),
            "metrics": score(args, {"deblurred": sampled.deblurred})["deblurred"],
            "consistency": consistency(args, sampled.pretrained, classifier["model"]),
            "classifier_accuracy": classifier["accuracy"], "config": config.to_dict(),
            "machine": machine_description(device), "settings": settings_of(args)}


def classifier_folder(args: argparse.Namespace) -> Path:
    r"""``bench/consistency.py``'s cached classifier; the smoke test's own one in ``--out``."""
    return args.out if args.smoke else CLASSIFIER_OUT


def settings_of(args: argparse.Namespace) -> dict:
    r"""The settings a cached arm must match to be reused."""
    return {key: getattr(args, key) for key in (
        "minutes", "rate", "num_samples", "sample_steps", "metrics", "num_real",
        "consistency_seeds", "batch_size", "seed", "smoke")}


def worker_argv(args: argparse.Namespace, k: float) -> list[str]:
    r"""The command line of the process that runs one arm."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{k:g}"]
    for flag in ("minutes", "rate", "num_samples", "num_real", "sample_steps", "sample_batch",
                 "consistency_seeds", "consistency_batch", "metrics", "out", "threads",
                 "seed", "batch_size"):
        if getattr(args, flag) is not None:
            argv += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return (argv + (["--smoke"] if args.smoke else [])
            + (["--default-allocator"] if args.default_allocator else []))


def cached(args: argparse.Namespace, k: float) -> dict | None:
    r"""The finished arm of :obj:`k` in ``--out`` if its settings match (any with
    ``--report-only``), else :obj:`None`."""
    path = args.out / f"arm_k{k:g}.json"
    result = json.loads(path.read_text()) if path.exists() else None
    if result is not None and (args.report_only or result["settings"] == settings_of(args)):
        return result
    return None


def run(args: argparse.Namespace) -> dict:
    r"""Every arm: the cached ones read back, the others run in worker processes, at most
    ``--parallel`` at once."""
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [] if args.report_only else [k for k in args.nodes_per_ball if cached(args, k) is None]
    if todo:  # shared by the workers: computed once, before they start
        if args.metrics == "fid":
            score(args, {})
        fit_classifier(classifier_folder(args), make_diffusion(RESOLUTION).mollifier,
                       smoke=args.smoke, seed=args.seed)
    run_jobs({f"arm_k{k:g}": worker_argv(args, k) for k in todo}, slots=args.parallel,
             poll=0.5, what="arm")
    arms = {k: r for k in args.nodes_per_ball if (r := cached(args, k)) is not None}
    return {"arms": arms, "device": "cpu", "machine": machine_description("cpu")}


def recommend(arms: dict[float, dict]) -> float | None:
    r"""The :math:`k` that the rule of the module docstring chooses (:obj:`None`: no arms)."""
    if not arms:
        return None
    quality = {k: r["metrics"].get("fid", r["metrics"].get("swd")) for k, r in arms.items()}
    changes = {k: r["consistency"]["class_changes"] for k, r in arms.items()}
    good = [k for k in sorted(arms) if quality[k] <= 1.1 * min(quality.values())]
    both = [k for k in good if changes[k] <= min(changes.values()) + 1]
    return (both or good)[0]


def report(args: argparse.Namespace, result: dict) -> str:
    r"""The markdown section from the finished arms."""
    arms = result["arms"]
    lines = [TITLE, ""]
    if not arms:
        return "\n".join([*lines, "No arm has finished yet."])
    fid = all("fid" in r["metrics"] for r in arms.values())
    rows = []
    for k, r in sorted(arms.items()):
        m, c = r["metrics"], r["consistency"]
        psnr = [f"{c['psnr'][str(s)]['mean']:.1f} / {c['psnr'][str(s)]['min']:.1f}"
                for s in SCALES]
        value = ([f"{m['fid']:.1f}", kid_cell(m)] if fid
                 else [f"{m['swd']:.2f}", "—"])
        rows.append([f"{k:g}", f"{RESOLUTION * r['radius']:.2f}", f"{r['nodes_per_ball']:.1f}",
                     f"{r['train_seconds'] / r['steps']:.3f}",
                     f"{r['median_step_seconds']:.3f}", f"{r['steps']:,}", *value, *psnr,
                     f"{c['class_changes']} of {r['settings']['consistency_seeds']}"])
    metric = "FID" if fid else "SWD ×10³"
    lines += [markdown_table(
        ["k (expected nodes / ball)", "radius (28² px)", "nodes / ball measured",
         "CPU s / step", "wall s / step (median)", "steps", metric, "KID ×10³",
         *[f"PSNR {RESOLUTION * s}²↓ mean / min (dB)" for s in SCALES], "class changes"],
        rows), ""]
    s = next(iter(arms.values()))["settings"]
    if any(r["settings"] != s for r in arms.values()):
        lines += ["- **Warning**: the arms ran with different settings.", ""]
    best = recommend(arms)
    n = num_nodes(s["rate"])
    r = radius_for(best, n)
    preset_r = UNetConfig.preset(RESOLUTION).radius
    rule = RULE.replace("FID", metric) if not fid else RULE
    lines.append(f"- **Rule** (fixed before the run): {rule}. **Chosen: k = {best:g}**, "
                 f"radius {r:.4f} = {RESOLUTION * r:.2f}/28 for preset 28 at rate {s['rate']:g} "
                 f"({n} nodes per image; the preset's {RESOLUTION * preset_r:.2f}/28 is k = "
                 f"{n * math.pi * preset_r ** 2:.1f}).")
    model = "the tiny smoke-test model" if s["smoke"] else "`UNetConfig.preset(28)`"
    recipe = next(iter(arms.values()))["recipe"]
    acc = next(iter(arms.values()))["classifier_accuracy"]
    lines += [
        f"- Arms: {model} with r = sqrt(k / (N π)), N = {n} (borders ignored) as the only "
        f"difference; {s['minutes']:g} CPU-minutes of training each, one torch thread, batch "
        f"{recipe['batch_size']}, AdamW lr {recipe['lr']:g}, {recipe['warmup']} warm-up steps, "
        f"EMA {recipe['ema_decay']:g}, x₀ prediction, σ = half a pixel. Measured nodes / ball: "
        "mean in-degree (self loops included) of the radius graph of one collated batch. "
        "CPU s / step: the CPU budget over the steps reached (the fair cost); wall s / step: "
        f"the median over the trainer's log windows of {recipe['log_every']} steps, which "
        "grows with the machine's load while the arm trained (shared machine).",
        f"- Quality: {s['num_samples']:,} samples per arm at 28² (EMA weights, DDIM η = 0, "
        f"{s['sample_steps']} steps), Wiener-deblurred (inverse SNR 0.05), "
        + (f"FID and KID against the first {s['num_real']:,} Fashion-MNIST test images "
           f"(Inception pool features, statistics cached as `{REAL_CACHE}`)." if fid else
           "multi-scale SWD against as many Fashion-MNIST test images."),
        f"- Consistency: the same {s['consistency_seeds']} seeds at 28², 56², 112² on plain "
        "lattices (no context), the larger ones average-pooled to 28², PSNR of the mollified "
        "samples (peak-to-peak 2) as in `bench/consistency.py`; class changes: seeds whose class "
        f"(its small CNN, test accuracy {acc:.1%}) differs between 28² and either pooled sample.",
    ]
    lines += report_footer(args, result, f" Arms cached in `{relative_to_root(args.out)}`.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--nodes-per-ball", type=positive_float, nargs="+", default=None,
                   help="expected nodes per kernel ball of each arm, its radius (default: 5 10 "
                   "20 40; 5 20 with --smoke)")
    p.add_argument("--rate", type=positive_float, default=4.0,
                   help="subsampling rate of the training "
                   "images")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="CPU-time training budget per arm (default: 8; 0.05 with --smoke)")
    p.add_argument("--parallel", type=positive_int, default=2, help="arms trained at once")
    p.add_argument("--num-samples", type=positive_int, default=500)
    p.add_argument("--num-real", type=positive_int, default=2000,
                   help="test images to score against")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--sample-batch", type=positive_int, default=50)
    p.add_argument("--consistency-seeds", type=positive_int, default=32)
    p.add_argument("--consistency-batch", type=positive_int, default=16)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch (default: the recipe's 32)")
    p.add_argument("--metrics", choices=["fid", "swd"], default="fid")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder of the arms")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table from the finished arms in --out")
    p.add_argument("--worker", type=float, default=None, help="run the arm of this k here")
    add_threads_arg(p, "torch CPU threads of each arm's process")
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny model, 2 arms (k 5, 20), 3 s budgets, 8 samples of 2 steps, "
                     "4 consistency seeds, SWD (tests)")
    args = p.parse_args(argv)
    args.device = "cpu"  # spectral_grid.score reads it
    if args.minutes is None:
        args.minutes = 0.05 if args.smoke else 8.0
    if args.nodes_per_ball is None:
        args.nodes_per_ball = [5, 20] if args.smoke else [5, 10, 20, 40]
    if args.smoke:
        args.num_samples, args.num_real, args.sample_steps, args.sample_batch = 8, 8, 2, 8
        args.consistency_seeds, args.consistency_batch, args.metrics = 4, 4, "swd"
        args.batch_size = args.batch_size or 4
    args.nodes_per_ball = list(dict.fromkeys(args.nodes_per_ball))
    return args


def worker(args: argparse.Namespace) -> dict:
    r"""One arm in this process (``--worker K``), locked against another run of the same arm:
    its result goes to ``arm_k<K>.json``."""
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"arm_k{args.worker:g}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run's worker may hold it: wait for it
        result = cached(args, args.worker)
        if result is None:
            result = run_arm(args, args.worker)
            (args.out / f"arm_k{args.worker:g}.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "radius_density", parse_args, run, report, argv, worker=worker)


if __name__ == "__main__":
    main()
