r"""Trains the dense baseline (``diffusers`` UNet2DModel + DDPM) on Fashion-MNIST 28² for a
wall-clock budget, then samples with 100-step DDIM and saves the samples as a tensor file.

The settings are those of the ``diffusers`` example ``train_unconditional.py`` (its documented
defaults): batch 16, AdamW with learning rate 1e-4, betas (0.95, 0.999), weight decay 1e-6,
eps 1e-8, 500 linear warm-up steps then cosine decay (to zero at the end of the budget: the
budget is time, so the cosine runs over the fraction of the budget used rather than over a step
count), gradient norm clipped to 1, EMA with warm-up (inverse gamma 1, power 3/4, at most
0.9999), a 1000-step linear DDPM schedule with epsilon prediction; no augmentation. On this
2-core CPU, batch 16 also has the highest throughput (images per second fall with larger
batches). The model is :func:`baseline_ddpm.build_dense_unet` at ``--target-params``.

Outputs, in ``bench/_out/dense_ddpm_28/`` (or ``--out``):

* ``unet_ema/``: the EMA weights (``save_pretrained``: ``config.json`` + safetensors);
* ``samples.pt``: a float32 tensor ``[N, 1, 28, 28]`` in :math:`[-1, 1]` (EMA weights, DDIM
  with :math:`\eta = 0`), for ``python -m pyg_infdiff.metrics --real fashion-mnist --fake ...``;
* ``samples.png``: the first 64 samples as a grid;
* ``run.json``: configuration, parameter count, steps, images seen, losses, timings, machine.

Run: ``python bench/train_dense_ddpm.py --minutes 25`` (the quality benchmark), or
``python bench/train_dense_ddpm.py --smoke`` (1 minute, 16 samples) to check it end to end.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, machine_description
from baseline_ddpm import (
    build_dense_unet,
    count_parameters,
    dense_sample,
    dense_train_step,
    make_scheduler,
)
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel
from PIL import Image

from pyg_infdiff.data import FashionMNIST

RESOLUTION = 28


def lr_factor(step: int, elapsed: float, budget: float, warmup: int) -> float:
    r"""Linear warm-up over :obj:`warmup` steps, then cosine decay over the time budget."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed / budget)))


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    r"""Writes images ``[N, 1, H, W]`` in :math:`[-1, 1]` as one PNG grid."""
    images = images[: columns * columns]
    rows = math.ceil(images.size(0) / columns)
    h, w = images.shape[-2:]
    grid = torch.zeros(rows * h, columns * w)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image[0]
    pixels = ((grid + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(path)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)  # diffusers initialises the weights from the global RNG
    gen = torch.Generator().manual_seed(args.seed)
    images = FashionMNIST(train=True).images  # uint8 [60000, 28, 28]
    model = build_dense_unet(RESOLUTION, 1, args.target_params)
    scheduler = make_scheduler("ddpm")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8
    )
    ema = EMAModel(
        model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75,
        model_cls=UNet2DModel, model_config=model.config,
    )
    budget = 60.0 * args.minutes
    print(f"dense DDPM, {count_parameters(model):,} parameters, {args.minutes} min budget, "
          f"batch {args.batch_size}", flush=True)
    order, cursor, step, losses, log = torch.randperm(len(images), generator=gen), 0, 0, [], []
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        batch = images[order[cursor:cursor + args.batch_size]]
        cursor += args.batch_size
        x0 = (batch.float() / 127.5 - 1.0).unsqueeze(1)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, elapsed, budget, args.warmup_steps)
        losses.append(dense_train_step(model, scheduler, x0, optimizer, generator=gen))
        ema.step(model.parameters())
        step += 1
        if step % args.log_every == 0:
            mean = sum(losses[-args.log_every:]) / args.log_every
            log.append({"step": step, "seconds": round(elapsed, 1), "loss": mean})
            print(f"step {step:6d}  {elapsed:7.1f} s  loss {mean:.4f}  "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
    train_seconds = time.perf_counter() - start

    ema.copy_to(model.parameters())
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out / "unet_ema")
    start = time.perf_counter()
    samples = dense_sample(
        model, make_scheduler("ddim"), args.num_samples, RESOLUTION, args.sample_steps,
        torch.Generator().manual_seed(args.seed + 1), batch_size=args.sample_batch_size,
    )
    sample_seconds = time.perf_counter() - start
    torch.save(samples, args.out / "samples.pt")
    save_grid(samples, args.out / "samples.png")
    return {
        "model_config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": count_parameters(model),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": step,
        "images_seen": step * args.batch_size,
        "train_seconds": round(train_seconds, 1),
        "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:])),
        "sample_seconds": round(sample_seconds, 1),
        "sample_seconds_per_image": sample_seconds / args.num_samples,
        "samples": str(args.out / "samples.pt"),
        "loss_log": log,
        "machine": machine_description(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="training wall-clock budget")
    parser.add_argument("--smoke", action="store_true",
                        help="1-minute run, 16 samples (overrides --minutes/--num-samples)")
    parser.add_argument("--target-params", type=int, default=1_100_000,
                        help="parameter count of the UNet (the library's 28² preset: 1302209)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--sample-steps", type=int, default=100, help="DDIM steps")
    parser.add_argument("--sample-batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; 1 is far steadier on a loaded, shared machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "_out" / "dense_ddpm_28")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.num_samples = 1.0, 16
        args.out = args.out.with_name(args.out.name + "_smoke")
    if args.minutes <= 0 or args.batch_size < 1 or args.num_samples < 1:
        parser.error("--minutes, --batch-size and --num-samples must be positive")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = train(args)
    (args.out / "run.json").write_text(json.dumps(result, indent=2))
    print(f"{result['steps']} steps ({result['images_seen']:,} images) in "
          f"{result['train_seconds']} s; {args.num_samples} samples in "
          f"{result['sample_seconds']} s -> {result['samples']}")


if __name__ == "__main__":
    main()
