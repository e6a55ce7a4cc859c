r"""Benchmark (issue 14 #3, #4; opt-in and slow): ∞-Diff against a dense DDPM tuned as
carefully, on Fashion-MNIST 28² at equal CPU time, and FID against the number of DDIM steps.

Two families, each trained on one torch thread and timed by its CPU time
(:func:`time.process_time`), the two side by side in two processes on the two cores:

* **∞-Diff**: the library's Fashion-MNIST recipe (arm (a) of ``bench/quality.py``):
  :meth:`UNetConfig.preset` ``(28)``, 4× subsampling, :math:`x_0` prediction, AdamW
  (betas 0.9, 0.999), 200 warm-up steps then constant, clip 1, EMA 0.999 with warm-up;
* **dense**: the ``diffusers`` ``UNet2DModel`` at the same parameter count with its example's
  epsilon-prediction DDPM (``bench/train_dense_ddpm.py``: linear schedule, AdamW betas
  (0.95, 0.999), weight decay 1e-6, cosine decay over the budget, clip 1), with the same
  200 warm-up steps and the same EMA as ∞-Diff (0.999 with warm-up).

The protocol; the rule of step 1 was written down before any FID of these runs was computed:

1. **Probe.** Each family trains every learning rate of ``--lrs`` with every batch size of
   ``--batches`` (six runs by default) for ``--probe-minutes`` of CPU time. The run kept for
   each family is the one whose EMA weights have the lowest *held-out loss*: the family's own
   training objective (uniform over time steps) on 512 test images (indices 8,000-8,511,
   disjoint from the FID reference) at 8 fixed time steps (the midpoints of 8 equal bins of
   the 1000), with fixed noise and, for ∞-Diff, fixed node subsets. While the best run has
   the largest (smallest) learning rate tried, the probe adds the next one up (down) by the
   grid's ratio, at the best run's batch size, at most twice (:func:`extensions`). No sample
   is drawn in the probe.
2. **Final.** The kept learning rate and batch of each family train for ``--minutes`` of CPU
   time, the two families side by side.
3. **Sampling.** Each final model draws ``--num-samples`` samples (EMA weights, DDIM
   :math:`\eta = 0`) with each step count of ``--steps`` (10, 25, 50, 100), batches of 50,
   the same seeds; timed per image. ∞-Diff samples are Wiener-deblurred (inverse SNR 0.05),
   as the quality benchmark's best rows; at the largest step count they are also scored as
   drawn (mollified).
4. **Scores.** FID and KID on the FID Inception features against the first ``--num-real``
   Fashion-MNIST test images (default 2,000, whose statistics ``bench/quality.py`` caches;
   10,000 would take about 25 more minutes of Inception features on this machine, at 6.5
   images/s on one thread). ∞-Diff's sets are scored in its worker, on one thread, while the
   slower dense sampler runs.

Every part is cached in ``--out`` (default ``bench/_out/dense_tuning``): probe and final runs
resume from their checkpoints (∞-Diff every 250 steps, dense every 2 minutes), finished runs,
samples and scores are reused, so an interrupted benchmark continues where it stopped. On this
machine the default run took about 2 hours of wall time on both cores (the probe about one,
with the two extra learning rates of the dense family)::

    python bench/dense_tuning.py --write
    python bench/dense_tuning.py --smoke --out /tmp/dt     # seconds per part, SWD (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _args import positive_float, positive_int
from _common import ROOT, cached_json
from _infdiff import FIGURES, Recipe, train_infdiff, unet_config
from _publish import add_publish_args, markdown_table
from _scoring import draw_samples, inception_metrics, kid_cell, swd_metrics
from _skeleton import add_threads_arg, bench_main, bench_parser, machine_note, run_jobs
from baseline_ddpm import dense_sample, make_scheduler
from torch import Tensor
from train_dense_ddpm import DenseRecipe, train_dense

from pyg_infdiff.data import FashionMNIST, GraphCollator
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.models import UNetConfig
from pyg_infdiff.training import load_pretrained

OUT = ROOT / "bench" / "_out" / "dense_tuning"
RESOLUTION = 28
RATE = 4.0  # ∞-Diff's recipe: a quarter of each image's pixels
FAMILIES = {"infdiff": "∞-Diff, 4× subsampling", "dense": "dense DDPM (diffusers)"}
HELD_OUT = range(8000, 8512)  # test images of the probe's held-out loss
HELD_OUT_STEPS = [62, 187, 312, 437, 562, 687, 812, 937]  # midpoints of 8 bins of 1000
DENSE_PARAMS = 1_302_209  # the ∞-Diff 28² preset's parameter count
MAX_EXTENSIONS = 2  # learning rates the probe may add beyond its grid


# --------------------------------------------------------------------------- held-out loss
def held_out_images(smoke: bool) -> Tensor:
    r"""The probe's held-out test images, float in :math:`[-1, 1]`, ``[N, 1, 28, 28]``."""
    indices = list(HELD_OUT)[: 32 if smoke else None]
    images = FashionMNIST(train=False).images[indices]
    return (images.float() / 127.5 - 1.0).unsqueeze(1)


@torch.no_grad()
def infdiff_held_out_loss(model, diffusion, radius: float | None, images: Tensor,
                          seed: int) -> float:
    r"""∞-Diff's training objective of :obj:`model` on :obj:`images`: each image at every step
    of :data:`HELD_OUT_STEPS`, as graphs of a quarter of its pixels (radius edges of
    :obj:`radius`), the node subsets and the noise drawn from fixed seeds."""
    collator = GraphCollator(diffusion.mollifier, rate=RATE, radius=radius)
    total, count = 0.0, 0
    for b, start in enumerate(range(0, images.size(0), 64)):
        chunk = list(images[start:start + 64])
        batch = collator(chunk, generator=torch.Generator().manual_seed(seed + b))
        for t in HELD_OUT_STEPS:
            steps = torch.full((len(chunk),), t, dtype=torch.long)
            generator = torch.Generator().manual_seed(seed + 1000 * b + t)
            loss = diffusion.training_loss(model, batch, t=steps, generator=generator)
            total, count = total + float(loss) * len(chunk), count + len(chunk)
    return total / count


@torch.no_grad()
def dense_held_out_loss(model, images: Tensor, seed: int) -> float:
    r"""The dense baseline's training objective (epsilon MSE) of :obj:`model` on
    :obj:`images`, at the same steps and in the same way as :func:`infdiff_held_out_loss`."""
    scheduler = make_scheduler("ddpm")
    total, count = 0.0, 0
    for b, start in enumerate(range(0, images.size(0), 64)):
        x0 = images[start:start + 64]
        for t in HELD_OUT_STEPS:
            generator = torch.Generator().manual_seed(seed + 1000 * b + t)
            noise = torch.randn(x0.shape, generator=generator)
            steps = torch.full((x0.size(0),), t, dtype=torch.long)
            out = model(scheduler.add_noise(x0, noise, steps), steps).sample
            total += float((out - noise).pow(2).mean()) * x0.size(0)
            count += x0.size(0)
    return total / count


# --------------------------------------------------------------------------- one family's jobs
def run_name(lr: float, batch: int) -> str:
    return f"lr{lr:g}_b{batch}"


def train_one(args: argparse.Namespace, family: str, folder: Path, lr: float, batch: int,
              minutes: float):
    r"""Trains one run of a family; returns ``(sampler, result, held_out_loss)``: a function
    drawing samples with ``(num, steps, seed)`` (float :math:`[-1, 1]`: ``{"images": ...}``,
    deblurred for ∞-Diff, which also returns them as drawn as ``"mollified"``), the training
    result, and a function computing the run's held-out loss (the probe's rule; the final runs
    do not need it)."""
    if family == "infdiff":
        recipe = Recipe(parametrization="x0", lr=lr, batch_size=batch)
        if args.smoke:
            recipe.checkpoint_every, recipe.warmup = 5, 5
        config = unet_config("tiny", channels=1) if args.smoke else UNetConfig.preset(RESOLUTION)
        result = train_infdiff(folder, FashionMNIST(train=True), config, RESOLUTION, RATE,
                               minutes, recipe, data_name="fashion-mnist", seed=args.seed,
                               clock="cpu")
        pretrained = load_pretrained(result["checkpoint"], weights="ema", device="cpu")
        undo = pretrained.diffusion.mollifier.undo

        def sampler(num: int, steps: int, seed: int) -> dict[str, Tensor]:
            drawn = draw_samples(pretrained.model, pretrained.diffusion, num, RESOLUTION, 1,
                                 steps, 50, seed, torch.device("cpu"))
            return {"images": undo(drawn, 2, inv_snr=0.05).clamp(-1, 1), "mollified": drawn}

        def held_out_loss() -> float:
            return infdiff_held_out_loss(pretrained.model.eval(), pretrained.diffusion,
                                         config.radius, held_out_images(args.smoke), args.seed)
    else:
        recipe = DenseRecipe(batch_size=batch, lr=lr, warmup=5 if args.smoke else 200,
                             schedule="cosine", ema="warmup", ema_decay=0.999)
        model, result = train_dense(folder, recipe, minutes, seed=args.seed, clock="cpu",
                                    target_params=args.dense_params)

        def sampler(num: int, steps: int, seed: int) -> dict[str, Tensor]:
            return {"images": dense_sample(model, make_scheduler("ddim"), num, RESOLUTION,
                                           steps, torch.Generator().manual_seed(seed),
                                           batch_size=50)}

        def held_out_loss() -> float:
            return dense_held_out_loss(model, held_out_images(args.smoke), args.seed)

        result = {k: v for k, v in result.items() if k != "loss_log"}
    return sampler, {**result, "lr": lr, "batch_size": batch}, held_out_loss


def held_out(run: dict) -> float:
    return run["held_out_loss"]


def extensions(lrs: list[float], runs: list[dict]):
    r"""The learning rates the probe adds beyond its grid (step 1's rule, in the order they
    are tried): while the best run so far has the largest (smallest) learning rate tried and
    fewer than :data:`MAX_EXTENSIONS` were added, the next one up (down) by the grid's largest
    ratio, at the best run's batch size. A generator over the growing list :obj:`runs`."""
    ratio = max((b / a for a, b in zip(sorted(lrs), sorted(lrs)[1:], strict=False)),
                default=10 ** 0.5)
    for _ in range(MAX_EXTENSIONS):
        tried = sorted({r["lr"] for r in runs})
        best = min(runs, key=held_out)["lr"]
        if best == tried[-1]:
            yield tried[-1] * ratio
        elif best == tried[0] and len(tried) > 1:
            yield tried[0] / ratio
        else:
            return


def probe_runs(args: argparse.Namespace, family: str) -> list[dict]:
    r"""Every finished probe run of a family: the grid and its extensions."""
    runs = [json.loads(path.read_text()) for path in
            sorted((args.out / family / "probe").glob("*/result.json"))]
    missing = {(lr, b) for lr in args.lrs for b in args.batches} - \
        {(r["lr"], r["batch_size"]) for r in runs}
    if missing:
        raise RuntimeError(f"the probe of {family} lacks the runs {sorted(missing)}")
    return runs


def worker(args: argparse.Namespace) -> dict:
    r"""The jobs of one family in this process (one thread): the probe, or the final run with
    its samples."""
    family, root = args.family, args.out / args.family
    if args.phase == "probe":

        def probe(lr: float, batch: int) -> dict:
            folder = root / "probe" / run_name(lr, batch)

            def trained() -> dict:
                _, result, held_out_loss = train_one(args, family, folder, lr, batch,
                                                     args.probe_minutes)
                return {**result, "held_out_loss": held_out_loss()}

            result = cached_json(folder / "result.json", trained)
            print(f"{family} {run_name(lr, batch)}: held-out loss "
                  f"{result['held_out_loss']:.5f}", flush=True)
            return result

        runs = [probe(lr, batch) for lr in args.lrs for batch in args.batches]
        for lr in extensions(args.lrs, runs):
            runs.append(probe(lr, min(runs, key=held_out)["batch_size"]))
        return {}
    chosen = json.loads((root / "chosen.json").read_text())
    folder = root / "final"
    sampler, result, _ = train_one(args, family, folder, chosen["lr"], chosen["batch_size"],
                                   args.minutes)
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    for steps in args.steps:
        path = folder / f"samples_{steps}.pt"
        if path.exists():
            continue
        start = time.process_time()
        blob = sampler(args.num_samples, steps, args.seed + 1)
        seconds = time.process_time() - start
        if steps != max(args.steps):  # the mollified set is scored at the most steps only
            blob.pop("mollified", None)
        torch.save({**blob, "cpu_seconds_per_image": seconds / args.num_samples}, path)
    if family == "infdiff":  # scored here while the slower dense sampler runs
        score(args, [family])
    return result


def launch(args: argparse.Namespace, phase: str) -> None:
    r"""Runs :func:`worker` for both families at once, one process (one thread) each, each
    logging to ``--out``/``<family>_<phase>.log``."""
    script = str(Path(__file__).resolve())
    jobs = {f"{family}_{phase}": [sys.executable, script, "--worker", "--phase", phase,
                                  "--family", family, *args.passthrough]
            for family in FAMILIES}
    run_jobs(jobs, logs=args.out, poll=0.2 if args.smoke else 2.0, what=f"{phase} worker")


def choose(args: argparse.Namespace) -> dict[str, list[dict]]:
    r"""The probe results of each family, and its kept run (lowest held-out loss) in
    ``<family>/chosen.json``."""
    probes = {}
    for family in FAMILIES:
        runs = probe_runs(args, family)
        best = min(runs, key=held_out)
        path = args.out / family / "chosen.json"
        chosen = {"lr": best["lr"], "batch_size": best["batch_size"]}
        if path.exists() and json.loads(path.read_text()) != chosen:
            raise ValueError(f"{path} holds another choice than the probe's: remove the stale "
                             "final run of that family before running again")
        path.write_text(json.dumps(chosen))
        probes[family] = runs
    return probes


def score(args: argparse.Namespace, families=FAMILIES) -> dict[str, dict]:
    r"""FID and KID (SWD with ``--smoke``) of every sample set of the final runs of
    :obj:`families`, each cached in ``--out``/``scores/``."""
    rows = {}
    for family in families:
        folder = args.out / family / "final"
        for steps in args.steps:
            blob = torch.load(folder / f"samples_{steps}.pt", weights_only=True)
            sets = {"deblurred" if family == "infdiff" else "as sampled": blob["images"]}
            if "mollified" in blob:
                sets["mollified"] = blob["mollified"]
            for name, images in sets.items():
                key = f"{family}/{steps}/{name}"
                path = args.out / "scores" / f"{key.replace('/', '_')}.json"
                seconds = blob["cpu_seconds_per_image"]
                rows[key] = cached_json(path, lambda images=images, name=name, seconds=seconds: {
                    **metrics_of(args, {name: images})[name], "cpu_seconds_per_image": seconds})
    return rows


def metrics_of(args: argparse.Namespace, sets: dict[str, Tensor]) -> dict[str, dict]:
    if args.smoke:
        test = FashionMNIST(train=False).images[: args.num_real]
        return swd_metrics(sets, (test.float() / 127.5 - 1.0).unsqueeze(1), args.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if args.worker else args.metric_threads)
    try:
        return inception_metrics(sets, FashionMNIST(train=False), args.num_real,
                                 "fashion-mnist-test", seed=args.seed)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- run, report
def run(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    launch(args, "probe")
    probes = choose(args)
    launch(args, "final")
    finals = {f: json.loads((args.out / f / "final" / "result.json").read_text())
              for f in FAMILIES}
    return {"probes": probes, "finals": finals, "scores": score(args)}


def report(args: argparse.Namespace, result: dict, picture: Path | None = None) -> str:
    metric = "SWD ×10³" if args.smoke else "FID"
    lines = ["## A dense baseline tuned as carefully: Fashion-MNIST 28², equal CPU time", "",
             f"Probe: {args.probe_minutes:g} CPU minutes per run; the run kept (**bold**) has "
             "the lowest held-out loss of its family (rule in `bench/dense_tuning.py`, fixed "
             "before any FID was computed).", ""]
    probe_rows = []
    for family, runs in result["probes"].items():
        best = min(r["held_out_loss"] for r in runs)
        for r in sorted(runs, key=lambda r: (r["lr"], r["batch_size"])):
            mark = "**" if r["held_out_loss"] == best else ""
            probe_rows.append([FAMILIES[family], f"{r['lr']:g}", r["batch_size"],
                               f"{r['steps']:,}", f"{mark}{r['held_out_loss']:.5f}{mark}"])
    lines += [markdown_table(["family", "lr", "batch", "steps", "held-out loss"],
                            probe_rows)]
    lines += ["", f"Final runs: {args.minutes:g} CPU minutes each, side by side, then "
              f"{args.num_samples:,} samples per step count against {args.num_real:,} test "
              "images.", ""]
    rows = []
    for key, s in result["scores"].items():
        family, steps, name = key.split("/")
        final = result["finals"][family]
        value = s["swd"] if args.smoke else s["fid"]
        kid = "—" if args.smoke else kid_cell(s)
        rows.append([FAMILIES[family], f"{final['lr']:g} / {final['batch_size']}",
                     f"{final['steps']:,}", steps, name, f"{value:.1f}", kid,
                     f"{s['cpu_seconds_per_image']:.3f}"])
    lines += [markdown_table(["family", "lr / batch", "steps trained", "DDIM steps", "samples",
                              metric, "KID ×10³", "sampling (CPU s / image)"], rows)]
    lines += ["", *goal_lines(args, result)]
    if picture is not None:
        lines += ["", f"![The first samples of each final model at 10, 25, 50 and 100 DDIM "
                  f"steps](_static/figures/{picture.name})"]
    lines += ["", "- " + machine_note(result)]
    return "\n".join(lines)


def goal_lines(args: argparse.Namespace, result: dict) -> list[str]:
    r"""Issue 14's target against the tuned baseline: FID at least 20% lower at equal CPU time,
    with 100-step sampling no slower per image."""
    if args.smoke or 100 not in args.steps:
        return []
    ours = result["scores"]["infdiff/100/deblurred"]
    dense = result["scores"]["dense/100/as sampled"]
    met = ours["fid"] <= 0.8 * dense["fid"] and \
        ours["cpu_seconds_per_image"] <= dense["cpu_seconds_per_image"]
    lines = [f"- Goal (issue 14 #3): FID at least 20% below the tuned dense baseline, 100-step "
             f"sampling no slower per image: FID {ours['fid']:.1f} vs {dense['fid']:.1f} "
             f"({ours['fid'] / dense['fid']:.2f}×), {ours['cpu_seconds_per_image']:.3f} vs "
             f"{dense['cpu_seconds_per_image']:.3f} CPU s per image — "
             f"{'**met**' if met else '**NOT met**'}"]
    best = {}  # each family's best row over the step counts
    for key, s in result["scores"].items():
        family = key.split("/")[0]
        if family not in best or s["fid"] < best[family][1]["fid"]:
            best[family] = (key, s)
    lines.append("- Best of each family: " + "; ".join(
        f"{FAMILIES[f]} FID {s['fid']:.1f} ({key.split('/')[1]} DDIM steps, "
        f"{key.split('/')[2]}, {s['cpu_seconds_per_image']:.3f} CPU s per image)"
        for f, (key, s) in best.items()))
    return lines


def figure(args: argparse.Namespace, result: dict) -> Path:
    rows = []
    for family in FAMILIES:
        for steps in args.steps:
            blob = torch.load(args.out / family / "final" / f"samples_{steps}.pt",
                              weights_only=True)
            name = "infty-Diff" if family == "infdiff" else "dense"  # the font has no ∞
            rows.append((f"{name}, {steps} steps", blob["images"][:12]))
    return save_rows(rows, args.figures / "bench_dense_tuning.png", cell_size=56)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--minutes", type=positive_float, default=25.0,
                   help="CPU minutes of a final run")
    p.add_argument("--probe-minutes", type=positive_float, default=6.0,
                   help="CPU minutes of a probe run")
    p.add_argument("--lrs", default="1.5e-4,5e-4,1.5e-3", help="probed learning rates")
    p.add_argument("--batches", default="32,128", help="probed batch sizes")
    p.add_argument("--steps", default="10,25,50,100", help="DDIM step counts")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--num-real", type=positive_int, default=2000,
                   help="test images to score against")
    p.add_argument("--dense-params", type=positive_int, default=DENSE_PARAMS)
    p.add_argument("--metric-threads", type=positive_int, default=os.cpu_count() or 1,
                   help="torch threads of the Inception features in this process (the "
                   "∞-Diff worker scores its own samples on one thread)")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["probe", "final"], help=argparse.SUPPRESS)
    p.add_argument("--family", choices=list(FAMILIES), help=argparse.SUPPRESS)
    add_threads_arg(p)
    add_publish_args(p, "seconds per part: tiny models, two probe runs, 8 samples of 2 "
                     "and 3 steps, SWD (the tests)",
                     figures=FIGURES)
    args = p.parse_args(argv)
    # What the worker processes get: this command's own options.
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:])
                        if a != "--write"]
    args.lrs = [float(v) for v in args.lrs.split(",")]
    args.batches = [int(v) for v in args.batches.split(",")]
    args.steps = sorted(int(v) for v in args.steps.split(","))
    if args.smoke:  # two probe runs per family, two step counts
        args.minutes, args.probe_minutes, args.lrs, args.batches = 0.05, 0.02, [1e-3, 3e-3], [8]
        args.steps, args.num_samples, args.num_real, args.dense_params = [2, 3], 8, 64, 20_000
    if min(args.lrs) <= 0 or min(args.batches) < 1 or min(args.steps) < 1:
        p.error("--lrs, --batches and --steps must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "dense_tuning", parse_args, run, report, argv, figure=figure,
                      stamp=True, worker=worker)


if __name__ == "__main__":
    main()
