r"""Interpolate between two images in the latent space of a trained diffusion autoencoder (the
first stage of the two-stage model, trained by examples/celebahq_train.py --autoencoder).

Both images are encoded (from all their pixels, or a --fraction of them), their latents are
spherically interpolated, and every point of the path is decoded by DDIM from one shared noise
field, so that the strip changes only through the latent. One row per pair of images, at any
resolution:

    python examples/interpolate.py --checkpoint runs/fashion-mnist28 --pairs 0:1,2:3
    python examples/interpolate.py --checkpoint runs/fashion-mnist28 --pairs 4:9 \
        --resolution 112 --points 10

Writes the PNG strip and the tensors (.pt: images in [-1, 1]).
"""
import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyg_infdiff.data import GraphCollator, held_out_images
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import interpolate
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
                   "fashion-mnist: its test split)")
    p.add_argument("--data-dir", default=None, help="the folder for --dataset folder")
    p.add_argument("--pairs", default="0:1",
                   help="comma-separated pairs of image indices, a:b, one row each")
    p.add_argument("--points", type=int, default=8, help="decoded points per path (ends included)")
    p.add_argument("--resolution", type=int, default=None,
                   help="lattice side to decode at (default: the training resolution)")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="fraction of each image's pixels the encoder reads")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared noise field")
    p.add_argument("--weights", choices=["ema", "model"], default="ema",
                   help="the EMA weights or the raw trained weights")
    p.add_argument("--out", default=None,
                   help="output PNG (default: <run>/samples/interpolate_<res>.png)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    try:
        args.pairs = [tuple(int(i) for i in pair.split(":")) for pair in args.pairs.split(",")]
    except ValueError:
        p.error(f"--pairs must look like 0:1,2:3, got {args.pairs!r}")
    if any(len(pair) != 2 or min(pair) < 0 for pair in args.pairs):
        p.error(f"--pairs must be pairs of non-negative indices a:b, got {args.pairs}")
    if args.points < 2 or args.steps < 1 or not 0 < args.fraction <= 1:
        p.error("need --points >= 2, --steps >= 1 and --fraction in (0, 1]")
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
    res = run.resolution or 28
    side = args.resolution or res
    count = max(max(pair) for pair in args.pairs) + 1
    try:  # the first held-out images of the run's dataset, at its resolution
        images = held_out_images(args.dataset or run.info.get("data", {}).get("dataset", "shapes"),
                                 count, res, run.config.in_channels, args.data_dir, args.seed,
                                 shapes=run.shapes)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    if images.size(0) < count:
        raise SystemExit(f"--pairs asks for image {count - 1}, the data has {images.size(0)}")
    collate = GraphCollator(encoder_rate=1 / args.fraction)
    batch = collate(list(images), generator=torch.Generator().manual_seed(args.seed)).to(device)
    with torch.no_grad():
        z = run.model.encode(batch.enc_x, batch.enc_pos, batch.enc_batch,
                             num_graphs=batch.num_graphs)
    print(f"{run.path} (step {run.step}): {len(args.pairs)} path(s) of {args.points} points "
          f"at {side}x{side}, DDIM {args.steps} steps, seed {args.seed}")

    rows, paths = [], {}
    for a, b in tqdm(args.pairs, desc="paths", disable=args.no_progress):
        out = interpolate(run.model, run.diffusion, z[a], z[b], args.points,
                          channels=run.config.out_channels, shape=(side, side), steps=args.steps,
                          generator=torch.Generator(device).manual_seed(args.seed),
                          progress=not args.no_progress)
        strip = out.images.float().clamp(-1, 1).cpu()
        paths[f"{a}:{b}"] = strip
        ends = F.interpolate(images[[a, b]], size=(side, side), mode="nearest")  # for display
        rows.append((f"{a} -> {b}", torch.cat([ends[:1], strip, ends[1:]])))

    run_dir = run.path.parent.parent if run.path.parent.name == "checkpoints" else run.path.parent
    png = Path(args.out) if args.out else run_dir / "samples" / f"interpolate_{side}.png"
    save_rows(rows, png)
    torch.save({"paths": paths, "images": images, "points": args.points, "steps": args.steps,
                "seed": args.seed, "checkpoint": str(run.path)}, png.with_suffix(".pt"))
    print(f"wrote {png} and {png.with_suffix('.pt')} (each row: image a, the path, image b)")


if __name__ == "__main__":
    main()
