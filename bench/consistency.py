r"""Benchmark (issue 5, #6; issue 12, item 5): resolution consistency of a trained model.

DDIM (:math:`\eta = 0`, deterministic after the initial draw) from the same seeds at the
training resolution :math:`n` and at :math:`2n` and :math:`4n` (28², 56² and 112² for a
Fashion-MNIST model): the initial states are the same mollified noise fields read on every
lattice, so the samples of a seed are discretisations of one function, up to the model's own
discretisation error. The :math:`2n` and :math:`4n` samples are average-pooled to :math:`n` and
compared with the :math:`n` samples by PSNR (peak-to-peak 2, images in :math:`[-1, 1]`), per
seed; the report gives the mean, median and minimum over the seeds.

Two readings (arms) of every lattice:

* ``plain``: the model reads the lattice itself (``examples/sample.py --context none``);
* ``context``: it reads every lattice through the context of its training density,
  :meth:`Pretrained.context_for` of the lattice's node count (``--context auto``; for a model
  trained at 28² with rate 4, 196 uniform random points per sample at all three sides, since
  28² already holds more nodes than 196). The context points are drawn from the generator after
  the initial noise field, so both arms start from the same functions.

For scale, the table gives the PSNR between *different* seeds at :math:`n` (sample :math:`i`
against sample :math:`i + 1`): what unrelated samples score. Rows: the raw (mollified) samples,
which the model produces, and the same after Wiener deblurring
(:meth:`GaussianMollifier.undo`, inverse SNR 0.05), as the examples show them.

**Class changes.** A small CNN (``bench/_classifier.py``) trained on the Fashion-MNIST training
set, mollified with the checkpoint's own mollifier (what the model samples), classifies the
:math:`n` sample and the pooled :math:`2n` and :math:`4n` samples of every seed; a seed *changes
class* when the argmax differs. Its weights and its test accuracy (on the mollified test set)
are cached in ``--out``. Samples that are not 28² grey images (the smoke test's model) are
averaged over channels and resized to 28² bilinearly before classification. For reference, the
classifier's own floor: how many seeds change class when their :math:`n` sample gets white
noise of the same size as its difference to the pooled higher one (the same root-mean-square,
one seeded draw per seed), a change the model did not make.

Targets (issue 12): mean PSNR ≥ 30 dB and minimum ≥ 20 dB for :math:`n` vs :math:`2n`↓ and
:math:`n` vs :math:`4n`↓ (mollified samples), and no seed changing class. With ``--write`` the
section of ``docs/benchmarks.md`` and its row of "Goals at a glance" are replaced.

64 seeds, 50 DDIM steps, preset 28 on this 2-core machine (one thread, beside another
benchmark): about 11 minutes, most of it at 112² (4-5 min per arm), plus a minute to train the
classifier once. Run it on the
checkpoint of any run written by :class:`~pyg_infdiff.training.Trainer` with the examples'
``model_config`` (``examples/celebahq_train.py --dataset fashion-mnist``, or an arm of
``bench/spectral_grid.py`` or ``bench/quality.py``)::

    python bench/consistency.py --checkpoint bench/_out/spectral_grid/arm_conv --write
    python bench/consistency.py --smoke        # untrained tiny model, 2 steps (the tests)

``--compare`` measures further checkpoints (trained at the same resolution, with the same
mollifier) in the same protocol and adds a table of all of them side by side, for instance a
model retrained after a change of the architecture beside the one before it; the goals row reads
``--checkpoint``. Every set of samples of a checkpoint is cached in ``--out`` (keyed by the
checkpoint, its step and the sampling arguments), so checkpoints can be sampled by separate runs
in parallel, one thread each, and published by one run that reads them all::

    python bench/consistency.py --checkpoint bench/_out/quality_radius/r357/arm_a --threads 1
    python bench/consistency.py --checkpoint bench/_out/quality_radius/r25/arm_a --threads 1
    python bench/consistency.py --checkpoint bench/_out/quality_radius/r357/arm_a \
        --compare bench/_out/quality_radius/r25/arm_a --write

The checkpoint is loaded with :func:`pyg_infdiff.training.load_pretrained`; sampling is
:func:`_scoring.draw_samples` (``bench/_scoring.py``).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _args import positive_int
from _classifier import fit_classifier, predict
from _common import ROOT, machine_description
from _infdiff import FIGURES, make_diffusion, resolve_device, unet_config
from _publish import add_publish_args, compact_figure, markdown_table, write_goal_row
from _scoring import context_label, draw_samples
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from torch import Tensor

from pyg_infdiff.data.images import save_rows
from pyg_infdiff.models import MultiscaleOperatorUNet
from pyg_infdiff.testing import redraw_zero_layers
from pyg_infdiff.training import Pretrained, load_pretrained, save_checkpoint

OUT = ROOT / "bench" / "_out" / "consistency"
SCALES = (2, 4)  # the higher resolutions, as multiples of the lower one
ARMS = ("plain", "context")
# Targets of issue 12 (mollified samples, n vs 2n and 4n pooled).
TARGET_MEAN, TARGET_MIN = 30.0, 20.0
# The row of "Goals at a glance" that --write replaces (found by its first cell's start).
GOAL_ROW = "| resolution consistency"


def psnr(a: Tensor, b: Tensor, peak: float = 2.0) -> Tensor:
    r"""Per-image PSNR in dB, :math:`10 \log_{10}(\text{peak}^2 / \mathrm{MSE})`, of batches
    :math:`(B, C, H, W)`."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-20)
    return 10.0 * torch.log10(peak**2 / mse)


# --------------------------------------------------------------------------- the measurement
def _smoke_pretrained(seed: int, device: torch.device) -> Pretrained:
    r"""An untrained tiny model that says it was trained at 16² with rate 4 (so its training
    context is 64 random points), its zero-initialised layers redrawn so that it speaks."""
    torch.manual_seed(seed)
    config = unet_config("tiny")
    model = MultiscaleOperatorUNet(config)
    redraw_zero_layers(model, gain=0.5)
    model = model.to(device).eval()
    info = {"data": {"resolution": 16, "subsample": 4.0}}
    return Pretrained(model, make_diffusion(16), config, info, 0, Path("untrained"))


def compare(low: Tensor, highs: dict[int, Tensor], undo) -> dict:
    r"""PSNR of the :obj:`low` samples against each higher set average-pooled to their size
    (``same``) and between different seeds at the low resolution (``other``), for the samples
    as they are and deblurred by :obj:`undo`."""
    rows = {}
    for name, fn in (("mollified", lambda x: x), ("deblurred", lambda x: undo(x).clamp(-1, 1))):
        a = fn(low)
        same = {s: psnr(F.avg_pool2d(fn(h), s), a) for s, h in highs.items()}
        other = psnr(a, a.roll(1, dims=0)) if a.size(0) > 1 else torch.full((1,), math.nan)
        rows[name] = {"same": same, "other": other}
    return rows


def _sample_cache(args: argparse.Namespace, pretrained: Pretrained, arm: str,
                  side: int) -> Path | None:
    r"""Where one set of samples of a checkpoint is cached (:obj:`None` for an untrained
    model): keyed by the checkpoint file, its step and weights, the arm, the side and the
    sampling arguments, so that an interrupted or repeated run, or a later ``--write`` run that
    compares checkpoints, samples nothing twice."""
    if args.checkpoint is None:
        return None
    ident = (f"{pretrained.path.resolve()}|{pretrained.step}|{args.weights}|{arm}|{side}|"
             f"{args.num}|{args.batch}|{args.steps}|{args.seed}")
    digest = hashlib.sha1(ident.encode()).hexdigest()[:16]
    return Path(args.out) / "samples" / f"{pretrained.path.stem}_{arm}_{side}_{digest}.pt"


def measure(args: argparse.Namespace, pretrained: Pretrained, classifier: dict,
            device: torch.device) -> dict:
    r"""Both readings of one checkpoint at every side: its samples (cached by
    :func:`_sample_cache`), sampling times, PSNR rows and class changes."""
    model, diffusion, trained = pretrained.model, pretrained.diffusion, pretrained.resolution
    base = args.resolution or trained
    if base is None:
        raise SystemExit("The checkpoint does not record its training resolution: pass "
                         "--resolution")
    channels = model.config.out_channels
    sides = (base, *(base * s for s in SCALES))
    arms = {}
    for arm in args.arms:
        samples, seconds, contexts = {}, {}, {}
        for side in sides:
            context = pretrained.context_for(side**2) if arm == "context" else None
            contexts[side] = context_label(context)
            cache = _sample_cache(args, pretrained, arm, side)
            if cache is not None and cache.exists():
                saved = torch.load(cache, weights_only=True)
                samples[side], seconds[side] = saved["samples"], float(saved["seconds"])
                print(f"{arm}: {args.num} samples at {side}² from {cache}", flush=True)
                continue
            start = time.perf_counter()
            samples[side] = draw_samples(model, diffusion, args.num, side, channels, args.steps,
                                         args.batch, args.seed, device, context=context)
            seconds[side] = time.perf_counter() - start
            if cache is not None:
                save_checkpoint({"samples": samples[side], "seconds": seconds[side]}, cache)
            print(f"{arm}: {args.num} samples at {side}² through {contexts[side]}: "
                  f"{seconds[side]:.1f} s", flush=True)
        low = samples[base]
        highs = {s: samples[base * s] for s in SCALES}
        rows = compare(low, highs, lambda x: diffusion.mollifier.undo(x, 2, inv_snr=0.05))
        pooled = {s: F.avg_pool2d(high, s) for s, high in highs.items()}
        classes = {base: predict(classifier["model"], low)}
        for s, image in pooled.items():
            classes[base * s] = predict(classifier["model"], image)
        changed = {s: classes[base * s] != classes[base] for s in SCALES}
        arms[arm] = {"rows": rows, "samples": samples, "seconds": seconds,
                     "contexts": contexts, "classes": classes, "changed": changed,
                     "floor": classifier_floor(classifier["model"], low, pooled, classes[base],
                                               args.seed)}
    radius_px = model.config.radius * trained if trained else None
    return {"arms": arms, "sides": sides, "trained": trained, "radius_px": radius_px,
            "params": sum(p.numel() for p in model.parameters()),
            "rate": pretrained.info.get("data", {}).get("subsample")}


def classifier_floor(classifier, low: Tensor, pooled: dict[int, Tensor], classes: Tensor,
                     seed: int) -> dict[int, Tensor]:
    r"""Per scale, which seeds change class when their low-resolution sample gets white noise
    of the root-mean-square of its difference to the higher one pooled to it (:obj:`pooled`,
    by scale): the changes that differences of that size cause in the classifier without any
    structure, bool :math:`(\text{num},)`."""
    floor = {}
    for s, image in pooled.items():
        diff = (low.float() - image.float()).flatten(1)
        rms = diff.pow(2).mean(1).sqrt().view(-1, *([1] * (low.dim() - 1)))
        noise = torch.randn(low.shape, generator=torch.Generator().manual_seed(seed + s))
        floor[s] = predict(classifier, low.float() + rms * noise) != classes
    return floor


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if args.checkpoint is not None:
        pretrained = load_pretrained(args.checkpoint, weights=args.weights, device=device)
        source = f"`{pretrained.path}` (step {pretrained.step}, {args.weights} weights)"
    else:  # --smoke without a checkpoint: an untrained tiny model
        pretrained = _smoke_pretrained(args.seed, device)
        source = "an untrained tiny model (smoke test)"
    classifier = fit_classifier(args.out, pretrained.diffusion.mollifier, smoke=args.smoke,
                                seed=args.seed)
    result = measure(args, pretrained, classifier, device)
    others = []
    for path in args.compare:
        other = load_pretrained(path, weights=args.weights, device=device)
        if other.diffusion.mollifier.sigma != pretrained.diffusion.mollifier.sigma:
            raise SystemExit(f"{path}: another mollifier than --checkpoint's; the classifier "
                             "reads one width")
        measured = measure(args, other, classifier, device)
        if measured["sides"] != result["sides"]:
            raise SystemExit(f"{path}: trained at {measured['trained']}², not at "
                             f"{result['trained']}² as --checkpoint")
        others.append({**measured, "source": f"`{other.path}` (step {other.step}, "
                                            f"{args.weights} weights)"})
    return {**result, "source": source, "others": others, "device": device,
            "machine": machine_description(device),
            "classifier": {k: v for k, v in classifier.items() if k != "model"}}


# --------------------------------------------------------------------------- the report
def changed_anywhere(arm: dict) -> Tensor:
    r"""Which seeds of an arm change class at any of the higher resolutions, bool
    :math:`(\text{num},)`."""
    return torch.stack(list(arm["changed"].values())).any(0)


def targets(arm: dict) -> dict:
    r"""Whether an arm meets the targets of issue 12: per scale the mean and minimum PSNR of
    the mollified samples, and overall (``"met"``) with no seed changing class."""
    same = arm["rows"]["mollified"]["same"]
    per_scale = {s: {"mean": float(v.mean()), "min": float(v.min()),
                     "met": bool(v.mean() >= TARGET_MEAN and v.min() >= TARGET_MIN)}
                 for s, v in same.items()}
    changed = changed_anywhere(arm)
    return {"scales": per_scale, "changed": int(changed.sum()),
            "met": all(p["met"] for p in per_scale.values()) and not bool(changed.any())}


def _status(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _arm_name(arm: str, result: dict) -> str:
    if arm == "plain":
        return "plain lattices"
    labels = sorted(set(result["arms"][arm]["contexts"].values()))
    return "training context (" + ", ".join(labels) + ")"


def goal_row(result: dict, num: int) -> str:
    r"""The row of "Goals at a glance": every arm's mean / minimum PSNR at both scales, its
    class changes, and whether it meets the targets."""
    n = result["sides"][0]
    measured, status = [], []
    for arm, values in result["arms"].items():
        t = targets(values)
        dbs = ", ".join(f"{n * s}²↓ {p['mean']:.1f} / {p['min']:.1f} dB"
                        for s, p in t["scales"].items())
        measured.append(f"{arm}: {dbs}, {t['changed']} of {num} seeds change class")
        status.append(f"{_status(t['met'])} ({arm})")
    scales = " and ".join(f"{n * s}²↓" for s in SCALES)
    return (f"{GOAL_ROW}: same seeds, {n}² vs {scales}, mean PSNR ≥ {TARGET_MEAN:g} dB, "
            f"min ≥ {TARGET_MIN:g} dB, no seed changing class (5 #6 / 12) | "
            f"{'; '.join(measured)} | {'; '.join(status)} |")


def side_by_side(result: dict, num: int) -> str:
    r"""One row per checkpoint and reading: its kernel radius in training pixels, mean and
    minimum PSNR at both scales (mollified samples) and the seeds that change class."""
    n = result["sides"][0]
    headers = ["checkpoint", "kernel radius", "reading"]
    for s in SCALES:
        headers += [f"{n * s}²↓: mean (dB)", "min"]
    headers.append("seeds changing class")
    rows = []
    for model in (result, *result["others"]):
        radius = "?" if model["radius_px"] is None else f"{model['radius_px']:.2f} px"
        for arm, values in model["arms"].items():
            t = targets(values)
            cells = [model["source"], radius, arm]
            for s in SCALES:
                cells += [f"{t['scales'][s]['mean']:.2f}", f"{t['scales'][s]['min']:.2f}"]
            rows.append([*cells, f"{t['changed']} of {num}"])
    return markdown_table(headers, rows)


def report(args: argparse.Namespace, result: dict, figure: Path | None) -> str:
    sides = result["sides"]
    n = sides[0]
    headers = ["reading", "samples"]
    for s in SCALES:
        headers += [f"{n * s}²↓ vs {n}²: mean (dB)", "median", "min"]
    headers.append(f"different seeds at {n}² (mean)")
    table, class_table = [], []
    for arm, values in result["arms"].items():
        for name, r in values["rows"].items():
            cells = [_arm_name(arm, result), name]
            for s in SCALES:
                v = r["same"][s]
                cells += [f"{v.mean():.2f}", f"{v.median():.2f}", f"{v.min():.2f}"]
            table.append([*cells, f"{r['other'].mean():.2f}"])
        changed = values["changed"]
        either = changed_anywhere(values)
        same = values["rows"]["mollified"]["same"]
        psnrs = " / ".join(f"{same[s][changed[s]].median():.1f}" if bool(changed[s].any())
                           else "–" for s in SCALES)
        floor = " / ".join(f"{int(values['floor'][s].sum())}" for s in SCALES)
        class_table.append([_arm_name(arm, result),
                            *[f"{int(changed[s].sum())} of {args.num}" for s in SCALES],
                            f"{int(either.sum())} of {args.num}", psnrs, floor,
                            f"{len(set(values['classes'][n].tolist()))}"])
    c = result["classifier"]
    lines = [f"## Resolution consistency: the same seeds at {', '.join(f'{s}²' for s in sides)}",
             "", markdown_table(headers, table), "",
             "Seeds whose class changes (argmax of the classifier), and the median PSNR of "
             "those seeds at " + " / ".join(f"{n * s}²↓" for s in SCALES) + " (mollified; the "
             "figure's last rows show these seeds, the lowest resolution above the highest "
             "pooled to it):", "",
             markdown_table(["reading", *[f"{n}² vs {n * s}²↓" for s in SCALES],
                             "either", "their PSNR, median (dB)",
                             "white noise of the same size: changes",
                             f"classes among the {n}² samples"], class_table), "",
             "White noise of the same size: seeds whose class changes when their "
             f"{n}² sample gets white noise of the root-mean-square of its difference to the "
             + " / ".join(f"{n * s}²↓" for s in SCALES) + " sample (one draw per seed): what "
             "differences of that size do to this classifier without any structure.", ""]
    if result["others"]:
        lines += [f"The same protocol on {len(result['others']) + 1} checkpoints side by side "
                  "(mollified samples; the first is the one above):", "",
                  side_by_side(result, args.num), ""]
    if figure is not None:
        lines += [f"![The same seeds at {', '.join(f'{s}²' for s in sides)}]"
                  f"(_static/figures/{figure.name})", ""]
    for arm, values in result["arms"].items():
        t = targets(values)
        dbs = "; ".join(f"{n}² vs {n * s}²↓ mean {p['mean']:.2f} dB, min {p['min']:.2f} dB"
                        for s, p in t["scales"].items())
        lines.append(f"- Target (issue 12: mean ≥ {TARGET_MEAN:g} dB and min ≥ "
                     f"{TARGET_MIN:g} dB at both scales, mollified samples; no seed changing "
                     f"class), {_arm_name(arm, result)}: {dbs}; {t['changed']} of {args.num} "
                     f"seeds change class: {_status(t['met'])}.")
    rate = result["rate"]
    trained = f"trained at {result['trained']}²" + (f", rate {rate:g}" if rate else "")
    lines += [
        f"- Model: {result['source']}, {result['params'] / 1e6:.2f} M parameters, {trained}. "
        f"{args.num} seeds: DDIM η = 0, {args.steps} steps, "
        "`pyg_infdiff.diffusion.sample(shape=..., context=...)` in batches of "
        f"{args.batch} (batch b seeded {args.seed} + b at every resolution and in both "
        "readings, so each sample starts from the same mollified noise field). \"Plain "
        "lattices\": the model reads the lattice (`examples/sample.py --context none`); "
        "\"training context\": every lattice read through `Pretrained.context_for(side²)` "
        "(`--context auto`), drawn after the initial field. The higher resolutions are "
        "average-pooled to the lowest; PSNR with peak-to-peak 2 (images in [-1, 1]), per "
        "seed, then mean/median/min over seeds. \"Different seeds\": sample i against sample "
        "i+1 at the lowest resolution. \"Deblurred\": every set Wiener-deblurred (inverse SNR "
        "0.05) on its own lattice before pooling.",
        f"- Classifier: a small CNN (2 convolutions, 2 linear layers) trained in the benchmark "
        f"on {c['train']:,} Fashion-MNIST training images mollified like the model's data, "
        f"{c['epochs']} epoch(s), {c['seconds']:.0f} s on one thread"
        f"{' (cached)' if c['cached'] else ''}; test accuracy {c['accuracy']:.1%} on the "
        "mollified test set. A seed changes class when the argmax of its pooled higher-"
        f"resolution sample differs from that of its {n}² sample (the mollified samples).",
        "- Sampling time for " + f"{args.num} samples: " + "; ".join(
            f"{arm}: " + ", ".join(f"{v['seconds'][s]:.0f} s at {s}²" for s in sides)
            for arm, v in result["arms"].items()) + ".",
    ]
    lines += report_footer(args, result)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file or run folder (required unless --smoke)")
    p.add_argument("--compare", nargs="*", default=[], metavar="CHECKPOINT",
                   help="other checkpoints (files or run folders, trained at the same "
                        "resolution) measured in the same protocol and reported beside "
                        "--checkpoint, whose results the goals row reads")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="the lowest resolution (default: the checkpoint's training resolution)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="plain lattices and/or the training context")
    p.add_argument("--num", type=positive_int, default=64, help="seeds (samples per resolution)")
    p.add_argument("--batch", type=positive_int, default=16, help="samples per sampling call")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT,
                   help="folder of the classifier's cached weights")
    add_device_arg(p)
    add_threads_arg(p)
    add_publish_args(p, "4 seeds, 2 steps, a classifier of 2,000 images; an untrained tiny "
                     "model without --checkpoint", figures=FIGURES)
    args = p.parse_args(argv)
    if args.smoke:
        args.num, args.batch, args.steps = 4, 4, 2
    elif args.checkpoint is None:
        p.error("--checkpoint is required (or --smoke)")
    if args.compare and args.checkpoint is None:
        p.error("--compare needs --checkpoint")
    args.arms = list(dict.fromkeys(args.arms))
    return args


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    r"""The first 8 seeds of each arm: the lowest resolution, the higher ones pooled to it, and
    the highest as sampled; then up to 8 seeds of each arm whose class changes, at the lowest
    resolution and the highest pooled to it."""
    sides = result["sides"]
    n, top = sides[0], sides[-1]
    rows = []
    for arm, values in result["arms"].items():
        s = values["samples"]
        rows.append((f"{arm} {n}x{n}", s[n][:8]))
        rows += [(f"{arm} {m}x{m} pooled", F.avg_pool2d(s[m][:8], m // n)) for m in sides[1:]]
        rows.append((f"{arm} {top}x{top}", s[top][:8]))
    for arm, values in result["arms"].items():  # the seeds whose class changes, if any
        seeds = changed_anywhere(values).nonzero().flatten()[:8]
        if seeds.numel():
            s = values["samples"]
            rows.append((f"{arm} changed {n}x{n}", s[n][seeds]))
            rows.append((f"{arm} changed {top}x{top} pooled",
                         F.avg_pool2d(s[top][seeds], top // n)))
    return compact_figure(save_rows(rows, args.figures / "bench_consistency.png"))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = bench_main(__file__, "consistency", lambda _: args, run, report, argv,
                        figure=draw_figure)
    if args.write:
        row = goal_row(result, args.num)
        if write_goal_row(GOAL_ROW, row, args.doc):
            print(f"updated the goals row of {args.doc}:\n{row}")
        else:
            print(f"{args.doc} has no row starting with {GOAL_ROW!r}: goals not updated")
    return result


if __name__ == "__main__":
    main()
