r"""Conditional sampling with a trained ∞-Diff model: inpainting and super-resolution.

Both are the same operation on point sets: some nodes are observed, the reverse process keeps
them at their (noised) known values and the model fills in the rest (replacement conditioning,
with optional RePaint resampling, and optional guidance through the model's gradient,
--guidance: sample(..., guidance=), which brings the observations to every node within each
step at the cost of a backward pass per step).

* **Inpainting**: a region of each image is hidden (--mask center|left|random) and sampled.
* **Super-resolution**: a low-resolution image (the training resolution) is observed at the
  pixels of a lattice --sr-factor times finer whose centres coincide with its own (an odd
  factor: 3, 5, ...), and the other pixels are sampled.

    python examples/inpaint.py --checkpoint runs/shapes_demo          # built-in test images
    python examples/inpaint.py --checkpoint runs/folder64 --images my_faces/ --sr-factor 3

Images come from --images (a folder, like the training data) or, for models trained on the
built-in shapes, from held-out items of that dataset. Writes inpaint.png and superres.png (rows:
input, result, bicubic upsampling for comparison, ground truth) and their tensors (.pt).
"""
import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from pyg_infdiff.data import ContinuousShapes, ImageFolder, ShapesConfig
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import Observation, sample
from pyg_infdiff.training import load_pretrained


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file, or a run folder (its newest checkpoint)")
    p.add_argument("--images", default=None,
                   help="folder of images to condition on (default for shapes models: held-out "
                   "dataset items)")
    p.add_argument("--num", type=int, default=6, help="number of images")
    p.add_argument("--task", choices=["both", "inpaint", "superres"], default="both",
                   help="what to run")
    p.add_argument("--mask", choices=["center", "left", "random"], default="center",
                   help="hidden region for inpainting: the central quarter of the area, the "
                   "left half, or 70%% of the pixels at random")
    p.add_argument("--sr-factor", type=int, default=3,
                   help="super-resolution factor; odd, so coarse and fine pixel centres coincide")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--resample", type=int, default=2,
                   help="RePaint passes over each jump segment (1: plain replacement)")
    p.add_argument("--jump-length", type=int, default=5, help="RePaint jump length in steps")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="step size of the guidance towards the observed pixels through the "
                   "model's gradient (0: none)")
    p.add_argument("--deblur", type=float, nargs="?", const=0.05, default=None,
                   help="Wiener-deblur the results with this inverse SNR (flag alone: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the mask")
    p.add_argument("--out", default=None, help="output folder (default: <run>/conditional)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sr_factor < 3 or args.sr_factor % 2 == 0:
        raise SystemExit(f"--sr-factor must be odd and >= 3, got {args.sr_factor}")
    if not args.guidance >= 0:
        raise SystemExit(f"--guidance must be >= 0, got {args.guidance}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # The model and the process, rebuilt from the checkpoint (as in examples/sample.py).
    try:
        run = load_pretrained(args.checkpoint, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    model, diffusion, config, info, path = run.model, run.diffusion, run.config, run.info, run.path
    data = info.get("data", {})
    res, channels = int(data["resolution"]), config.out_channels
    fine = res * args.sr_factor

    # Ground-truth images at the training resolution (and at the fine one, when known).
    truth_fine = None
    if args.images:
        folder = ImageFolder(args.images, fine, channels=channels, flip=False)
        truth_fine = torch.stack([folder[i] for i in range(min(args.num, len(folder)))])
        truth = F.interpolate(truth_fine, size=(res, res), mode="area")
    elif data.get("dataset") == "shapes":
        shapes = ContinuousShapes(10**6, resolution=res, seed=data.get("seed", 0) + 1,
                                  config=ShapesConfig.named(run.shapes))
        truth = torch.stack([shapes.render(i) for i in range(args.num)])
        truth_fine = torch.stack([shapes.render(i, fine) for i in range(args.num)])
    else:
        raise SystemExit("Pass --images <folder>: the model was not trained on the built-in shapes")
    num = truth.size(0)
    mollify = diffusion.mollifier.apply  # the process lives on mollified images
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out_dir = Path(args.out) if args.out else run_dir / "conditional"
    common = dict(channels=channels, steps=args.steps, resample=args.resample,
                  jump_length=args.jump_length, guidance=args.guidance, device=device)

    def finish(images):
        images = images.float().cpu()
        if args.deblur is not None:
            images = diffusion.mollifier.undo(images, 2, inv_snr=args.deblur)
        return images.clamp(-1, 1)

    if args.task in ("both", "inpaint"):
        known = torch.ones(num, 1, res, res, dtype=torch.bool)
        if args.mask == "center":
            known[..., res // 4: 3 * res // 4, res // 4: 3 * res // 4] = False
        elif args.mask == "left":
            known[..., : res // 2] = False
        else:
            g = torch.Generator().manual_seed(args.seed)
            known = torch.rand(num, 1, res, res, generator=g) > 0.7
        observation = Observation.from_images(mollify(truth, 2), known)
        result = sample(model, diffusion, shape=(res, res), num_samples=num,
                        observation=observation,
                        generator=torch.Generator().manual_seed(args.seed), **common)
        shown = torch.where(known, truth, torch.zeros_like(truth))  # hidden pixels in grey
        rows = [("observed", shown), ("inpainted", finish(result.images)), ("truth", truth)]
        png = save_rows(rows, out_dir / "inpaint.png")
        torch.save(dict(rows) | {"mask": known}, png.with_suffix(".pt"))
        print(f"inpainting ({args.mask} mask, {res}x{res}): {png}")

    if args.task in ("both", "superres"):
        observation = Observation.from_coarse_images(mollify(truth, 2), (fine, fine))
        result = sample(model, diffusion, shape=(fine, fine), num_samples=num,
                        observation=observation,
                        generator=torch.Generator().manual_seed(args.seed), **common)
        bicubic = F.interpolate(truth, size=(fine, fine), mode="bicubic",
                                align_corners=False).clamp(-1, 1)
        rows = [(f"input {res}x{res}", truth), (f"infdiff {fine}x{fine}", finish(result.images)),
                (f"bicubic {fine}x{fine}", bicubic)]
        if truth_fine is not None:
            rows.append((f"truth {fine}x{fine}", truth_fine))
        png = save_rows(rows, out_dir / "superres.png")
        torch.save(dict(rows), png.with_suffix(".pt"))
        print(f"super-resolution ({res}x{res} -> {fine}x{fine}, x{args.sr_factor}): {png}")


if __name__ == "__main__":
    main()
