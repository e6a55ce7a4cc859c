"""Generates the figures of the documentation into ``docs/_static/figures/``.

Run from the repository root:

.. code-block:: bash

    python docs/figures/make_figures.py                      # the figures that need no model
    python docs/figures/make_figures.py --checkpoint runs/fashion-mnist28   # a trained run

Figures (all drawn from the library, nothing by hand):

* ``noise_resolutions.png``: one mollified noise field drawn once and read on 32², 64² and 256²
  lattices.
* ``subsampled_graph.png``: an image, a quarter of its pixels as graph nodes, and their radius
  edges.
* ``mollifier.png``: an image, the mollifier :math:`T` acting on it, its Wiener inverse, and the
  gains of both filters.
* ``sample_resolutions.png`` (only with ``--checkpoint``): the same seeds of a trained model
  at three resolutions (DDIM, :math:`\\eta = 0`). The committed one is drawn from the
  Fashion-MNIST model of ``bench/quality.py`` arm (a) (25 CPU minutes, 28²; the tutorial's
  recipe) at the presets' kernel radius: ``--checkpoint bench/_out/quality_radius/r357/arm_a``
  (``python bench/quality.py --arms a --threads 1 --num-real 2000 --out
  bench/_out/quality_radius/r357``). The checkpoint is one
  written by :class:`pyg_infdiff.training.Trainer` whose ``model_config`` is
  ``{"unet": UNetConfig.to_dict(), "diffusion": {"sigma": ...}, "data": {"resolution": ...}}``
  as the examples write it (``--sigma`` and ``--resolutions`` override the recorded values).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # like docs/conf.py: works from a checkout without installing
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from pyg_infdiff.data import ContinuousShapes  # noqa: E402
from pyg_infdiff.graph import ImageToGraph  # noqa: E402
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise  # noqa: E402

OUT = ROOT / "docs" / "_static" / "figures"
DPI = 100


def _to_rgb(image: torch.Tensor) -> torch.Tensor:
    """[C, H, W] in [-1, 1] -> [H, W, C] (or [H, W]) in [0, 1] for imshow."""
    image = ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0)
    return image[..., 0] if image.size(-1) == 1 else image


def _save(fig: plt.Figure, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def noise_resolutions(out: Path, sigma: float = 1 / 32, seed: int = 0) -> Path:
    r"""One draw of :math:`T\varepsilon`, read on three lattices."""
    noise = MollifiedNoise(sigma, ndim=2)
    field = noise.draw(1, 1, generator=torch.Generator().manual_seed(seed))
    sizes = (32, 64, 256)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, n in zip(axes, sizes, strict=True):
        values = field.on_lattice((n, n))[0, 0]
        ax.imshow(values, cmap="RdBu_r", vmin=-2.5, vmax=2.5, interpolation="nearest",
                  extent=(0, 1, 1, 0))
        ax.set_title(f"{n}×{n} lattice")
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
    fig.suptitle(f"One mollified noise field (σ = 1/{round(1 / sigma)}, K = {noise.num_freq} "
                 "frequencies per axis) read at three resolutions")
    return _save(fig, out, "noise_resolutions.png")


def subsampled_graph(out: Path, resolution: int = 32, rate: float = 4.0, radius: float = 2.5 / 32,
                     seed: int = 1) -> Path:
    """A quarter of the pixels of an image as graph nodes with their radius edges."""
    image = ContinuousShapes(8, resolution=resolution, seed=0)[5]
    transform = ImageToGraph(rate=rate, radius=radius, loop=False,
                             generator=torch.Generator().manual_seed(seed))
    data = transform(image)
    # pos columns are (row, column); plot x = column, y = row (image orientation).
    xy = data.pos[:, [1, 0]]
    segments = torch.stack([xy[data.edge_index[0]], xy[data.edge_index[1]]], dim=1)
    colours = ((data.x.clamp(-1, 1) + 1) / 2).numpy()

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2))
    axes[0].imshow(_to_rgb(image), interpolation="nearest", extent=(0, 1, 1, 0))
    axes[0].set_title(f"image, {resolution}×{resolution} pixels")
    ax = axes[1]
    ax.add_collection(LineCollection(segments.numpy(), colors="0.75", linewidths=0.4, zorder=1))
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=14, edgecolors="k", linewidths=0.3, zorder=2)
    centre = xy[data.num_nodes // 2]
    ax.add_patch(plt.Circle(centre.tolist(), radius, fill=False, color="C3", lw=1.2, zorder=3))
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_aspect("equal")
    ax.set_title(f"{data.num_nodes} nodes (rate {rate:g}), {data.num_edges} edges, "
                 f"r = {radius * resolution:g}/{resolution}")
    for a in axes:
        a.set_xticks([0, 0.5, 1])
        a.set_yticks([0, 0.5, 1])
    return _save(fig, out, "subsampled_graph.png")


def mollifier(out: Path, resolution: int = 128, sigma: float = 2 / 128,
              inv_snr: float = 1e-3) -> Path:
    """The mollifier on an image, its Wiener inverse, and the gains of both."""
    image = ContinuousShapes(8, resolution=resolution, seed=0)[5]
    moll = GaussianMollifier(sigma)
    blurred = moll.apply(image, ndim=2)
    restored = moll.undo(blurred, ndim=2, inv_snr=inv_snr)
    restored_default = moll.undo(blurred, ndim=2)

    fig, axes = plt.subplots(1, 5, figsize=(16, 3.4),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.25]})
    panels = [
        (image, "image $x_0$"),
        (blurred, f"$T x_0$ (σ = {sigma * resolution:g}/{resolution})"),
        (restored, f"undo, λ = {inv_snr:g}"),
        (restored_default, "undo, λ = 0.05 (default)"),
    ]
    for ax, (img, title) in zip(axes, panels, strict=False):
        ax.imshow(_to_rgb(img), interpolation="nearest", extent=(0, 1, 1, 0))
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    k = torch.arange(resolution, dtype=torch.float64)
    g = moll.gains(resolution)
    ax = axes[-1]
    ax.semilogy(k, g, label="$g_k$ (mollifier)")
    for lam, style in ((inv_snr, "--"), (0.05, ":")):
        ax.semilogy(k, g * g / (g * g + lam**2), style, label=f"$g_k^2/(g_k^2+λ^2)$, λ={lam:g}")
    ax.set_ylim(1e-6, 2)
    ax.set_xlabel("frequency k (cosine $\\cos(\\pi k u)$)")
    ax.set_title("gains per axis", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, out, "mollifier.png")


def sample_resolutions(out: Path, checkpoint: Path, sigma: float | None,
                       resolutions: list[int] | None, steps: int, seed: int,
                       num: int = 6) -> Path:
    """The same seeds of a trained model at several resolutions: one row per resolution, one
    column per seed (seed, seed + 1, ...). Each cell is the sampled mollified function
    :math:`T x_0` read on that lattice (no deblurring, so the rows differ only by how finely
    one function is read)."""
    from pyg_infdiff.diffusion import MollifiedDiffusion, sample
    from pyg_infdiff.training import load_pretrained

    pretrained = load_pretrained(checkpoint)  # model and diffusion exactly as trained
    model, diffusion = pretrained.model, pretrained.diffusion
    if sigma is not None:  # an explicit width overrides the recorded one
        diffusion = MollifiedDiffusion(MollifiedNoise(sigma, ndim=model.config.ndim),
                                       diffusion.schedule, diffusion.parametrization)
    if resolutions is None:
        base = pretrained.resolution
        if base is None:
            raise ValueError(f"{checkpoint} does not record the training resolution: pass "
                             "--resolutions")
        resolutions = [base, 2 * base, 4 * base]
    channels = model.config.in_channels
    fig, axes = plt.subplots(len(resolutions), num, squeeze=False,
                             figsize=(1.6 * num + 0.8, 1.6 * len(resolutions) + 0.5))
    for row, n in zip(axes, resolutions, strict=True):
        for column, ax in enumerate(row):
            drawn = sample(model, diffusion, shape=(n, n), num_samples=1, channels=channels,
                           steps=steps, progress=False,
                           generator=torch.Generator().manual_seed(seed + column))
            ax.imshow(_to_rgb(drawn.images[0]), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{n}×{n}")
    fig.suptitle(f"The same seeds at {len(resolutions)} resolutions "
                 f"(DDIM η = 0, {steps} steps)")
    return _save(fig, out, "sample_resolutions.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a Trainer checkpoint; adds sample_resolutions.png")
    parser.add_argument("--sigma", type=float, default=None,
                        help="the mollifier width the checkpoint was trained with (default: "
                        "the one its model_config records)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=None,
                        help="sampling resolutions (default: 1, 2 and 4 times the training "
                        "resolution its model_config records)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument("--num", type=int, default=6, help="seeds per row (default: 6)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="output folder (default: docs/_static/figures)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    noise_resolutions(args.out)
    subsampled_graph(args.out)
    mollifier(args.out)
    if args.checkpoint is not None:
        if args.sigma is not None and not (math.isfinite(args.sigma) and args.sigma > 0):
            parser.error(f"--sigma must be positive, got {args.sigma}")
        if args.num < 1:
            parser.error(f"--num must be positive, got {args.num}")
        sample_resolutions(args.out, args.checkpoint, args.sigma, args.resolutions, args.steps,
                           args.seed, args.num)


if __name__ == "__main__":
    main()
