r"""Reconstruct images at any resolution with a trained diffusion autoencoder (the first stage of
the two-stage model, trained by examples/celebahq_train.py --autoencoder).

Each image is encoded from a random --fraction of its pixels, then decoded by DDIM at several
resolutions with the same noise seed. The PNG has one row per picture kind: the original, the
observed pixels (missing ones black), the reconstruction at each resolution, and bicubic
upsampling of the original to the largest one:

    python examples/reconstruct.py --checkpoint runs/fashion-mnist28 --fraction 0.25
    python examples/reconstruct.py --checkpoint runs/fashion-mnist28 --fraction 0.1 \
        --resolutions 28,56,112 --num 8 --deblur
    python examples/reconstruct.py --checkpoint runs/fashion-mnist28 --fraction 0.25 \
        --keep-pixels --guidance 3 --draws 4

z alone carries the layout, not the pixels. --keep-pixels also keeps the observed pixels at the
training resolution (whose pixels they are): inpainting by replacement (sample(...,
observation=)), pulled towards them through the denoiser's gradient given --guidance (DPS,
sample(..., guidance=)) and with RePaint resampling given --resample; --draws averages decodings
from independent noise, an estimate of the posterior mean (what PSNR rewards, blurrier than one
decoding). bench/autoencoder.py measures each against interpolation of the same pixels.

Writes the PNG and the tensors (.pt: images in [-1, 1]).
"""
import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyg_infdiff.data import GraphCollator, held_out_images
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import Observation, reconstruct
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import DiffusionAutoencoder
from pyg_infdiff.training import load_pretrained
from pyg_infdiff.training.allocator import keep_freed_memory


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a stage-1 checkpoint file, or its run folder (the newest checkpoint)")
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist", "shapes", "folder"],
                   default=None, help="where the images come from (default: the run's dataset; "
                   "fashion-mnist: its test split; shapes: items the run did not train on)")
    p.add_argument("--data-dir", default=None, help="the folder for --dataset folder (or the "
                   "digit files, as in examples/celebahq_train.py)")
    p.add_argument("--num", type=int, default=8, help="number of images")
    p.add_argument("--fraction", type=float, default=0.25,
                   help="fraction of each image's pixels the encoder reads (1: all)")
    p.add_argument("--resolutions", default=None,
                   help="comma-separated lattice sides to decode at (default: 1x, 2x and 4x "
                   "the training resolution)")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--keep-pixels", action="store_true",
                   help="keep the observed pixels in the decodings at the training resolution "
                   "(inpainting by replacement)")
    p.add_argument("--resample", type=int, default=1,
                   help="with --keep-pixels: RePaint passes over each segment of --jump-length "
                   "steps (1: none)")
    p.add_argument("--jump-length", type=int, default=2, help="RePaint's segment, in steps")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="with --keep-pixels: step size of the guidance towards them through the "
                   "denoiser's gradient (0: none; one backward pass per step)")
    p.add_argument("--eta", type=float, default=None,
                   help="DDIM stochasticity (default: 0, or 1 with --resample, as RePaint)")
    p.add_argument("--draws", type=int, default=1,
                   help="average this many decodings from independent noise (the posterior "
                   "mean: higher PSNR, softer)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the observed pixels and of the decoding noise")
    p.add_argument("--deblur", type=float, nargs="?", const=0.05, default=None,
                   help="undo the mollifier with a Wiener filter of this inverse SNR "
                   "(flag alone: 0.05)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema",
                   help="the EMA weights or the raw trained weights")
    p.add_argument("--out", default=None,
                   help="output PNG (default: <run>/samples/reconstruct_<percent>.png)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    if not 0 < args.fraction <= 1:
        p.error(f"--fraction must lie in (0, 1], got {args.fraction}")
    if min(args.num, args.steps, args.resample, args.jump_length, args.draws) < 1:
        p.error("--num, --steps, --resample, --jump-length and --draws must be positive")
    if args.resample > 1 and not args.keep_pixels:
        p.error("--resample (RePaint) needs --keep-pixels: it resamples around known pixels")
    if not args.guidance >= 0 or (args.guidance > 0 and not args.keep_pixels):
        p.error(f"--guidance must be >= 0 and needs --keep-pixels, got {args.guidance}")
    if args.resample > 1 and args.jump_length >= args.steps:
        p.error(f"--jump-length ({args.jump_length}) must be below --steps ({args.steps})")
    if args.eta is not None and args.eta < 0:
        p.error(f"--eta must be >= 0, got {args.eta}")
    if args.eta is None:
        args.eta = 1.0 if args.resample > 1 else 0.0
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        p.error(f"--out must name a .png file, got {args.out!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()  # decoding allocates and frees the same activations at every step
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        run = load_pretrained(args.checkpoint, weights=args.weights, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    if not isinstance(run.model, DiffusionAutoencoder):
        raise SystemExit(f"{run.path} is not a diffusion autoencoder: train one with "
                         "examples/celebahq_train.py --autoencoder")
    data = run.info.get("data", {})
    res = run.resolution or 28
    sides = ([int(r) for r in args.resolutions.split(",")] if args.resolutions
             else [res, 2 * res, 4 * res])
    try:  # the first --num held-out images of the run's dataset, at its resolution
        images = held_out_images(args.dataset or data.get("dataset", "shapes"), args.num, res,
                                 run.config.in_channels, args.data_dir, args.seed,
                                 shapes=run.shapes)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    collate = GraphCollator(encoder_rate=1 / args.fraction)  # the encoder's pixels only matter
    batch = collate(list(images), generator=torch.Generator().manual_seed(args.seed)).to(device)
    index = LatticeIndex((res, res), batch.enc_pixel, batch.enc_batch, batch.num_graphs)
    grid, mask = index.scatter(batch.enc_x)
    observation = Observation.from_images(grid, mask.bool()) if args.keep_pixels else None
    mean = f", mean of {args.draws}" if args.draws > 1 else ""
    print(f"{run.path} (step {run.step}, {args.weights} weights, trained at {res}x{res}): "
          f"{images.size(0)} images encoded from {100 * args.fraction:g}% of their pixels, "
          f"decoded at {', '.join(f'{n}x{n}' for n in sides)} by DDIM ({args.steps} steps, "
          f"eta {args.eta:g}{mean})")
    if args.keep_pixels and res not in sides:
        print(f"--keep-pixels: no decoding at {res}x{res}, where the observed pixels are nodes")

    rows = [("original", images), (f"observed {100 * args.fraction:g}%",
                                    (grid * mask - (1 - mask)).cpu())]
    results = {}
    for n in tqdm(sides, desc="resolutions", disable=args.no_progress):
        known = {"observation": observation, "resample": args.resample,
                 "jump_length": args.jump_length, "guidance": args.guidance
                 } if observation is not None and n == res else {}
        decoded = sum(
            reconstruct(run.model, run.diffusion, batch.enc_x, batch.enc_pos, batch.enc_batch,
                        shape=(n, n), steps=args.steps, progress=not args.no_progress,
                        eta=args.eta, generator=torch.Generator(device).manual_seed(
                            args.seed + 1000 * draw), **known).images.float()
            for draw in range(args.draws)) / args.draws
        if args.deblur is not None:
            decoded = run.diffusion.mollifier.undo(decoded, 2, inv_snr=args.deblur)
        results[f"{n}x{n}"] = decoded.clamp(-1, 1).cpu()
        label = f"{n}x{n}{', pixels kept' if known else ''}{mean}"
        rows.append((label, results[f"{n}x{n}"]))
    top = max(sides)
    bicubic = F.interpolate(images, size=(top, top), mode="bicubic", align_corners=False)
    rows.append((f"bicubic {top}x{top}", bicubic.clamp(-1, 1)))

    run_dir = run.path.parent.parent if run.path.parent.name == "checkpoints" else run.path.parent
    png = (Path(args.out) if args.out else
           run_dir / "samples" / f"reconstruct_{round(100 * args.fraction)}.png")
    save_rows(rows, png)
    torch.save({"original": images, "observed_pixel": batch.enc_pixel.cpu(),
                "observed_batch": batch.enc_batch.cpu(), "reconstructions": results,
                "fraction": args.fraction, "steps": args.steps, "seed": args.seed,
                "keep_pixels": args.keep_pixels, "resample": args.resample, "eta": args.eta,
                "guidance": args.guidance,
                "draws": args.draws,
                "deblur": args.deblur, "checkpoint": str(run.path)}, png.with_suffix(".pt"))
    print(f"wrote {png} and {png.with_suffix('.pt')}")


if __name__ == "__main__":
    main()
