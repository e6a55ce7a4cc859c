r"""Benchmark (issue 5, #4; opt-in and slow): sample quality at a fixed CPU budget.

Fashion-MNIST 28², the same wall-clock training budget (``--minutes``, default 25) for each arm:

* **(a)** ∞-Diff, 4× subsampling (a quarter of each image's pixels as graph nodes);
* **(b)** ∞-Diff, no subsampling (all pixels);
* **(c)** the dense DDPM of ``diffusers`` (``bench/train_dense_ddpm.py``, its documented
  settings, at the ∞-Diff parameter count);
* **(d)** ∞-Diff trained on the images area-downsampled to 14² (all pixels), sampled at 28²
  (issue 5 #5), next to bicubic upsampling of its own 14² samples of the same seeds.

∞-Diff arms use the library's documented CPU recipe (``docs/tutorials/fashion_mnist.md``):
:meth:`UNetConfig.preset` ``(28)`` (1.30 M parameters), batch 32, AdamW lr 5e-4 with 200
warm-up steps then constant, gradient clip 1, EMA 0.999 with warm-up, mollifier σ = half a
training pixel, cosine schedule, prediction of the mollified image :math:`T x_0`; trained by
:class:`~pyg_infdiff.training.Trainer`. Each arm then draws 1,000 samples with its EMA
weights (DDIM, :math:`\eta = 0`, 100 steps) and scores them against the 10,000 test images:
FID and KID on the standard FID Inception features
(:mod:`pyg_infdiff.metrics`, offline weights). ∞-Diff samples are scored as drawn (mollified)
and Wiener-deblurred (inverse SNR 0.05; for arm (d) also only below its 14² training
resolution, rolled off above). Goals: (a) no worse than
(c) (#4); (d) within 1.2× of the native 28² model and better than bicubic (#5).

Every arm is resumable: ∞-Diff training writes checkpoints (and the time already spent) into
``--out``/``arm_<x>/`` and continues from them with the remaining budget; samples and results are
cached (``arm_<x>/samples.pt``, ``--out``/``arm_<x>.json``), so a rerun skips finished parts and
``--report-only --write`` writes the table from the arms finished so far. The dense arm's
training script has no mid-run checkpoints: an interrupted dense arm starts over.

Durations on this 2-core machine with one thread (load ~5): 25 min of training per arm;
sampling 1,000 images ~5-10 min per arm; Inception features ~0.27 s per image, so ~45 min for
the 10,000 test images (once: cached in ``~/.cache/pyg_infdiff/fid_stats``, shared with
``python -m pyg_infdiff.metrics``) and ~9 min per ∞-Diff arm (two sample sets), ~5 min for the
dense arm. All four arms: about 3-4 hours; two arms side by side, one thread each, use both cores
of this machine and keep the comparison fair. Run::

    python bench/quality.py --write                     # all four arms, ~3-4 h
    python bench/quality.py --arms a --minutes 25       # one arm (then b, c, d later)
    python bench/quality.py --report-only --write       # the table from finished arms
    python bench/quality.py --smoke --out /tmp/q        # seconds per arm, SWD only (tests)

Time-budgeted, resumable training (:func:`_infdiff.train_infdiff`, with
:class:`~pyg_infdiff.training.Trainer`), sampling and the metrics are in ``bench/_infdiff.py``,
shared with ``bench/beyond_resolution.py``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _args import positive_float, positive_int
from _common import ROOT, machine_description, relative_to_root
from _infdiff import FIGURES, Recipe, resolve_device, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _scoring import draw_samples, inception_metrics, kid_cell, swd_metrics
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser
from torch import Tensor

from pyg_infdiff.data import FashionMNIST
from pyg_infdiff.data.images import save_grid, save_rows
from pyg_infdiff.models import UNetConfig
from pyg_infdiff.training import load_pretrained

OUT = ROOT / "bench" / "_out" / "quality"
RESOLUTION = 28
ARMS = {
    "a": "∞-Diff, 4× subsampling",
    "b": "∞-Diff, all pixels",
    "c": "dense DDPM (diffusers)",
    "d": "∞-Diff trained at 14², sampled at 28²",
}
RATES = {"a": 4.0, "b": 1.0, "d": 1.0}
LOW = 14  # arm (d): trained on Fashion-MNIST area-downsampled to 14², sampled at 28²


# --------------------------------------------------------------------------- the arms
def fashion_test_images(num: int) -> Tensor:
    r"""The first :obj:`num` Fashion-MNIST test images, float in :math:`[-1, 1]`."""
    images = FashionMNIST(train=False).images[:num]
    return (images.float() / 127.5 - 1.0).unsqueeze(1)


def score(args: argparse.Namespace, fakes: dict[str, Tensor]) -> dict:
    r"""The metrics of sample sets against the test set, on :obj:`args.metric_threads`
    threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.metric_threads or threads)
    try:
        if args.metrics == "swd":
            return swd_metrics(fakes, fashion_test_images(args.num_real), args.seed)
        test = FashionMNIST(train=False)
        return inception_metrics(fakes, test, min(args.num_real, len(test)),
                                 "fashion-mnist-test", device=str(resolve_device(args.device)),
                                 seed=args.seed)
    finally:
        torch.set_num_threads(threads)


def pretrained_mollifier(checkpoint: str | Path, device: torch.device):
    r"""The :meth:`~pyg_infdiff.noise.GaussianMollifier.undo` of a run's diffusion."""
    return load_pretrained(checkpoint, weights="ema", device=device).diffusion.mollifier.undo


def run_infdiff_arm(args: argparse.Namespace, arm: str) -> dict:
    out = args.out / f"arm_{arm}"
    recipe = Recipe(parametrization="x0")  # the CPU recipe: the model predicts T x0
    if args.batch_size:
        recipe.batch_size = args.batch_size
    if args.smoke:
        recipe.checkpoint_every, recipe.warmup = 5, 5
    # The same model in domain units for every arm (kernel radius, grid); arm (d) sees the
    # images at 14², with a mollifier of half of its own pixel.
    config = unet_config("tiny", channels=1) if args.smoke else UNetConfig.preset(RESOLUTION)
    if args.radius_px is not None:  # another kernel radius, in pixels of 28²
        config = UNetConfig.from_dict({**config.to_dict(), "radius": args.radius_px / RESOLUTION})
    train_side = LOW if arm == "d" else RESOLUTION
    data = FashionMNIST(train=True, resolution=train_side, resize="area")
    trained = train_infdiff(out, data, config, train_side, RATES[arm], args.minutes, recipe,
                            data_name="fashion-mnist", seed=args.seed)
    samples_path = out / "samples.pt"
    device = resolve_device(args.device)
    blob = torch.load(samples_path, weights_only=True) if samples_path.exists() else {}
    settings = [trained["checkpoint"], args.num_samples, args.sample_steps, args.seed]
    if blob.get("settings") != settings:
        pretrained = load_pretrained(trained["checkpoint"], weights="ema", device=device)

        def draw(side: int) -> Tensor:
            return draw_samples(pretrained.model, pretrained.diffusion, args.num_samples, side,
                                1, args.sample_steps, args.sample_batch, args.seed + 1, device)

        start = time.perf_counter()
        images = draw(RESOLUTION)
        seconds = time.perf_counter() - start
        deblurred = pretrained.diffusion.mollifier.undo(images, 2, inv_snr=0.05).clamp(-1, 1)
        blob = {"images": images, "deblurred": deblurred, "seconds": seconds,
                "settings": settings}
        if arm == "d":  # the same seeds at the training resolution, upsampled bicubically
            low = pretrained.diffusion.mollifier.undo(draw(LOW), 2, inv_snr=0.05)
            blob["bicubic"] = F.interpolate(low.clamp(-1, 1), size=(RESOLUTION, RESOLUTION),
                                            mode="bicubic", align_corners=False).clamp(-1, 1)
        torch.save(blob, samples_path)
        save_grid(images[:64], out / "samples.png", nrow=8)
    sets = {"mollified": blob["images"], "deblurred": blob["deblurred"]}
    if train_side != RESOLUTION:  # also: Wiener below the training band, rolled off above it
        undo = pretrained_mollifier(trained["checkpoint"], device)
        sets[f"deblurred below the {train_side}² band"] = undo(
            blob["images"], 2, inv_snr=0.05, band=train_side).clamp(-1, 1)
    if "bicubic" in blob:
        sets["bicubic 14² → 28² (deblurred)"] = blob["bicubic"]
    metrics = score(args, sets)
    return {"arm": arm, "label": ARMS[arm], **trained, "train_resolution": train_side,
            "sample_seconds_per_image": blob["seconds"] / blob["images"].size(0),
            "metrics": metrics}


def run_dense_arm(args: argparse.Namespace) -> dict:
    out = args.out / "arm_c"
    run_json = out / "run.json"
    wanted = {"minutes": args.minutes, "num_samples": args.num_samples,
              "sample_steps": args.sample_steps, "seed": args.seed}
    done = json.loads(run_json.read_text())["settings"] if run_json.exists() else {}
    if any(done.get(k) != v for k, v in wanted.items()):
        cmd = [sys.executable, str(ROOT / "bench" / "train_dense_ddpm.py"),
               "--minutes", str(args.minutes), "--out", str(out),
               "--num-samples", str(args.num_samples), "--sample-steps", str(args.sample_steps),
               "--sample-batch-size", str(args.sample_batch), "--threads", str(args.threads),
               "--seed", str(args.seed), "--target-params", str(args.dense_params)]
        print("dense arm:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    dense = json.loads(run_json.read_text())
    images = torch.load(out / "samples.pt", weights_only=True)
    metrics = score(args, {"as sampled": images})
    return {"arm": "c", "label": ARMS["c"], "steps": dense["steps"],
            "train_seconds": dense["train_seconds"], "parameters": dense["parameters"],
            "images_seen": dense["images_seen"],
            "sample_seconds_per_image": dense["sample_seconds_per_image"], "metrics": metrics,
            "recipe": dense["settings"]}


def report(args: argparse.Namespace, results: dict[str, dict], picture: Path | None) -> str:
    r"""The markdown section from the finished arms (their own recorded settings; the current
    ones when none has finished), with the :obj:`picture` of their samples when drawn."""
    recorded = [r["settings"] for r in results.values()]
    shown = recorded[0] if recorded else settings_of(args)
    fid = shown["metrics"] != "swd"
    rows = []
    for arm in sorted(results):
        r = results[arm]
        for variant, m in r["metrics"].items():
            value = ([f"{m['fid']:.2f}", kid_cell(m, digits=2)]
                     if "fid" in m else [f"{m['swd']:.2f}", "—"])
            rows.append([f"({arm}) {r['label']}", variant, f"{r['parameters'] / 1e6:.2f} M",
                         f"{r['steps']:,}", f"{r['images_seen']:,}",
                         f"{r['train_seconds'] / 60:.1f}", *value,
                         f"{r['sample_seconds_per_image']:.2f}"])
    metric = "FID" if fid else "SWD ×10³"
    lines = ["## Quality at a fixed CPU budget: Fashion-MNIST 28²", ""]
    if rows:
        lines += [markdown_table(["arm", "samples", "parameters", "steps", "images seen",
                                  "train (min)", metric, "KID ×10³", "sampling (s / image)"],
                                 rows), ""]
    else:
        lines += ["No arm has finished yet.", ""]
    if any(r != shown for r in recorded):
        lines.append("- **Warning**: the arms ran with different settings: "
                     + "; ".join(f"({a}) {results[a]['settings']}" for a in sorted(results)))
    if "a" in results and "c" in results:
        key = "fid" if fid else "swd"
        a = min(m[key] for m in results["a"]["metrics"].values())
        c = results["c"]["metrics"]["as sampled"][key]
        verdict = "met" if a <= c else "NOT met"
        lines.append(f"- Goal (issue 5 #4): (a) no worse than (c): {metric} {a:.2f} (best of "
                     f"(a)'s rows) vs {c:.2f} — **{verdict}** against (c), diffusers' example "
                     "settings; against a dense baseline tuned as carefully as ∞-Diff see "
                     "`bench/dense_tuning.py`")
    else:
        missing = ", ".join(f"({k})" for k in ("a", "c") if k not in results)
        lines.append(f"- Goal (issue 5 #4: (a) no worse than (c)): not evaluated yet — arm(s) "
                     f"{missing} not finished.")
    native = [results[k] for k in ("a", "b") if k in results]
    if "d" in results and native and fid:
        m = results["d"]["metrics"]
        d = min(v["fid"] for k, v in m.items() if not k.startswith("bicubic"))
        bicubic = next(v["fid"] for k, v in m.items() if k.startswith("bicubic"))
        best = min(v["fid"] for r in native for v in r["metrics"].values())
        ok = d <= 1.2 * best and d < bicubic
        lines.append(f"- Goal (issue 5 #5): (d) at 28² within 1.2× of the native 28² models and "
                     f"better than bicubic upsampling of its 14² samples: FID {d:.2f} vs "
                     f"{best:.2f} (best native, ratio {d / best:.2f}) and {bicubic:.2f} "
                     f"(bicubic) — **{'met' if ok else 'NOT met'}**")
    else:
        lines.append("- Goal (issue 5 #5: (d) within 1.2× of the native 28² model and better "
                     "than bicubic): not evaluated yet (needs arm (d), arm (a) or (b), FID).")
    machines = "; ".join(f"({arm}) {results[arm].get('machine', '?')}" for arm in sorted(results))
    batches = sorted({results[a]["recipe"]["batch_size"] for a in ("a", "b") if a in results})
    batch = "/".join(map(str, batches)) or str(args.batch_size or Recipe().batch_size)
    threads = sorted({r.get("threads") for r in results.values()}) or [args.threads]
    radius_px = shown.get("radius_px")
    if radius_px is None:  # the preset's; runs recorded before the option had 2.5 pixels
        radius_px = UNetConfig.preset(RESOLUTION).radius * RESOLUTION if "radius_px" in shown \
            else 2.5
    lines += [
        f"- Budget: {shown['minutes']:g} min of training per arm (wall clock, data loading "
        f"included). ∞-Diff (a, b, d): preset 28 (kernel radius {radius_px:.3g} pixels), "
        f"batch {batch}, AdamW lr 5e-4 (200 warm-up "
        "steps, then constant), clip 1, EMA 0.999 with warm-up, σ = half a training pixel, "
        "cosine schedule, x₀ prediction (of T x₀), Trainer; (a) keeps a quarter of each "
        "image's pixels (uniform), (b) all, (d) all of the 14² image. Dense (c): "
        "`bench/train_dense_ddpm.py` (diffusers `train_unconditional.py` settings: batch 16, "
        "lr 1e-4, warm-up 500 + cosine decay, EMA ≤ 0.9999, linear DDPM schedule) at the "
        "∞-Diff parameter count.",
        f"- Samples: {shown['num_samples']} per arm with the EMA weights, DDIM η = 0, "
        f"{shown['sample_steps']} steps; ∞-Diff rows \"mollified\" (as sampled) and "
        "\"deblurred\" (Wiener, inverse SNR 0.05). Scores against the Fashion-MNIST test set ("
        + (f"{shown['num_real']:,} images; FID and KID (100 subsets of ≤ 1,000) on the FID "
           "Inception pool features, TF-bilinear resize, test statistics cached)"
           if fid else "multi-scale SWD, as many real images as samples")
        + f"). Torch threads: {'/'.join(map(str, threads))}.",
        f"- Machine per arm: {machines or machine_description()}.",
        f"- Command: `{args.command}` (arms cached in `{relative_to_root(args.out)}`).",
    ]
    if picture is not None:
        lines += ["", "![The first samples of each arm: (a), (b), (d) deblurred, (d) bicubic, "
                  f"(c) as sampled](_static/figures/{picture.name})"]
    return "\n".join(lines)


def figure(args: argparse.Namespace, results: dict[str, dict], path: Path,
           num: int = 12) -> Path | None:
    r"""The first :obj:`num` samples of every finished arm, one labelled row per sample set
    (the same seeds in every ∞-Diff row)."""
    rows = []
    for arm in sorted(results):
        folder = args.out / f"arm_{arm}"
        if arm == "c":
            rows.append(("(c) dense", torch.load(folder / "samples.pt", weights_only=True)[:num]))
            continue
        blob = torch.load(folder / "samples.pt", weights_only=True)
        rows.append((f"({arm}) deblurred", blob["deblurred"][:num]))
        if "bicubic" in blob:
            rows.append((f"({arm}) bicubic", blob["bicubic"][:num]))
    if not rows:
        return None
    return compact_figure(save_rows(rows, path, cell_size=56))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--arms", default="a,b,c,d", help="comma list of a, b, c, d")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="training budget per arm (default: 25; 0.05 with --smoke)")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--num-real", type=positive_int, default=10_000,
                   help="test images to score against")
    p.add_argument("--sample-steps", type=positive_int, default=100, help="DDIM steps")
    p.add_argument("--sample-batch", type=positive_int, default=50)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="∞-Diff training batch (default: the recipe's 32)")
    p.add_argument("--radius-px", type=positive_float, default=None,
                   help="kernel radius of the ∞-Diff arms in pixels of 28² (default: the "
                   "preset's; 2.5 before 2026-12-07)")
    p.add_argument("--dense-params", type=positive_int, default=1_302_209,
                   help="dense model's parameter count (default: that of the ∞-Diff preset 28)")
    p.add_argument("--metrics", choices=["fid", "swd"], default="fid",
                   help="fid: FID and KID (Inception weights needed); swd: weight-free")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder of the arms")
    p.add_argument("--force", action="store_true", help="recompute the metrics of cached arms")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table from the finished arms in --out")
    add_device_arg(p)
    add_threads_arg(p, "torch CPU threads for training and sampling, every arm")
    p.add_argument("--metric-threads", type=positive_int, default=None,
                   help="torch CPU threads for the Inception features (default: --threads; "
                   "they do not affect the comparison)")
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny ∞-Diff model, 3 s budgets, 8 samples of 2 steps, SWD (tests)")
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if any(a not in ARMS for a in args.arms):
        p.error(f"--arms must be a comma list of {', '.join(ARMS)}")
    if args.minutes is None:
        args.minutes = 0.05 if args.smoke else 25.0
    if args.smoke:
        args.num_samples, args.num_real = 8, 8
        args.sample_steps, args.sample_batch, args.metrics = 2, 8, "swd"
        args.batch_size = args.batch_size or 4
    if args.radius_px is not None and args.radius_px >= RESOLUTION:
        p.error("--radius-px must lie in (0, 28)")
    return args


def settings_of(args: argparse.Namespace) -> dict:
    r"""The settings an arm's cached result must match to be reused."""
    return {"minutes": args.minutes, "num_samples": args.num_samples,
            "sample_steps": args.sample_steps, "metrics": args.metrics,
            "num_real": args.num_real, "seed": args.seed, "radius_px": args.radius_px}


def run(args: argparse.Namespace) -> dict[str, dict]:
    r"""The results of every arm: run (resumably), cached in ``--out``, or only read back
    (``--report-only``, or the arms not in ``--arms``)."""
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    settings = settings_of(args)
    for arm in ARMS:
        path = args.out / f"arm_{arm}.json"
        cached = json.loads(path.read_text()) if path.exists() else None
        if args.report_only or arm not in args.arms:
            if cached is not None:
                results[arm] = cached
            continue
        if cached is not None and not args.force and cached.get("settings") == settings:
            results[arm] = cached
            print(f"arm ({arm}): cached in {path}")
            continue
        print(f"arm ({arm}): {ARMS[arm]}", flush=True)
        result = run_dense_arm(args) if arm == "c" else run_infdiff_arm(args, arm)
        result["machine"] = machine_description(resolve_device(args.device))
        result["threads"] = args.threads
        result["settings"] = settings
        path.write_text(json.dumps(result, indent=2))
        results[arm] = result
    return results


def draw_figure(args: argparse.Namespace, results: dict[str, dict]) -> Path | None:
    r"""The samples of the finished arms (only in a real run with FID: the docs' figure)."""
    if args.smoke or args.metrics != "fid":
        return None
    return figure(args, results, FIGURES / "bench_quality.png")


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "quality", parse_args, run, report, argv, figure=draw_figure)


if __name__ == "__main__":
    main()
