r"""∞-Diff's main job on the built-in continuous images, on a CPU, in one command.

Trains a small multiscale operator U-Net on :class:`pyg_infdiff.data.ContinuousShapes`
rendered at 128² with 16× subsampling: each training graph holds 1,024 random pixels of a
128² image, as many nodes as a 32² image has pixels, with the detail of 128² (the shapes of
``ShapesConfig.demo()``: one to three large flat shapes in five colours on a light grey
background). The kernel radius is 2.5 pixels of 32² (--radius-px), about 20 training nodes per
ball, rather than preset 32's 3.57 pixels, which would hold 40.
Then it samples the *same* noise seeds at 32², 64² and 128², each read through a context of
1,024 random pixels (the model's training density, pyg_infdiff.diffusion.ContextNodes), so
that every column is one function at three resolutions, and puts them above ground-truth
renders of dataset items at the same resolutions. The sampler is DDIM with eta = 1 (--eta):
every fresh noise is a whole mollified field, so the context follows one chain at every
resolution, and each pixel finishes with less of its own starting noise than with eta = 0,
whose 128² samples have ragged, speckled edges (bench/context_until.py --etas measures both).

    python examples/shapes_demo.py                 # ~10 min of training, ~13 min in all
    python examples/shapes_demo.py --minutes 3     # quicker, blurrier
    python examples/shapes_demo.py --smoke         # a few steps: checks that it runs
    python examples/shapes_demo.py --data-resolution 32 --subsample 4 --shapes full \
        --context none                             # the earlier demo: a quarter of 32x32

Writes into --out (default runs/shapes_demo): samples.png (the picture), samples.pt (the raw
sample tensors), loss.png, log.jsonl / log.csv and checkpoints/ckpt_<step>.pt, which
examples/sample.py and examples/inpaint.py read. A second Ctrl-C aborts; the first one stops
training, keeps a checkpoint and still draws the picture.

The model predicts the clean mollified image (--parametrization x0): in a budget of minutes on
a CPU (a few hundred to a few thousand steps, depending on the machine's load) this gives
smooth samples, while predicting the mollified noise (the paper's choice, the library's default
and that of examples/celebahq_train.py) still leaves speckles that only longer training removes.
Its loss weighs each step by Min-SNR-5 (--snr-gamma; 0 gives the paper's uniform weights): with
uniform weights an x0 model learns the near-clean steps, where the edges of a sample are
decided, last, and returns blurred images even from almost clean inputs (bench/loss_weighting.py
measures both at equal training time).
"""
import argparse
import os
import shutil
import time
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyg_infdiff.data import (
    SHAPES_NAMES,
    ContinuousShapes,
    GraphCollator,
    MollifiedCache,
    ShapesConfig,
    make_loader,
)
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import LatticeSubset, MollifiedDiffusion
from pyg_infdiff.graph import subsample_size
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise
from pyg_infdiff.training import LR_SCHEDULES, Trainer, TrainerConfig, diffusion_to_dict
from pyg_infdiff.training.allocator import keep_freed_memory
from pyg_infdiff.training.callbacks import SampleGrid


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train a small ∞-Diff model on 1,024 random pixels of 128x128 renders of "
        "the built-in continuous shapes on the CPU, then sample the same seeds at 32x32, 64x64 "
        "and 128x128 next to ground-truth renders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="runs/shapes_demo",
                   help="run folder; the files of a previous demo run in it are replaced")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="training time budget in minutes (sampling comes on top: about 2-3 min "
                   "on 2 cores)")
    p.add_argument("--steps", type=int, default=None,
                   help="train exactly this many steps instead of for --minutes")
    p.add_argument("--batch-size", type=int, default=16, help="images per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                   help="after 100 warm-up steps: constant, or a decay to 0 that ends with the "
                   "budget (--steps, or the steps --minutes is estimated to allow as it runs)")
    p.add_argument("--subsample", type=float, default=16.0,
                   help="keep 1/rate of each image's pixels as graph nodes during training")
    p.add_argument("--sigma", type=float, default=None,
                   help="mollifier width in domain units (default: half a pixel of "
                   "--data-resolution, 1/256)")
    p.add_argument("--noise-sigma", type=float, default=None,
                   help="width of the noise's mollifier in domain units (default: --sigma)")
    p.add_argument("--radius-px", type=float, default=2.5,
                   help="kernel radius of the operator blocks in pixels of 32x32: 2.5 holds about "
                   "20 of the 1,024 training nodes per ball; preset 32's 3.57 (chosen for full "
                   "32x32 lattices and rate 4) would hold 40, twice the edges per step")
    p.add_argument("--resolutions", default="32,64,128",
                   help="comma-separated sampling resolutions")
    p.add_argument("--data-resolution", type=int, default=128,
                   help="resolution of the training renders: 128 with --subsample 16 trains on "
                   "1,024 nodes of 128x128 renders, the pixels of a 32x32 image")
    p.add_argument("--shapes", choices=SHAPES_NAMES, default="demo",
                   help="demo: ShapesConfig.demo() (1-3 large flat shapes in 5 colours on a "
                   "light grey background); simple: ShapesConfig.simple() (the same shapes "
                   "in random colours on a random flat background: multicoloured blobs after "
                   "10 minutes); full: the default ShapesConfig (2-5 shapes, stripes, partial "
                   "opacity, smooth background)")
    p.add_argument("--context", choices=["auto", "none"], default="auto",
                   help="auto: read lattices with at least as many pixels as the training "
                   "graphs have nodes through a context of that many random training pixels "
                   "(the training density; pyg_infdiff.diffusion.ContextNodes); none: plain "
                   "lattices")
    p.add_argument("--cache-items", type=int, default=2048,
                   help="render and mollify this many items once and train on them "
                   "(MollifiedCache); 0 renders every item on the fly")
    p.add_argument("--checkpoint-every", type=int, default=250,
                   help="save a checkpoint every this many steps (and at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="keep the newest this many checkpoints; 0 keeps them all (to sample "
                   "the model at several points of its training)")
    p.add_argument("--num-samples", type=int, default=8, help="seeds sampled per resolution")
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--eta", type=float, default=1.0,
                   help="DDIM stochasticity: 1 as stochastic as DDPM (the cleaner edges at 128²), "
                   "0 deterministic")
    p.add_argument("--deblur", type=float, nargs="?", const=0.05, default=None,
                   help="Wiener-deblur the samples with this inverse SNR (flag alone: 0.05); "
                   "default: show the mollified samples")
    p.add_argument("--parametrization", choices=["mollified_eps", "x0", "v"], default="x0",
                   help="what the model predicts; after the few hundred to few thousand steps "
                   "of a CPU budget, x0 gives clean (if soft) samples where mollified_eps "
                   "(the paper's choice, better for long runs) still leaves speckles")
    p.add_argument("--snr-gamma", type=float, default=5.0,
                   help="weight each step's loss by Min-SNR-gamma (Hang et al., 2023): the x0 "
                   "model learns the near-clean steps, where edges are decided, sooner; "
                   "0: uniform weights, the ∞-Diff paper's loss")
    p.add_argument("--num-items", type=int, default=100_000,
                   help="dataset size (items are rendered on the fly, nothing is stored)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores, but 1 when other processes "
                   "already keep the cores busy: then more threads are many times slower)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and samples")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out instead of starting over")
    p.add_argument("--smoke", action="store_true",
                   help="a few tiny steps and a 2-step sampler: checks that everything runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps = args.steps or 3
        args.batch_size, args.num_samples, args.sample_steps = 4, 2, 2
        args.num_items = min(args.num_items, 64)
    args.resolutions = [int(r) for r in args.resolutions.split(",")]
    if args.checkpoint_every < 1:
        p.error(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.keep_checkpoints < 0:
        p.error(f"--keep-checkpoints must be >= 0 (0: all), got {args.keep_checkpoints}")
    if not args.eta >= 0:
        p.error(f"--eta must be >= 0, got {args.eta}")
    if not args.snr_gamma >= 0:
        p.error(f"--snr-gamma must be >= 0 (0: uniform weights), got {args.snr_gamma}")
    for name in ("sigma", "noise_sigma"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 < args.radius_px < 32:
        p.error(f"--radius-px must lie in (0, 32), got {args.radius_px}")
    if args.smoke:
        args.cache_items = min(args.cache_items, 8)
    if args.threads is None:
        cores = os.cpu_count() or 1
        busy = os.getloadavg()[0] >= cores if hasattr(os, "getloadavg") else False
        args.threads = 1 if busy else cores
        if busy and cores > 1:
            print(f"the {cores} cores are busy (load {os.getloadavg()[0]:.1f}): using 1 thread "
                  "(override with --threads)")
    return args


class TimeBudget:
    r"""Wraps the loss: shows a progress bar over the time budget (or the steps) and keeps
    ``trainer.config.max_steps`` at the step the time budget is expected to end with (the steps
    so far plus the remaining seconds at the mean rate so far; at least one more step while
    time is left), so that a decaying learning rate ends with the budget. Once the budget is
    spent, the current step is the last."""

    def __init__(self, loss_fn, seconds, steps):
        self.loss_fn, self.seconds, self.steps = loss_fn, seconds, steps
        self.trainer = self.start = self.bar = None
        self.first_step = 0

    def __call__(self, model, batch, **kwargs):
        now = time.perf_counter()
        if self.bar is None:
            self.start = now
            if self.steps is not None:
                self.bar = tqdm(total=self.steps, unit="step", desc="training",
                                dynamic_ncols=True)
            else:
                self.bar = tqdm(total=round(self.seconds), unit="s", desc="training",
                                dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
        loss = self.loss_fn(model, batch, **kwargs)
        step = self.trainer.step + 1  # the step this loss is for
        elapsed = now - self.start
        rate = (step - self.first_step) / elapsed if elapsed > 0 else 0.0
        if self.steps is None:
            self.bar.n = min(round(elapsed), self.bar.total)
            if elapsed >= self.seconds:
                self.trainer.config.max_steps = step
            elif rate > 0:
                self.trainer.config.max_steps = step + max(1, round((self.seconds - elapsed)
                                                                    * rate))
        else:
            self.bar.n = step - self.first_step
        self.bar.set_postfix_str(f"step {step}, loss {loss.item():.4f}, {rate:.2f} step/s")
        return loss

    def begin(self, trainer):
        self.trainer, self.first_step = trainer, trainer.step

    def close(self):
        if self.bar is not None:
            self.bar.close()


def main(argv=None):
    args = parse_args(argv)
    # Training and sampling steps allocate and free the same large activations; by default glibc
    # hands them back to the kernel and faults fresh zeroed pages in at the next step (issue 16:
    # as much system time as user time when sampling). Keep freed memory in the process instead.
    keep_freed_memory()
    torch.set_num_threads(max(1, args.threads))
    t_start = time.perf_counter()
    out = Path(args.out)
    if not args.resume:  # replace the files a previous demo wrote (and nothing else)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for name in ("log.jsonl", "log.csv", "loss.png", "samples.png", "samples.pt"):
            (out / name).unlink(missing_ok=True)
    res = args.data_resolution

    # Data: analytic images rendered at --data-resolution and mollified (half a pixel of that
    # resolution), once for --cache-items of them; the collator keeps a random 1/--subsample of
    # each image's pixels as graph nodes (with radius edges for the operator).
    shapes = ShapesConfig.named(args.shapes)
    dataset = ContinuousShapes(args.num_items, resolution=res, seed=args.seed, config=shapes)
    sigma = args.sigma if args.sigma is not None else 0.5 / res
    noise_sigma = args.noise_sigma if args.noise_sigma is not None else sigma
    diffusion = MollifiedDiffusion(MollifiedNoise(noise_sigma, 2),
                                   parametrization=args.parametrization,
                                   mollifier=GaussianMollifier(sigma),
                                   snr_gamma=args.snr_gamma or None)
    config = UNetConfig.preset(32, in_channels=3, out_channels=3, radius=args.radius_px / 32)
    mollifier, train_set = diffusion.mollifier, dataset
    if args.cache_items > 0:
        start = time.perf_counter()
        train_set = MollifiedCache(dataset, diffusion.mollifier,
                                   min(args.cache_items, len(dataset)))
        mollifier = None  # mollified once, in the cache
        print(f"rendered and mollified {len(train_set)} items at {res}x{res} once in "
              f"{time.perf_counter() - start:.0f} s")
    collator = GraphCollator(mollifier, rate=args.subsample, radius=config.radius)
    loader = make_loader(train_set, collator, args.batch_size, seed=args.seed, drop_last=True)
    nodes = LatticeSubset((res, res), subsample_size(res * res, rate=args.subsample))

    torch.manual_seed(args.seed)  # the initial weights: the same --seed gives the same model
    model = MultiscaleOperatorUNet(config)
    print(model.summary())
    model_config = {
        "unet": config.to_dict(),
        "diffusion": diffusion_to_dict(diffusion),
        "data": {"dataset": "shapes", "resolution": res, "channels": 3,
                 "subsample": args.subsample, "seed": args.seed, "shapes": args.shapes},
    }
    trainer_config = TrainerConfig(
        lr=args.lr, warmup_steps=min(100, args.steps or 100), lr_schedule=args.lr_schedule,
        grad_clip=1.0,
        max_steps=args.steps or 10**9, ema_decay=0.995, ema_start=100, log_every=10,
        sample_every=0, checkpoint_every=args.checkpoint_every,
        keep_last=args.keep_checkpoints or None, out_dir=str(out), seed=args.seed,
        device="cpu", progress=False, verbose=False,
    )
    budget = TimeBudget(partial(diffusion.training_loss), args.minutes * 60, args.steps)
    trainer = Trainer(model, budget, trainer_config, model_config=model_config,
                      pass_generator=True)
    budget.begin(trainer)
    if args.resume:
        trainer.resume("latest")
        budget.begin(trainer)
        if args.steps is not None:
            trainer.config.max_steps = trainer.step + args.steps
    print(f"training on {nodes.num:,} nodes of {res}x{res} renders ({args.shapes} shapes, "
          f"{args.subsample:g}x subsampling) on {args.threads} thread(s), batch "
          f"{args.batch_size}, mollifier sigma {sigma:.4f}; "
          + (f"{args.steps} steps" if args.steps else f"{args.minutes:g} min budget"))
    try:
        result = trainer.fit(loader)
        checkpoint = result.checkpoint
    except KeyboardInterrupt:
        checkpoint = trainer.checkpoints.latest()
        print(f"\ninterrupted at step {trainer.step}: sampling from what was learnt so far")
    finally:
        budget.close()
    t_train = time.perf_counter() - t_start

    # Sampling: the same noise seeds at every resolution (DDIM, --eta), with the EMA
    # weights; then ground-truth renders of dataset items at the same resolutions.
    # Lattices with at least as many pixels as the training graphs had nodes are read through
    # that many random training pixels: the model sees its training density at every resolution,
    # and the same seed gives the same function at every resolution (ContextNodes).
    grid = SampleGrid(diffusion, 3, args.resolutions, args.num_samples,
                      steps=args.sample_steps, eta=args.eta, seed=args.seed,
                      deblur=args.deblur, context=nodes if args.context == "auto" else None)
    ema = trainer.ema.module if trainer.ema is not None else trainer.model
    ema.eval()
    rows = []
    for r in tqdm(args.resolutions, desc="sampling", unit="res"):
        images = grid.draw(ema, r)
        rows.append((f"sample {r}x{r}", images))
    truth = [(f"data {r}x{r}",
              torch.stack([dataset.render(i, r) for i in range(args.num_samples)]))
             for r in args.resolutions]
    picture = save_rows(rows + truth, out / "samples.png")
    torch.save({label: images for label, images in rows}, out / "samples.pt")
    t_total = time.perf_counter() - t_start

    seconds = ", ".join(f"{h}x{w}: {s:.0f} s" for (h, w), s in grid.seconds.items())
    print(f"\ntrained {trainer.step} steps in {t_train / 60:.1f} min; sampled ({seconds}); "
          f"total {t_total / 60:.1f} min")
    sizes = "/".join(str(r) for r in args.resolutions)
    print(f"samples (rows: {sizes} samples, then data): {picture.resolve()}")
    print(f"loss curve: {(out / 'loss.png').resolve()}")
    print(f"checkpoint: {Path(checkpoint).resolve() if checkpoint else None}")
    print(f"more samples at any resolution: python examples/sample.py --checkpoint {checkpoint} "
          f"--resolution 256")


if __name__ == "__main__":
    main()
