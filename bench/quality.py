r"""Benchmark (issue 5, #4; opt-in and slow): sample quality at a fixed CPU budget.

Fashion-MNIST 28², the same wall-clock training budget (``--minutes``, default 25) for each arm:

* **(a)** ∞-Diff, 4× subsampling (a quarter of each image's pixels as graph nodes);
* **(b)** ∞-Diff, no subsampling (all pixels);
* **(c)** the dense DDPM of ``diffusers`` (``bench/train_dense_ddpm.py``, its documented
  settings, at the ∞-Diff parameter count).

∞-Diff arms use the library's documented 28² recipe (``examples/celebahq_train.py``, preset 28):
:meth:`UNetConfig.preset` ``(28)`` (1.30 M parameters), batch 32, AdamW lr 5e-4 with 200
warm-up steps then constant, gradient clip 1, EMA 0.999, mollifier σ = half a pixel, cosine
schedule, mollified-noise prediction; trained by :class:`~pyg_infdiff.training.Trainer`.
Each arm then draws 1,000 samples with its EMA weights (DDIM, :math:`\eta = 0`, 100 steps) and
scores them against the 10,000 test images: FID and KID on the standard FID Inception features
(:mod:`pyg_infdiff.metrics`, offline weights). ∞-Diff samples are scored as drawn (mollified)
and Wiener-deblurred (inverse SNR 0.05). Goal: (a) no worse than (c).

Every arm is resumable: ∞-Diff training writes checkpoints (and the time already spent) into
``--out``/``arm_<x>/`` and continues from them with the remaining budget; samples and results are
cached (``arm_<x>/samples.pt``, ``--out``/``arm_<x>.json``), so a rerun skips finished parts and
``--report-only --write`` writes the table from the arms finished so far. The dense arm's
training script has no mid-run checkpoints: an interrupted dense arm starts over.

Durations on this 2-core machine with one thread (load ~5): 25 min of training per arm;
sampling 1,000 images ~5-10 min per arm; Inception features ~0.27 s per image, so ~45 min for
the 10,000 test images (once: cached in ``~/.cache/pyg_infdiff/fid_stats``, shared with
``python -m pyg_infdiff.metrics``) and ~9 min per ∞-Diff arm (two sample sets), ~5 min for the
dense arm. All three arms: about 2.5-3 hours. Run::

    python bench/quality.py --write                     # all three arms, ~2.5-3 h
    python bench/quality.py --arms a --minutes 25       # one arm (then b, c later)
    python bench/quality.py --report-only --write       # the table from finished arms
    python bench/quality.py --smoke --out /tmp/q        # seconds per arm, SWD only (tests)

This module also holds :func:`train_infdiff` (time-budgeted, resumable training with
:class:`~pyg_infdiff.training.Trainer`) and :func:`inception_metrics`, which
``bench/beyond_resolution.py`` reuses.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from _common import DOC, ROOT, machine_description, markdown_table, write_section
from consistency import load_run
from subsampling import command_line, resolve_device, unet_config
from torch import Tensor
from torch.utils.data import Dataset

from pyg_infdiff.data import FashionMNIST, GraphCollator, make_loader
from pyg_infdiff.data.images import save_grid
from pyg_infdiff.diffusion import MollifiedDiffusion, sample
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import Trainer, TrainerConfig

OUT = ROOT / "bench" / "_out" / "quality"
RESOLUTION = 28
ARMS = {
    "a": "∞-Diff, 4× subsampling",
    "b": "∞-Diff, all pixels",
    "c": "dense DDPM (diffusers)",
}
RATES = {"a": 4.0, "b": 1.0}


# --------------------------------------------------------------------------- training
@dataclass
class Recipe:
    r"""How an ∞-Diff arm trains (defaults: the 28² recipe of ``examples/celebahq_train.py``)."""

    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    ema_start: int = 0
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    log_every: int = 50


class _Budget:
    r"""Wraps the loss: records the time spent before each step and, once the budget is spent,
    makes the current step the last one (``trainer.config.max_steps``)."""

    def __init__(self, loss_fn: Callable, seconds: float, spent_at: dict[int, float]) -> None:
        self.loss_fn, self.seconds, self.spent_at = loss_fn, seconds, spent_at
        self.trainer: Trainer | None = None
        self.start: float | None = None
        self.offset = 0.0
        self.elapsed: dict[int, float] = {}  # trainer.step -> seconds spent after that step
        self.last_print = 0.0

    def now(self) -> float:
        return self.offset + time.perf_counter() - self.start

    def __call__(self, model, batch, **kwargs):
        step = self.trainer.step
        if self.start is None:  # the first call: the trainer has resumed (or not) by now
            self.start = time.perf_counter()
            self.offset = self.spent_at.get(step, 0.0)
        elapsed = self.now()
        self.elapsed[step] = elapsed
        if elapsed >= self.seconds:
            self.trainer.config.max_steps = step + 1
        if elapsed - self.last_print >= 60:
            self.last_print = elapsed
            print(f"  step {step}, {elapsed / 60:.1f} / {self.seconds / 60:.1f} min", flush=True)
        return self.loss_fn(model, batch, **kwargs)


def train_infdiff(
    out: Path,
    dataset: Dataset,
    config: UNetConfig,
    resolution: int,
    rate: float,
    minutes: float,
    recipe: Recipe | None = None,
    *,
    data_name: str = "data",
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    r"""Trains an ∞-Diff model for a wall-clock budget with the public library parts
    (:class:`GraphCollator`, :func:`make_loader`, :class:`MollifiedDiffusion`,
    :class:`Trainer`), resumably.

    The run folder holds the trainer's checkpoints and logs and ``budget.json``, the time spent
    up to each checkpoint; a rerun resumes from the newest checkpoint with the rest of the budget,
    returns at once when the budget was spent, continues training when given a larger budget and
    refuses a smaller one. The checkpoints carry the examples'
    ``model_config`` (``unet``, ``diffusion``, ``data``), so :func:`consistency.load_run` and
    ``examples/sample.py`` read them.

    Returns:
        dict: ``steps``, ``train_seconds``, ``checkpoint`` (path), ``parameters``.
    """
    recipe = recipe or Recipe()
    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "budget.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    if ledger.get("done"):  # a larger budget continues from the last checkpoint
        if abs(ledger["budget_seconds"] - 60.0 * minutes) < 1e-6:
            return ledger["result"]
        if ledger["budget_seconds"] > 60.0 * minutes:
            raise ValueError(f"{out} holds a run trained for {ledger['budget_seconds'] / 60:g} "
                             f"min, more than the {minutes:g} min asked for: use another folder")
    spent_at = {int(k): v for k, v in ledger.get("spent_at", {}).items()}
    sigma = 0.5 / resolution
    diffusion = MollifiedDiffusion(MollifiedNoise(sigma, config.ndim))
    collator = GraphCollator(diffusion.mollifier, rate=rate, radius=config.radius)
    loader = make_loader(dataset, collator, recipe.batch_size, seed=seed, drop_last=True)
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(config)
    model_config = {
        "unet": config.to_dict(),
        "diffusion": {"sigma": sigma, "schedule": "cosine", "num_steps": diffusion.num_steps,
                      "parametrization": diffusion.parametrization,
                      "noise_cutoff": diffusion.noise.cutoff},
        "data": {"dataset": data_name, "resolution": resolution,
                 "channels": config.in_channels, "subsample": rate, "seed": seed},
    }
    trainer_config = TrainerConfig(
        lr=recipe.lr, warmup_steps=recipe.warmup, max_steps=10**9, grad_clip=recipe.grad_clip,
        ema_decay=recipe.ema_decay, ema_start=recipe.ema_start, log_every=recipe.log_every,
        sample_every=0, checkpoint_every=recipe.checkpoint_every, keep_last=2,
        out_dir=str(out), seed=seed, device=device, progress=False, verbose=False,
    )
    budget = _Budget(partial(diffusion.training_loss), 60.0 * minutes, spent_at)
    trainer = Trainer(model, budget, trainer_config, model_config=model_config,
                      pass_generator=True)
    budget.trainer = trainer
    print(f"training {data_name} {resolution}², rate {rate:g}, {minutes:g} min budget, "
          f"{trainer.num_parameters:,} parameters -> {out}", flush=True)
    result = None
    try:
        result = trainer.fit(loader, resume="auto")
    finally:
        # Time spent up to each checkpoint on disk (a checkpoint written on an interrupt, after
        # the last recorded step, gets the time of now).
        finished = budget.now() if budget.start is not None else spent_at.get(trainer.step, 0.0)
        for step, _ in trainer.checkpoints.checkpoints():
            if step not in spent_at:
                spent_at[step] = budget.elapsed.get(step, finished)
        ledger = {"budget_seconds": 60.0 * minutes,
                  "spent_at": {str(k): v for k, v in sorted(spent_at.items())}}
        if result is not None:
            ledger["done"] = True
            ledger["result"] = {
                "steps": result.step, "train_seconds": round(finished, 1),
                "checkpoint": str(result.checkpoint),
                "parameters": trainer.num_parameters,
                "images_seen": result.step * recipe.batch_size,
                "recipe": vars(recipe), "rate": rate,
            }
        ledger_path.write_text(json.dumps(ledger, indent=2))
    return ledger["result"]


# --------------------------------------------------------------------------- sampling, metrics
@torch.no_grad()
def draw_samples(model, diffusion: MollifiedDiffusion, num: int, side: int, channels: int,
                 steps: int, batch: int, seed: int, device: torch.device) -> Tensor:
    r""":obj:`num` samples (DDIM, :math:`\eta = 0`) at one side, in batches; batch :math:`b`
    seeded ``seed + b``. Returns float32 CPU images in :math:`[-1, 1]`, as sampled
    (mollified)."""
    out = []
    for b, start in enumerate(range(0, num, batch)):
        count = min(batch, num - start)
        images = sample(model, diffusion, shape=(side, side), num_samples=count,
                        channels=channels, steps=steps, sampler="ddim", eta=0.0,
                        generator=torch.Generator(device=device).manual_seed(seed + b),
                        progress=False, device=device).images
        out.append(images.float().clamp(-1, 1).cpu())
    return torch.cat(out)


def _batches(images: Tensor | Dataset, num: int, batch: int) -> Iterable[Tensor]:
    for start in range(0, num, batch):
        items = [images[i] for i in range(start, min(num, start + batch))]
        items = [it[0] if isinstance(it, tuple | list) else it for it in items]
        yield torch.stack([it if it.dim() == 3 else it.unsqueeze(0) for it in items])


def inception_metrics(fakes: dict[str, Tensor], real: Tensor | Dataset, num_real: int,
                      cache_name: str | None, *, device: str = "cpu", seed: int = 0,
                      batch: int = 50) -> dict[str, dict[str, float]]:
    r"""FID and KID of each set of :obj:`fakes` (float :math:`[-1, 1]` images) against the
    first :obj:`num_real` of :obj:`real` (images or ``(image, label)`` items, ``uint8`` or
    float), on the standard FID Inception features. The real statistics are cached
    (:class:`~pyg_infdiff.metrics.StatisticsCache`) under :obj:`cache_name` when given.
    Raises :class:`FileNotFoundError` (saying how to get them) without the weights."""
    from pyg_infdiff.metrics import (
        StatisticsCache,
        compute_statistics,
        extract_features,
        fid_from_features,
        kernel_inception_distance,
        load_inception,
    )

    net = load_inception(device=device)
    first = next(iter(_batches(real, 1, 1)))
    side = first.shape[-1]

    def real_features() -> Tensor:
        return extract_features(net, _batches(real, num_real, batch), num=num_real,
                                desc="inception real")

    if cache_name is not None:
        variant = f"{net.resize_mode}-c{first.size(1)}-{side}x{side}"
        real_stats = StatisticsCache().get_or_compute(real_features, cache_name, side, num_real,
                                                      net.sha1, variant)
    else:
        real_stats = compute_statistics(real_features())
    results = {}
    for name, images in fakes.items():
        stats = compute_statistics(extract_features(net, images, batch_size=batch,
                                                    desc=f"inception {name}"))
        kid, kid_std = kernel_inception_distance(real_stats.features, stats.features,
                                                 generator=torch.Generator().manual_seed(seed))
        results[name] = {"fid": fid_from_features(real_stats, stats), "kid": kid,
                         "kid_std": kid_std, "num_fake": images.size(0), "num_real": num_real}
    return results


def swd_metrics(fakes: dict[str, Tensor], real: Tensor, seed: int = 0) -> dict[str, dict]:
    r"""The multi-scale SWD (mean over levels, ×10³) of each fake set against as many real
    images (float :math:`[-1, 1]`)."""
    from pyg_infdiff.metrics import sliced_wasserstein_distance

    out = {}
    for name, images in fakes.items():
        n = min(images.size(0), real.size(0))
        result = sliced_wasserstein_distance(real[:n], images[:n],
                                             generator=torch.Generator().manual_seed(seed))
        out[name] = {"swd": result.mean, "num_fake": n, "num_real": n}
    return out


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


def run_infdiff_arm(args: argparse.Namespace, arm: str) -> dict:
    out = args.out / f"arm_{arm}"
    recipe = Recipe(batch_size=args.batch_size) if args.batch_size else Recipe()
    if args.smoke:
        recipe.checkpoint_every, recipe.warmup = 5, 5
    config = UNetConfig.preset(RESOLUTION)
    if args.smoke:
        config = unet_config("tiny", channels=1)
    trained = train_infdiff(out, FashionMNIST(train=True), config, RESOLUTION, RATES[arm],
                            args.minutes, recipe, data_name="fashion-mnist", seed=args.seed)
    samples_path = out / "samples.pt"
    device = resolve_device(args.device)
    blob = torch.load(samples_path, weights_only=True) if samples_path.exists() else {}
    settings = [trained["checkpoint"], args.num_samples, args.sample_steps, args.seed]
    if blob.get("settings") != settings:
        model, diffusion, _, _ = load_run(trained["checkpoint"], "ema", device)
        start = time.perf_counter()
        images = draw_samples(model, diffusion, args.num_samples, RESOLUTION, 1,
                              args.sample_steps, args.sample_batch, args.seed + 1, device)
        seconds = time.perf_counter() - start
        deblurred = diffusion.mollifier.undo(images, 2, inv_snr=0.05).clamp(-1, 1)
        blob = {"images": images, "deblurred": deblurred, "seconds": seconds,
                "settings": settings}
        torch.save(blob, samples_path)
        save_grid(images[:64], out / "samples.png", nrow=8)
    metrics = score(args, {"mollified": blob["images"], "deblurred": blob["deblurred"]})
    return {"arm": arm, "label": ARMS[arm], **trained,
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
    run = json.loads(run_json.read_text())
    images = torch.load(out / "samples.pt", weights_only=True)
    metrics = score(args, {"as sampled": images})
    return {"arm": "c", "label": ARMS["c"], "steps": run["steps"],
            "train_seconds": run["train_seconds"], "parameters": run["parameters"],
            "images_seen": run["images_seen"],
            "sample_seconds_per_image": run["sample_seconds_per_image"], "metrics": metrics,
            "recipe": run["settings"]}


def report(args: argparse.Namespace, results: dict[str, dict], settings: dict) -> str:
    r"""The markdown section from the finished arms (their own recorded settings; the current
    ones when none has finished)."""
    recorded = [r["settings"] for r in results.values()]
    shown = recorded[0] if recorded else settings
    fid = shown["metrics"] != "swd"
    rows = []
    for arm in sorted(results):
        r = results[arm]
        for variant, m in r["metrics"].items():
            value = ([f"{m['fid']:.2f}", f"{1e3 * m['kid']:.2f} ± {1e3 * m['kid_std']:.2f}"]
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
                     f"(a)'s rows) vs {c:.2f} — **{verdict}**")
    else:
        missing = ", ".join(f"({k})" for k in ("a", "c") if k not in results)
        lines.append(f"- Goal (issue 5 #4: (a) no worse than (c)): not evaluated yet — arm(s) "
                     f"{missing} not finished.")
    machines = "; ".join(f"({arm}) {results[arm].get('machine', '?')}" for arm in sorted(results))
    batches = sorted({results[a]["recipe"]["batch_size"] for a in ("a", "b") if a in results})
    batch = "/".join(map(str, batches)) or str(args.batch_size or Recipe().batch_size)
    threads = sorted({r.get("threads") for r in results.values()}) or [args.threads]
    lines += [
        f"- Budget: {shown['minutes']:g} min of training per arm (wall clock, data loading "
        f"included). ∞-Diff (a, b): preset 28, batch {batch}, AdamW lr 5e-4 (200 warm-up "
        "steps, then constant), clip 1, EMA 0.999, σ = half a pixel, cosine schedule, "
        "Trainer; (a) keeps a quarter of each image's pixels (uniform), (b) all. Dense (c): "
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
        f"- Command: `{args.command}` (arms cached in `{_rel(args.out)}`).",
    ]
    return "\n".join(lines)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arms", default="a,b,c", help="comma list of a, b, c")
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget per arm (default: 25; 0.05 with --smoke)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--num-real", type=int, default=10_000, help="test images to score against")
    p.add_argument("--sample-steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--sample-batch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=None,
                   help="∞-Diff training batch (default: the recipe's 32)")
    p.add_argument("--dense-params", type=int, default=1_302_209,
                   help="dense model's parameter count (default: that of the ∞-Diff preset 28)")
    p.add_argument("--metrics", choices=["fid", "swd"], default="fid",
                   help="fid: FID and KID (Inception weights needed); swd: weight-free")
    p.add_argument("--out", type=Path, default=OUT, help="cache folder of the arms")
    p.add_argument("--force", action="store_true", help="recompute the metrics of cached arms")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table from the finished arms in --out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for training and sampling, every arm")
    p.add_argument("--metric-threads", type=int, default=None,
                   help="torch CPU threads for the Inception features (default: --threads; "
                   "they do not affect the comparison)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true", help="write the section into --doc")
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument("--smoke", action="store_true",
                   help="tiny ∞-Diff model, 3 s budgets, 8 samples of 2 steps, SWD (tests)")
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
    if min(args.minutes, args.num_samples, args.sample_steps, args.sample_batch) <= 0:
        p.error("--minutes, --num-samples, --sample-steps and --sample-batch must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.command = command_line(__file__, argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    settings = {"minutes": args.minutes, "num_samples": args.num_samples,
                "sample_steps": args.sample_steps, "metrics": args.metrics,
                "num_real": args.num_real, "seed": args.seed}
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
    body = report(args, results, settings)
    print(body)
    if args.write:
        write_section("quality", body, args.doc)
        print(f"wrote the 'quality' section of {args.doc}")
    return results


if __name__ == "__main__":
    main()
