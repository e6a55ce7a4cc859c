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
* ``run.json``: configuration, parameter count, steps, images seen, losses, timings, machine;
* ``train.json``: the training part of it (:func:`train_dense`; an interrupted run resumes
  from ``state.pt``, saved every 2 minutes).

:class:`DenseRecipe` and :func:`train_dense` are the parts ``bench/dense_tuning.py`` trains the
tuned baseline with (other learning rate and batch, the library's EMA, CPU-time budget).

Run: ``python bench/train_dense_ddpm.py --minutes 25`` (the quality benchmark), or
``python bench/train_dense_ddpm.py --smoke`` (1 minute, 16 samples) to check it end to end.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from _args import positive_float, positive_int
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
from torch import Tensor

from pyg_infdiff.data import FashionMNIST
from pyg_infdiff.training import create_ema, update_ema

RESOLUTION = 28


@dataclass
class DenseRecipe:
    r"""How the dense baseline trains. The defaults are the documented settings of the
    ``diffusers`` example ``train_unconditional.py``; ``bench/dense_tuning.py`` probes
    :obj:`lr` and :obj:`batch_size` and trains with the library's EMA (:obj:`ema` ``"warmup"``).

    :obj:`schedule` ``"cosine"``: linear warm-up over :obj:`warmup` steps, then cosine decay to
    zero at the end of the time budget (over the fraction of the budget used, as the budget is
    time, not steps); ``"constant"``: the warm-up, then constant. :obj:`ema` ``"diffusers"``:
    ``EMAModel`` with warm-up (inverse gamma 1, power 3/4, at most :obj:`ema_decay`);
    ``"warmup"``: :func:`pyg_infdiff.training.create_ema`, decay
    :math:`\min(\beta, (1 + n) / (10 + n))` with :math:`\beta` = :obj:`ema_decay`, as every
    ∞-Diff arm trains.
    """

    batch_size: int = 16
    lr: float = 1e-4
    warmup: int = 500
    schedule: str = "cosine"
    ema: str = "diffusers"
    ema_decay: float = 0.9999
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"'schedule' must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.ema not in ("diffusers", "warmup"):
            raise ValueError(f"'ema' must be 'diffusers' or 'warmup', got {self.ema!r}")
        if self.batch_size < 1 or self.lr <= 0 or self.warmup < 1:
            raise ValueError(f"batch_size, lr and warmup must be positive, got {self}")


def lr_factor(step: int, elapsed: float, budget: float, warmup: int,
              schedule: str = "cosine") -> float:
    r"""Linear warm-up over :obj:`warmup` steps, then cosine decay over the time budget
    (:obj:`schedule` ``"cosine"``) or constant (``"constant"``)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed / budget)))


class _Average:
    r"""The EMA of a :class:`DenseRecipe`: ``step(model)``, ``model(like)`` (a copy of
    :obj:`like` holding the averaged weights) and a state dict."""

    def __init__(self, model: UNet2DModel, recipe: DenseRecipe) -> None:
        self.kind, self.updates = recipe.ema, 0
        if self.kind == "diffusers":
            self.ema = EMAModel(model.parameters(), decay=recipe.ema_decay, use_ema_warmup=True,
                                inv_gamma=1.0, power=0.75, model_cls=UNet2DModel,
                                model_config=model.config)
        else:
            self.ema = create_ema(model, recipe.ema_decay, warmup=True)

    def step(self, model: UNet2DModel) -> None:
        self.updates += 1
        if self.kind == "diffusers":
            self.ema.step(model.parameters())
        else:
            update_ema(self.ema, model, self.updates)

    def model(self, like: UNet2DModel) -> UNet2DModel:
        averaged = copy.deepcopy(like)
        if self.kind == "diffusers":
            self.ema.copy_to(averaged.parameters())
        else:
            averaged.load_state_dict(self.ema.module.state_dict())
        return averaged.eval()

    def state_dict(self) -> dict:
        return {"updates": self.updates, "ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.ema.load_state_dict(state["ema"])


def train_dense(out: Path, recipe: DenseRecipe, minutes: float, *,
                target_params: int = 1_100_000, seed: int = 0, clock: str = "wall",
                log_every: int = 50, save_minutes: float = 2.0, images: Tensor | None = None,
                snapshot_minutes: Sequence[float] = ()) -> tuple[UNet2DModel, dict]:
    r"""Trains the dense baseline on Fashion-MNIST 28² (or on :obj:`images`; epsilon-prediction
    DDPM, 1000-step linear schedule, AdamW with betas (0.95, 0.999), weight decay 1e-6, eps
    1e-8, no augmentation) for a time budget, resumably.

    :obj:`images` (float ``[N, C, H, W]`` in :math:`[-1, 1]`, e.g. renders of the built-in
    shapes) replaces the Fashion-MNIST training set; the model gets their side and channels.
    At each of :obj:`snapshot_minutes` (of the budget, in its clock) the EMA weights so far
    go to ``out/snapshots/<minutes>min/`` and the result's ``snapshots`` lists
    ``{"minutes", "steps", "seconds", "path"}``: the model at several points of one run.

    Every :obj:`save_minutes` of the budget the state (weights, optimiser, EMA, data order,
    random state, time spent) goes to ``out/state.pt``, and a rerun continues from it; once the
    budget is spent, ``out/unet_ema/`` (``save_pretrained``) and ``out/train.json`` hold the
    result and a rerun with the same budget only loads them. :obj:`clock` ``"wall"`` counts
    wall-clock time, ``"cpu"`` this process's CPU time (:func:`time.process_time`).

    Returns:
        tuple: The EMA model (eval mode) and the result: ``parameters``, ``steps``,
        ``images_seen``, ``train_seconds``, ``final_loss``, ``loss_log``, ``recipe``,
        ``machine``.
    """
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    if clock not in clocks:
        raise ValueError(f"'clock' must be 'wall' or 'cpu', got {clock!r}")
    if minutes <= 0:
        raise ValueError(f"'minutes' must be positive, got {minutes}")
    done_path, state_path = out / "train.json", out / "state.pt"
    budget = 60.0 * minutes
    if done_path.exists():
        done = json.loads(done_path.read_text())
        if done["budget_seconds"] == budget and done["recipe"] == asdict(recipe):
            return UNet2DModel.from_pretrained(out / "unet_ema").eval(), done
        raise ValueError(f"{out} holds a finished run of another budget or recipe: use another "
                         "folder")
    torch.manual_seed(seed)  # diffusers initialises the weights from the global RNG
    gen = torch.Generator().manual_seed(seed)
    if images is None:  # uint8 [60000, 28, 28] -> float [60000, 1, 28, 28] in [-1, 1]
        images = FashionMNIST(train=True).images.float().div(127.5).sub(1.0).unsqueeze(1)
    if images.dim() != 4 or images.size(-1) != images.size(-2):
        raise ValueError(f"'images' must be [N, C, H, H], got {tuple(images.shape)}")
    model = build_dense_unet(images.size(-1), images.size(1), target_params)
    scheduler = make_scheduler("ddpm")
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.95, 0.999),
                                  weight_decay=1e-6, eps=1e-8)
    average = _Average(model, recipe)
    order, cursor, step, spent, losses, log = torch.randperm(len(images), generator=gen), 0, 0, \
        0.0, [], []
    pending, snapshots = sorted(float(m) for m in snapshot_minutes), []
    if pending and not 0 < pending[0] <= pending[-1] <= minutes:
        raise ValueError(f"'snapshot_minutes' must lie in (0, {minutes}], got {pending}")
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["recipe"] != asdict(recipe) or state["budget_seconds"] != budget:
            raise ValueError(f"{state_path} is a run of another budget or recipe: use another "
                             "folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        average.load_state_dict(state["average"])
        gen.set_state(state["generator"])
        order, cursor, step, spent = state["order"], state["cursor"], state["step"], \
            state["spent"]
        losses, log = state["losses"], state["log"]
        snapshots = state.get("snapshots", [])
        pending = pending[len(snapshots):]
        print(f"dense: resumed at step {step}, {spent / 60:.1f} min spent", flush=True)
    out.mkdir(parents=True, exist_ok=True)

    def save_state(elapsed: float) -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "average": average.state_dict(), "generator": gen.get_state(),
                 "order": order, "cursor": cursor, "step": step, "spent": elapsed,
                 "losses": losses[-log_every:], "log": log, "recipe": asdict(recipe),
                 "budget_seconds": budget, "snapshots": snapshots}
        torch.save(state, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)

    print(f"dense DDPM, {count_parameters(model):,} parameters, {minutes:g} min budget "
          f"({clock} clock), batch {recipe.batch_size}, lr {recipe.lr:g} -> {out}", flush=True)
    now = clocks[clock]
    start = now() - spent
    last_save = spent
    while (elapsed := now() - start) < budget:
        if cursor + recipe.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        batch = images[order[cursor:cursor + recipe.batch_size]]
        cursor += recipe.batch_size
        x0 = batch.float()
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * lr_factor(step, elapsed, budget, recipe.warmup,
                                                recipe.schedule)
        losses.append(dense_train_step(model, scheduler, x0, optimizer, generator=gen,
                                       grad_clip=recipe.grad_clip))
        average.step(model)
        step += 1
        if step % log_every == 0:
            mean = sum(losses[-log_every:]) / log_every
            log.append({"step": step, "seconds": round(elapsed, 1), "loss": mean})
            losses = losses[-log_every:]
            print(f"step {step:6d}  {elapsed:7.1f} s  loss {mean:.4f}  "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
        if pending and elapsed >= 60.0 * pending[0]:
            minute = pending.pop(0)
            folder = out / "snapshots" / f"{minute:g}min"
            average.model(model).save_pretrained(folder)
            snapshots.append({"minutes": minute, "steps": step, "seconds": round(elapsed, 1),
                              "path": str(folder)})
        if elapsed - last_save >= 60.0 * save_minutes:
            save_state(elapsed)
            last_save = elapsed
    ema_model = average.model(model)
    ema_model.save_pretrained(out / "unet_ema")
    for minute in pending:  # due at the very end of the budget: the final weights
        folder = out / "snapshots" / f"{minute:g}min"
        ema_model.save_pretrained(folder)
        snapshots.append({"minutes": minute, "steps": step, "seconds": round(elapsed, 1),
                          "path": str(folder)})
    result = {
        "model_config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": count_parameters(model),
        "steps": step,
        "images_seen": step * recipe.batch_size,
        "train_seconds": round(elapsed, 1),
        "budget_seconds": budget,
        "clock": clock,
        "final_loss": sum(losses[-log_every:]) / max(1, len(losses[-log_every:])),
        "loss_log": log,
        "snapshots": snapshots,
        "recipe": asdict(recipe),
        "machine": machine_description(),
    }
    done_path.write_text(json.dumps(result, indent=2))
    state_path.unlink(missing_ok=True)
    return ema_model, json.loads(done_path.read_text())  # as a rerun reads it


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=positive_float, default=25.0,
                        help="training wall-clock budget")
    parser.add_argument("--smoke", action="store_true",
                        help="1-minute run, 16 samples (overrides --minutes/--num-samples)")
    parser.add_argument("--target-params", type=positive_int, default=1_100_000,
                        help="parameter count of the UNet (the library's 28² preset: 1302209)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--lr", type=positive_float, default=1e-4)
    parser.add_argument("--warmup-steps", type=positive_int, default=500)
    parser.add_argument("--num-samples", type=positive_int, default=1000)
    parser.add_argument("--sample-steps", type=positive_int, default=100, help="DDIM steps")
    parser.add_argument("--sample-batch-size", type=positive_int, default=50)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads; 1 is far steadier on a loaded, shared machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=positive_int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "_out" / "dense_ddpm_28")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.num_samples = 1.0, 16
        args.out = args.out.with_name(args.out.name + "_smoke")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    recipe = DenseRecipe(batch_size=args.batch_size, lr=args.lr, warmup=args.warmup_steps)
    model, result = train_dense(args.out, recipe, args.minutes,
                                target_params=args.target_params, seed=args.seed,
                                log_every=args.log_every)
    start = time.perf_counter()
    samples = dense_sample(
        model, make_scheduler("ddim"), args.num_samples, RESOLUTION, args.sample_steps,
        torch.Generator().manual_seed(args.seed + 1), batch_size=args.sample_batch_size,
    )
    sample_seconds = time.perf_counter() - start
    torch.save(samples, args.out / "samples.pt")
    save_grid(samples, args.out / "samples.png")
    result.update({
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sample_seconds": round(sample_seconds, 1),
        "sample_seconds_per_image": sample_seconds / args.num_samples,
        "samples": str(args.out / "samples.pt"),
    })
    (args.out / "run.json").write_text(json.dumps(result, indent=2))
    print(f"{result['steps']} steps ({result['images_seen']:,} images) in "
          f"{result['train_seconds']} s; {args.num_samples} samples in "
          f"{result['sample_seconds']} s -> {result['samples']}")


if __name__ == "__main__":
    main()
