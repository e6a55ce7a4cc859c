r"""Sample a trained ∞-Diff model at any resolution.

The model is a function-space denoiser, so a checkpoint trained at 64x64 samples at 64, 128,
256 or any other lattice size with the same weights. --zoom draws the *same* noise seeds at
several multiples of --resolution, lays them out side by side and prints how well the finer
samples, average-pooled, agree with the first (PSNR per seed).

    python examples/sample.py --checkpoint runs/shapes_demo --resolution 128 --num 16
    python examples/sample.py --checkpoint runs/folder64/checkpoints/ckpt_00200000.pt \
        --resolution 64 --zoom 1,2,4 --deblur
    python examples/sample.py --checkpoint runs/shapes_demo --sampler ddpm --steps 250
    python examples/sample.py --checkpoint runs/shapes_demo --context none   # plain lattices
    python examples/sample.py --checkpoint runs/shapes_demo --context-until 60

By default (--context auto) the model reads every lattice with at least its training nodes
through a context of its training density (pyg_infdiff.diffusion.ContextNodes): as many random
pixels of its training lattice as it had nodes per image in training, or its training lattice
if it saw every pixel (then on lattices larger than it: its own lattice is read plainly).
Its integrals then have the statistics they had in training at any resolution, and the same
seed gives the same function at every such resolution. --context none samples the plain
lattice (faster: the dense path); --context N reads through N random points. --context-until T
reads through the context only above timestep T and the lattice itself from T down
(sample(..., context_until=T); bench/context_until.py measures what it changes).

Writes a PNG (grid, or rows with --zoom) and the raw tensors (.pt: images in [-1, 1]).
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pyg_infdiff.data.images import save_grid, save_rows
from pyg_infdiff.diffusion import LatticeSubset, sample
from pyg_infdiff.training import load_pretrained
from pyg_infdiff.training.allocator import keep_freed_memory


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file, or a run folder (its newest checkpoint)")
    p.add_argument("--num", type=int, default=16, help="number of samples (seeds)")
    p.add_argument("--resolution", type=int, default=None,
                   help="lattice side to sample on (default: the training resolution)")
    p.add_argument("--zoom", default=None,
                   help="comma-separated multiples of --resolution, e.g. 1,2,4: the same seeds "
                   "at each, side by side")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim", help="reverse process")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (at most 1000)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0: deterministic)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise fields, drawn on --device (a seed gives other samples "
                   "on a GPU than on the CPU)")
    p.add_argument("--deblur", type=float, nargs="?", const=0.05, default=None,
                   help="undo the mollifier with a Wiener filter of this inverse SNR "
                   "(flag alone: 0.05)")
    p.add_argument("--deblur-band", type=int, default=None,
                   help="with --deblur: deblur only the frequencies below this resolution "
                   "(e.g. the training one) and roll the rest off: no ringing above it, but "
                   "softer (default: every frequency)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema",
                   help="the EMA weights or the raw trained weights")
    p.add_argument("--out", default=None,
                   help="output PNG (default: <run>/samples/sample_<res>[_zoom].png); the .pt "
                   "goes next to it")
    p.add_argument("--nrow", type=int, default=None, help="images per row of the grid")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--context", default="auto",
                   help="'auto' (the training density, see above), 'none', or a number of "
                   "random context points per sample")
    p.add_argument("--context-until", type=int, default=-1, metavar="T",
                   help="with a context: read through it only above timestep T, the lattice "
                   "itself from T down (-1: the context to the end)")
    args = p.parse_args(argv)
    if args.out is not None and Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg",
                                                                       ".webp"):
        p.error(f"--out must name an image file (.png, .jpg, .webp), got {args.out!r}")
    if args.context not in ("auto", "none") and not (args.context.isdigit()
                                                      and int(args.context) > 0):
        p.error(f"--context must be 'auto', 'none' or a positive number, got {args.context!r}")
    if args.deblur_band is not None and args.deblur_band < 1:
        p.error(f"--deblur-band must be a positive resolution, got {args.deblur_band}")
    return args


def choose_context(option, run, side, ndim):
    """The context of --context for a side x side lattice: None, a number of points, or the
    training lattice ('auto': only on lattices with more nodes than the model had in training)."""
    if option == "none":
        return None
    if option != "auto":
        return int(option)
    return run.context_for(side**ndim)


def main(argv=None):
    args = parse_args(argv)
    # Every sampling step allocates and frees the same large activations; by default glibc
    # hands them back to the kernel and faults fresh zeroed pages in at the next step (issue 16:
    # 64 samples at 64x64 spent as much system time as user time). Keep freed memory instead.
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    try:  # the model and its diffusion process, rebuilt from the run's model_config
        run = load_pretrained(args.checkpoint, weights=args.weights, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    model, diffusion, config, path = run.model, run.diffusion, run.config, run.path
    trained = run.resolution
    res = args.resolution or trained
    if res is None:
        raise SystemExit("The checkpoint does not record its training resolution: pass "
                         "--resolution")
    zoom = [float(z) for z in args.zoom.split(",")] if args.zoom else [1.0]
    sizes = [round(res * z) for z in zoom]
    print(f"{path} (step {run.step}, {args.weights} weights, trained at "
          f"{trained}x{trained}): {args.num} samples at {', '.join(f'{n}x{n}' for n in sizes)}, "
          f"{args.sampler.upper()} {args.steps} steps, seed {args.seed}, on {device}")

    results = {}
    for n in sizes:
        context = choose_context(args.context, run, n, config.ndim)
        if context is not None:
            what = (f"{context} random points" if isinstance(context, int)
                    else f"{context.num} random pixels of the {trained}x{trained} training "
                    "lattice" if isinstance(context, LatticeSubset)
                    else f"the {trained}x{trained} training lattice")
            print(f"  {n}x{n}: read through a context of {what} per sample (--context none: "
                  "the plain lattice)")
        start = time.perf_counter()
        out = sample(model, diffusion, shape=(n, n), num_samples=args.num,
                     channels=config.out_channels, steps=args.steps, sampler=args.sampler,
                     eta=args.eta, generator=torch.Generator(device).manual_seed(args.seed),
                     progress=not args.no_progress, device=device, context=context,
                     context_until=args.context_until if context is not None else -1)
        images = out.images.float()
        if args.deblur is not None:
            images = diffusion.mollifier.undo(images, config.ndim, inv_snr=args.deblur,
                                              band=args.deblur_band)
        results[f"{n}x{n}"] = images.clamp(-1, 1).cpu()
        print(f"  {n}x{n}: {time.perf_counter() - start:.1f} s")

    for n in sizes[1:]:  # the same seeds at a multiple of the first size: one function?
        if n % sizes[0] == 0:
            pooled = F.avg_pool2d(results[f"{n}x{n}"], n // sizes[0])
            error = (pooled - results[f"{sizes[0]}x{sizes[0]}"]).pow(2).flatten(1).mean(1)
            psnr = 10 * torch.log10(4 / error.clamp_min(1e-12))  # images in [-1, 1]: peak 2
            print(f"  {n}x{n} average-pooled to {sizes[0]}x{sizes[0]} against the "
                  f"{sizes[0]}x{sizes[0]} samples: PSNR mean {psnr.mean():.1f} dB, min "
                  f"{psnr.min():.1f} dB over {len(psnr)} seeds")
    suffix = "_zoom" if len(sizes) > 1 else ""
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    png = Path(args.out) if args.out else run_dir / "samples" / f"sample_{res}{suffix}.png"
    if len(sizes) > 1:
        save_rows(list(results.items()), png)
    else:
        save_grid(results[f"{res}x{res}"], png, nrow=args.nrow)
    torch.save({"images": results, "seed": args.seed, "sampler": args.sampler,
                "steps": args.steps, "deblur": args.deblur, "deblur_band": args.deblur_band,
                "checkpoint": str(path)},
               png.with_suffix(".pt"))
    print(f"wrote {png} and {png.with_suffix('.pt')}")


if __name__ == "__main__":
    main()
