r"""Benchmark (issue 15, #5; opt-in and slow): the diffusion autoencoder on Fashion-MNIST 28².

Trains the first stage of the two-stage model (:class:`~pyg_infdiff.models.DiffusionAutoencoder`
of :meth:`~pyg_infdiff.models.EncoderConfig.preset` ``(28)`` and the U-Net preset 28 conditioned
on its 64-value latent) for ``--minutes`` (wall clock, or CPU time with ``--clock cpu``)
on one thread, as the official code trains it: the denoiser on a quarter of each image's
pixels, the encoder on another random quarter of its own (``GraphCollator(encoder_rate=4)``,
:class:`~pyg_infdiff.diffusion.AutoencoderLoss`), with the library's CPU recipe (batch 32,
AdamW 5e-4, 200 warm-up steps, clip 1, EMA 0.999, σ = half a pixel, cosine schedule,
:math:`T x_0` prediction). Then, with the EMA weights, on the first ``--num-test``
Fashion-MNIST test images:

* **(a)** reconstruction at 28² from 100%, 25% and 10% of the pixels (a random subset per
  image): encode, decode by DDIM (``--sample-steps``, :math:`\eta = 0`, one seed), score PSNR
  and SSIM (:func:`pyg_infdiff.metrics.ssim`) against the original images, as decoded
  (mollified) and Wiener-deblurred (inverse SNR 0.05); next to cubic (Clough-Tocher) and
  nearest interpolation of the same pixels (:func:`scipy.interpolate.griddata`); and, from 25%
  and 10%, decoded keeping the observed pixels (``reconstruct(..., observation=)``: inpainting by
  replacement, the pixels' raw values standing for their mollified ones), which the
  interpolations do too; the same with RePaint resampling (``--resample`` passes over segments of
  ``--jump-length`` steps, :math:`\eta = 1` as RePaint's ancestral steps; the defaults, 3 and
  2, were the best of four settings tried on the first 48 test images with a 20-minute model);
  and the mean of ``--draws`` such RePaint decodings from independent noise, an estimate of the
  posterior mean (what PSNR rewards; blurrier than any one decoding); and the same two rows
  with guidance through the denoiser's gradient instead of RePaint (``sample(...,
  guidance=)``, DPS, :math:`\zeta` = ``--guidance``, 3 by default: the best of 1-4 on 48 other
  test images, 1000-1047). Goal: from 25%, PSNR at least 3 dB above both interpolations.
* **(b)** 28² → 56² and 112²: the first ``--num-upsample`` images encoded from all their pixels
  and decoded at 56² and 112², scored against bicubic upsampling of the 28² input (PSNR, SSIM),
  and their detail: the energy in the upper half of the 28² band (7 to 14 cycles per unit)
  relative to that of the 28² input, for the decoded images (deblurred) and for bicubic.
* **(c)** :math:`\mathbf{z}` of a 28² image against :math:`\mathbf{z}` of 56² discretisations of
  it (pixel replication, the same piecewise-constant function; and bicubic, for reference):
  relative difference :math:`\|\mathbf{z}_{56} - \mathbf{z}_{28}\| / \|\mathbf{z}_{28}\|`.
  Goal: at most 1% for every image, with pixel replication.
* **(d)** figures (``--write``): reconstructions (original, 25% observed, interpolations,
  decoded at 28², 56², 112²) and latent interpolations between test images.

Training is resumable (checkpoints and the time spent in ``--out``); the evaluation is cached in
``--out``/``result.json`` for its settings. Run::

    python bench/autoencoder.py --write                 # 60 min of training, then ~10 min
    python bench/autoencoder.py --minutes 120 --write   # continues the same run
    python bench/autoencoder.py --smoke --out /tmp/ae   # tiny model, seconds (tests)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _args import positive_float, positive_int
from _common import ROOT, machine_description, relative_to_root
from _infdiff import FIGURES, Recipe, resolve_device, train_infdiff, unet_config
from _publish import add_publish_args, compact_figure, markdown_table
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from torch import Tensor
from tqdm.auto import tqdm

from pyg_infdiff.data import FashionMNIST, GraphCollator
from pyg_infdiff.data.images import save_rows
from pyg_infdiff.diffusion import Observation, interpolate, reconstruct
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.metrics import band_energy, ssim
from pyg_infdiff.models import EncoderConfig, UNetConfig
from pyg_infdiff.training import load_pretrained

OUT = ROOT / "bench" / "_out" / "autoencoder"
RESOLUTION = 28
FRACTIONS = (1.0, 0.25, 0.1)
#: The row of the decodings that keep the observed pixels.
KEPT = "decoded, observed pixels kept"
#: The rows of the RePaint decodings that keep them: one, and the mean of ``--draws``.
REPAINT = f"{KEPT}, RePaint"
MEAN = "mean of {draws} decodings, observed pixels kept, RePaint"
#: The same with guidance (DPS) instead of RePaint.
GUIDED = f"{KEPT}, guided"
GUIDED_MEAN = "mean of {draws} decodings, observed pixels kept, guided"
#: The rows that are not decodings of the model.
INTERPOLATIONS = ("cubic interpolation", "nearest")
SIDES = (56, 112)
BAND = (RESOLUTION / 4, RESOLUTION / 2)  # the upper half of the 28² band, cycles per unit


# --------------------------------------------------------------------------- the model
def configs(smoke: bool, latent_dim: int) -> tuple[EncoderConfig, UNetConfig]:
    r"""The encoder and the conditioned U-Net: the presets of 28², or tiny ones for
    ``--smoke``."""
    if smoke:
        encoder = EncoderConfig(in_channels=1, latent_dim=latent_dim, operator_channels=8,
                                radius=5 / 28, kernel_hidden_channels=8, grid_shape=(7, 7),
                                channels=8, channel_mults=(1, 2), num_heads=2)
        unet = unet_config("tiny", channels=1)
    else:
        encoder = EncoderConfig.preset(RESOLUTION, latent_dim=latent_dim)
        unet = UNetConfig.preset(RESOLUTION)
    return encoder, UNetConfig.from_dict({**unet.to_dict(), "cond_dim": latent_dim})


# --------------------------------------------------------------------------- measurements
def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    r"""PSNR in dB of each image of :obj:`x` against :obj:`y` (:math:`(B,)`; inf if equal)."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def scores(x: Tensor, reference: Tensor) -> dict[str, float]:
    r"""Mean PSNR (dB) and SSIM of a batch against its references."""
    return {"psnr": float(psnr(x, reference).mean()), "ssim": float(ssim(x, reference).mean())}


def scattered(images: Tensor, pixel: Tensor, batch: Tensor, method: str) -> Tensor:
    r"""Each image interpolated from its observed pixels (:func:`scipy.interpolate.griddata`,
    ``"cubic"`` (Clough-Tocher) or ``"nearest"``), nearest outside their convex hull."""
    from scipy.interpolate import griddata

    num, _, side, _ = images.shape
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], 1)
    out = np.empty((num, side * side))
    for b in range(num):
        seen = pixel[batch == b].numpy()
        points = np.stack([seen // side, seen % side], 1)
        values = images[b, 0].reshape(-1)[seen].double().numpy()
        filled = griddata(points, values, grid, method=method)
        holes = np.isnan(filled)
        if holes.any():
            filled[holes] = griddata(points, values, grid[holes], method="nearest")
        out[b] = filled
    return torch.from_numpy(out).float().view(num, 1, side, side).clamp(-1, 1)


def subset_batch(images: Tensor, fraction: float, seed: int):
    r"""The encoder subsets (a :class:`GraphCollator` batch with ``enc_*``) of :obj:`images`:
    a random :obj:`fraction` of each image's pixels."""
    collate = GraphCollator(encoder_rate=1 / fraction)
    return collate(list(images), generator=torch.Generator().manual_seed(seed))


def observed(batch, side: int) -> Tensor:
    r"""The observed pixels on the lattice, missing ones black (for the figure)."""
    index = LatticeIndex((side, side), batch.enc_pixel, batch.enc_batch, batch.num_graphs)
    grid, mask = index.scatter(batch.enc_x)
    return grid * mask - (1 - mask)


def kept_pixels(chunk, side: int) -> Observation:
    r"""The observed pixels of a chunk's encoder subsets as an :class:`Observation` of the
    full :obj:`side`² lattices the chunk decodes (nodes graph by graph, row-major), their raw
    values standing for the mollified ones (which need the unobserved neighbours)."""
    index = LatticeIndex((side, side), chunk.enc_pixel, chunk.enc_batch, chunk.num_graphs)
    node, size = index.flat_index(), chunk.num_graphs * index.num_pixels
    mask = torch.zeros(size, dtype=torch.bool, device=node.device).index_fill_(0, node, True)
    values = chunk.enc_x.new_zeros(size, chunk.enc_x.size(1)).index_copy_(0, node, chunk.enc_x)
    return Observation(mask, values)


def decode(model, diffusion, batch, side: int, args: argparse.Namespace, device,
           keep: bool = False, seed: int = 0, **sampling) -> Tensor:
    r"""DDIM decodings at :obj:`side`² of the latents of a batch's encoder subsets, in chunks
    of ``--sample-batch`` images (each chunk from its own seed), float32 CPU in [-1, 1]. With
    :obj:`keep` (the subsets being pixels of the :obj:`side`² lattice) the decoding also keeps
    the observed pixels (:func:`kept_pixels`, inpainting by replacement: ``sample(...,
    observation=)``), so that they reach the unobserved ones through the denoiser. :obj:`seed`
    offsets the chunks' seeds (independent decodings); :obj:`sampling` goes to
    :func:`~pyg_infdiff.diffusion.reconstruct` (``resample``, ``eta``, ...)."""
    out = []
    graphs = batch.to_data_list()
    for start in tqdm(range(0, len(graphs), args.sample_batch), desc=f"decode {side}²",
                      disable=args.smoke, leave=False):
        chunk = type(batch).from_data_list(graphs[start:start + args.sample_batch]).to(device)
        extra = {"observation": kept_pixels(chunk, side)} if keep else {}
        images = reconstruct(model, diffusion, chunk.enc_x, chunk.enc_pos, chunk.enc_batch,
                             shape=(side, side), steps=args.sample_steps, progress=False,
                             generator=torch.Generator(device).manual_seed(args.seed + seed
                                                                           + start),
                             **extra, **sampling)
        out.append(images.images.float().cpu())
    return torch.cat(out).clamp(-1, 1)


def deblur(diffusion, images: Tensor) -> Tensor:
    r"""Wiener deblurring of the mollifier (inverse SNR 0.05), clamped."""
    return diffusion.mollifier.undo(images, 2, inv_snr=0.05).clamp(-1, 1)


def latent_agreement(model, test: Tensor, device) -> dict[str, dict[str, float]]:
    r""":math:`\|\mathbf{z}_{56} - \mathbf{z}_{28}\| / \|\mathbf{z}_{28}\|` per image (median,
    max) for two 56² discretisations of each 28² image."""
    def encode(images: Tensor) -> Tensor:
        batch = subset_batch(images, 1.0, 0).to(device)
        side = images.size(-1)
        index = LatticeIndex((side, side), batch.enc_pixel, batch.enc_batch, batch.num_graphs)
        with torch.no_grad():
            return model.encode(batch.enc_x, batch.enc_pos, batch.enc_batch, lattice=index,
                                num_graphs=batch.num_graphs).double().cpu()

    z = encode(test)
    out = {}
    for name, mode in (("pixel replication", "nearest"), ("bicubic", "bicubic")):
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        fine = F.interpolate(test, scale_factor=2, mode=mode, **kwargs).clamp(-1, 1)
        rel = (encode(fine) - z).norm(dim=1) / z.norm(dim=1)
        out[name] = {"median": float(rel.median()), "max": float(rel.max())}
    return out


def evaluate(args: argparse.Namespace, checkpoint: str) -> dict:
    r"""Measurements (a), (b), (c) of one trained checkpoint, with the tensors of the figures
    saved next to the result."""
    device = resolve_device(args.device)
    run = load_pretrained(checkpoint, weights="ema", device=device)
    model, diffusion = run.model, run.diffusion
    test = (FashionMNIST(train=False).images[:args.num_test].float() / 127.5 - 1).unsqueeze(1)
    figure = {"original": test[:args.figure_images]}
    result: dict = {"reconstruction": {}, "upsampling": {}}
    start = time.perf_counter()
    for fraction in FRACTIONS:
        batch = subset_batch(test, fraction, args.seed)
        decoded = decode(model, diffusion, batch, RESOLUTION, args, device)
        rows = {"decoded": scores(decoded, test),
                "decoded, deblurred": scores(deblur(diffusion, decoded), test)}
        if fraction == 0.25:
            figure["observed 25%"] = observed(batch, RESOLUTION)[:args.figure_images]
        if fraction < 1:
            kept = decode(model, diffusion, batch, RESOLUTION, args, device, keep=True)
            rows[KEPT] = scores(kept, test)
            conditioned = ((REPAINT, MEAN, {"resample": args.resample, "eta": 1.0,
                                            "jump_length": args.jump_length}),
                           (GUIDED, GUIDED_MEAN, {"guidance": args.guidance}))
            means = {}
            for one, mean, sampling in conditioned:  # one decoding, the mean of --draws
                draws = [decode(model, diffusion, batch, RESOLUTION, args, device, keep=True,
                                seed=1000 * (k + 1), **sampling) for k in range(args.draws)]
                means[one] = torch.stack(draws).mean(0)
                rows[one] = scores(draws[0], test)
                rows[mean.format(draws=args.draws)] = scores(means[one], test)
            for name, method in zip(INTERPOLATIONS, ("cubic", "nearest"), strict=True):
                guess = scattered(test, batch.enc_pixel, batch.enc_batch, method)
                rows[name] = scores(guess, test)
                if fraction == 0.25:
                    figure[f"{name} (25%)"] = guess[:args.figure_images]
            if fraction == 0.25:
                figure["decoded, pixels kept (25%)"] = kept[:args.figure_images]
                figure[f"mean of {args.draws}, guided (25%)"] = (
                    means[GUIDED][:args.figure_images])
        if fraction == 0.25:
            figure["decoded 28x28 (25%)"] = deblur(diffusion, decoded[:args.figure_images])
        result["reconstruction"][f"{fraction:g}"] = rows
    reference = test[:args.num_upsample]
    batch = subset_batch(reference, 1.0, args.seed)
    base = band_energy(reference, *BAND)
    for side in SIDES:
        decoded = deblur(diffusion, decode(model, diffusion, batch, side, args, device))
        bicubic = F.interpolate(reference, size=(side, side), mode="bicubic",
                                align_corners=False).clamp(-1, 1)
        result["upsampling"][str(side)] = {
            **scores(decoded, bicubic),
            "detail": float((band_energy(decoded, *BAND) / base).median()),
            "detail_bicubic": float((band_energy(bicubic, *BAND) / base).median()),
        }
        figure[f"decoded {side}x{side} (100%)"] = decoded[:args.figure_images]
    result["latent"] = latent_agreement(model, test, device)
    pairs = torch.arange(2 * args.figure_pairs).view(-1, 2) + 1  # test images 1:2, 3:4, ...
    with torch.no_grad():
        full = subset_batch(test[:2 * args.figure_pairs + 1], 1.0, 0).to(device)
        z = model.encode(full.enc_x, full.enc_pos, full.enc_batch, num_graphs=full.num_graphs)
    paths = []
    for a, b in pairs.tolist():
        out = interpolate(model, diffusion, z[a], z[b], args.figure_points, channels=1,
                          shape=(56, 56), steps=args.sample_steps, progress=False,
                          generator=torch.Generator(device).manual_seed(args.seed))
        ends = F.interpolate(test[[a, b]], size=(56, 56), mode="nearest")
        paths.append((f"{a} -> {b}", torch.cat([ends[:1], deblur(diffusion, out.images.float()
                                                               .cpu()), ends[1:]])))
    torch.save({"reconstruction": list(figure.items()), "interpolation": paths},
               args.out / "figures.pt")
    result["eval_seconds"] = time.perf_counter() - start
    result["step"] = run.step
    return result


# --------------------------------------------------------------------------- the script
def settings_of(args: argparse.Namespace) -> dict:
    r"""The settings a cached evaluation must match to be reused."""
    return {"minutes": args.minutes, "clock": args.clock, "num_test": args.num_test,
            "num_upsample": args.num_upsample, "sample_steps": args.sample_steps,
            "latent_dim": args.latent_dim, "encoder_rate": args.encoder_rate,
            "seed": args.seed, "smoke": args.smoke, "resample": args.resample,
            "jump_length": args.jump_length, "draws": args.draws, "guidance": args.guidance}


def run(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(parametrization="x0", batch_size=args.batch_size)
    if args.smoke:
        recipe.checkpoint_every, recipe.warmup = 5, 5
    encoder, unet = configs(args.smoke, args.latent_dim)
    data = FashionMNIST(train=True, resolution=RESOLUTION, resize="area")
    trained = train_infdiff(args.out / "train", data, unet, RESOLUTION, 4.0, args.minutes,
                            recipe, data_name="fashion-mnist", seed=args.seed,
                            encoder=encoder, encoder_rate=args.encoder_rate, clock=args.clock)
    path = args.out / "result.json"
    settings = {**settings_of(args), "checkpoint": trained["checkpoint"]}
    cached = json.loads(path.read_text()) if path.exists() else None
    if cached is not None and cached["settings"] == settings and not args.force:
        print(f"evaluation cached in {path}")
        return cached
    result = {"settings": settings, "trained": trained, **evaluate(args, trained["checkpoint"]),
              "device": str(resolve_device(args.device))}
    result["machine"] = machine_description(result["device"])
    path.write_text(json.dumps(result, indent=2))
    return result


def draw_figures(args: argparse.Namespace, result: dict) -> Path | None:
    r"""The reconstruction figure (returned) and the interpolation figure next to it."""
    blob = torch.load(args.out / "figures.pt", weights_only=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    interp = compact_figure(save_rows(blob["interpolation"], args.figures
                                      / "bench_autoencoder_interpolation.png", cell_size=56))
    result["interpolation_figure"] = interp.name
    return compact_figure(save_rows(blob["reconstruction"], args.figures
                                    / "bench_autoencoder_reconstruction.png", cell_size=56))


def goal(name: str, ok: bool, detail: str) -> str:
    return f"- Goal ({name}): {detail} — **{'met' if ok else 'NOT met'}**"


def report(args: argparse.Namespace, result: dict, picture: Path | None) -> str:
    s, t = result["settings"], result["trained"]
    rows = []
    for fraction, methods in result["reconstruction"].items():
        for method, m in methods.items():
            rows.append([f"{100 * float(fraction):g}%", method, f"{m['psnr']:.2f}",
                         f"{m['ssim']:.3f}"])
    up = [[f"{side}²", f"{m['psnr']:.2f}", f"{m['ssim']:.3f}", f"{m['detail']:.2f}",
           f"{m['detail_bicubic']:.2f}"] for side, m in result["upsampling"].items()]
    lat = [[name, f"{100 * m['median']:.2f}%", f"{100 * m['max']:.2f}%"]
           for name, m in result["latent"].items()]
    quarter = result["reconstruction"]["0.25"]
    model = max(m["psnr"] for name, m in quarter.items() if name not in INTERPOLATIONS)
    best = max(quarter[name]["psnr"] for name in INTERPOLATIONS)
    same = result["latent"]["pixel replication"]  # the same function, sampled at 56²
    lines = [
        "## Diffusion autoencoder: Fashion-MNIST 28²", "",
        f"Stage 1 trained for {s['minutes']:g} min of "
        f"{'CPU' if s.get('clock') == 'cpu' else 'wall-clock'} time ({t['steps']:,} steps, "
        f"{t['parameters'] / 1e6:.2f} M parameters, latent {s['latent_dim']}, the encoder on "
        f"its own random 1/{s['encoder_rate']:g} of the pixels); EMA weights of step "
        f"{result['step']:,}; DDIM {s['sample_steps']} steps, η = 0 (RePaint rows: "
        f"{s['resample']} passes over segments of {s['jump_length']} steps, η = 1; guided rows: "
        f"ζ = {s['guidance']:g}).", "",
        f"**(a) Reconstruction at 28²** of the first {s['num_test']} test images, from a random "
        "fraction of their pixels (PSNR in dB, SSIM; against the original images):", "",
        markdown_table(["pixels", "method", "PSNR", "SSIM"], rows), "",
        f"**(b) 28² → 56², 112²** ({s['num_upsample']} test images, encoded from all their "
        "pixels, decoded and deblurred), against bicubic upsampling of the 28² input; detail: "
        f"median energy in {BAND[0]:g}–{BAND[1]:g} cycles per unit relative to the 28² input's "
        "(1: as detailed as the input):", "",
        markdown_table(["decoded at", "PSNR vs bicubic", "SSIM vs bicubic", "detail (decoded)",
                        "detail (bicubic)"], up), "",
        "**(c) z of a 28² image against z of a 56² discretisation of it** (relative difference "
        "over the test images):", "",
        markdown_table(["56² discretisation", "median", "max"], lat), "",
        goal("25% of the pixels: PSNR ≥ 3 dB above cubic and nearest interpolation",
             model >= best + 3, f"{model:.2f} dB (best model row) vs {best:.2f} dB (best "
             f"interpolation), a margin of {model - best:+.2f} dB"),
        goal("z from 28² vs 56²: relative difference ≤ 1%", same["max"] <= 0.01,
             f"max {100 * same['max']:.2f}% (median {100 * same['median']:.2f}%) over the "
             "images for pixel replication, the same function at 56²; bicubic is another "
             "function (its row is for reference)"),
        f"- Training on {t.get('images_seen', 0):,} images; evaluation "
        f"{result['eval_seconds'] / 60:.1f} min. Interpolations: cubic is Clough-Tocher "
        "(`scipy.interpolate.griddata`), nearest outside the convex hull of the pixels.",
        *report_footer(args, result,
                       f" Run folder: `{relative_to_root(args.out)}`."),
    ]
    if picture is not None:
        lines += ["", "![Reconstructions: original, 25% observed, cubic and nearest "
                  "interpolation of those pixels, decoded at 28² from them (keeping them; the "
                  "mean of guided decodings keeping them; alone), decoded at 56² and 112² "
                  f"from all pixels](_static/figures/{picture.name})", "",
                  "![Latent interpolations between test images, decoded at 56² from one shared "
                  f"noise field](_static/figures/{result['interpolation_figure']})"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="training budget (default: 60; 0.05 with --smoke)")
    p.add_argument("--latent-dim", type=positive_int, default=64, help="size of the latent z")
    p.add_argument("--encoder-rate", type=positive_float, default=4.0,
                   help="the encoder trains on 1/rate of each image's pixels")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training batch (default: 32)")
    p.add_argument("--num-test", type=positive_int, default=100, help="test images of (a) and (c)")
    p.add_argument("--num-upsample", type=positive_int, default=32, help="test images of (b)")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--sample-batch", type=positive_int, default=50, help="images decoded at once")
    p.add_argument("--resample", type=positive_int, default=3,
                   help="RePaint passes over each segment of the decodings that keep pixels")
    p.add_argument("--jump-length", type=positive_int, default=2,
                   help="RePaint's segment, in DDIM steps")
    p.add_argument("--draws", type=positive_int, default=4,
                   help="RePaint (and guided) decodings averaged into the posterior-mean rows")
    p.add_argument("--guidance", type=positive_float, default=3.0,
                   help="step size of the guided rows (sample(..., guidance=))")
    p.add_argument("--figure-images", type=int, default=10, help="columns of the figure")
    p.add_argument("--figure-pairs", type=int, default=4, help="rows of the interpolation")
    p.add_argument("--figure-points", type=int, default=8, help="points per interpolation")
    p.add_argument("--out", type=Path, default=OUT, help="run folder (training, results)")
    p.add_argument("--force", action="store_true", help="re-evaluate a cached result")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="what --minutes counts: wall-clock time, or this process's CPU time "
                   "(steadier on a shared machine)")
    add_publish_args(p, "tiny model, 3 s of training, 6 test images, 2 DDIM steps (tests)",
                     figures=FIGURES, figure="figures")
    args = p.parse_args(argv)
    if args.minutes is None:
        args.minutes = 0.05 if args.smoke else 60.0
    if args.smoke:
        args.num_test, args.num_upsample, args.sample_steps = 6, 2, 2
        args.draws, args.jump_length = min(args.draws, 2), 1
        args.figure_images, args.figure_pairs, args.figure_points = 3, 1, 3
        args.batch_size = args.batch_size or 4
        args.latent_dim = min(args.latent_dim, 8)
    args.batch_size = args.batch_size or 32
    if args.encoder_rate < 1:
        p.error("--encoder-rate must be at least 1")
    if args.resample > 1 and args.jump_length >= args.sample_steps:
        p.error(f"--jump-length ({args.jump_length}) must be below --sample-steps "
                f"({args.sample_steps}) to resample")
    if args.num_test < max(args.figure_images, 2 * args.figure_pairs + 1, args.num_upsample):
        p.error("--num-test must cover the figure's images and pairs and --num-upsample")
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "autoencoder", parse_args, run, report, argv,
                      figure=draw_figures)


if __name__ == "__main__":
    main()
