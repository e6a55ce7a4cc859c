r"""Callbacks for :class:`~pyg_infdiff.training.Trainer`: :class:`SampleGrid` draws samples of
fixed seeds at one or more resolutions and writes them as PNG grids."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from pyg_infdiff.data.images import save_grid, save_rows
from pyg_infdiff.diffusion import LatticeSubset, MollifiedDiffusion, context_for, sample

__all__ = ["SampleGrid"]

Resolution = int | Sequence[int]


def _shape(resolution: Resolution) -> tuple[int, int]:
    shape = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(shape) != 2 or any(int(n) != n or n < 1 for n in shape):
        raise ValueError(f"A resolution must be a positive int or (H, W), got {resolution!r}")
    return int(shape[0]), int(shape[1])


class SampleGrid:
    r"""Samples the same noise seeds with a model at one or more lattice resolutions and writes
    them as a PNG: a grid for one resolution, or one labelled row per resolution (scaled to a
    common display size, nearest neighbour) for several. Use it as
    ``Trainer(sample_fn=SampleGrid(...))``; the trainer calls it with the EMA model.

    Every call draws from a fresh CPU :class:`torch.Generator` seeded with :obj:`seed`, for
    every resolution: the initial states are the *same* mollified noise fields read on each
    lattice, so with DDIM (:math:`\eta = 0`) the rows show one function per column at several
    resolutions, and grids at successive training steps show how the same samples evolve.
    Read through a :obj:`context`, so does stochastic DDIM (:math:`\eta > 0`): its fresh noises
    are whole fields too, and the context follows the same chain at every resolution.

    .. code-block:: python

        from pyg_infdiff.data import ContinuousShapes, GraphCollator, make_loader
        from pyg_infdiff.diffusion import MollifiedDiffusion
        from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
        from pyg_infdiff.noise import MollifiedNoise
        from pyg_infdiff.training import Trainer, TrainerConfig
        from pyg_infdiff.training.callbacks import SampleGrid

        diffusion = MollifiedDiffusion(MollifiedNoise(sigma=0.5 / 16, ndim=2))
        model = MultiscaleOperatorUNet(UNetConfig(  # tiny, untrained: use yours
            in_channels=3, out_channels=3, radius=2.5 / 16, grid_shape=(8, 8),
            operator_channels=8, channels=16, channel_mults=(1,), attention_levels=(0,),
            num_heads=2, time_embed_dim=8))
        collate = GraphCollator(diffusion.mollifier, rate=4, radius=model.config.radius)
        loader = make_loader(ContinuousShapes(8, resolution=16), collate, batch_size=4)

        grid = SampleGrid(diffusion, channels=3, resolutions=(16, 32), num_samples=4, steps=2)
        config = TrainerConfig(max_steps=2, sample_every=2, out_dir="runs/demo", device="cpu")
        trainer = Trainer(model, diffusion.training_loss, config, sample_fn=grid)
        trainer.fit(loader)                     # writes runs/demo/samples/samples_00000002.png

    Args:
        diffusion (MollifiedDiffusion): The process the model was trained with.
        channels (int): The channels :math:`C` of the data (1 or 3).
        resolutions (Sequence[int or tuple[int, int]], optional): Lattices to sample on.
            (default: :obj:`(32,)`)
        num_samples (int, optional): Samples (seeds) per resolution. (default: :obj:`8`)
        steps (int, optional): Sampler steps. (default: :obj:`50`)
        sampler (str, optional): :obj:`"ddim"` or :obj:`"ddpm"`. (default: :obj:`"ddim"`)
        eta (float, optional): DDIM stochasticity. (default: :obj:`0.0`)
        seed (int, optional): The seed of the noise fields. (default: :obj:`0`)
        deblur (float, optional): If set, undo the mollifier on the samples with the Wiener
            filter of this inverse signal-to-noise ratio
            (:meth:`~pyg_infdiff.noise.GaussianMollifier.undo`). (default: :obj:`None`)
        deblur_band (int or tuple[int, int], optional): Deblur only the frequencies below this
            resolution and roll the rest off (``undo(..., band=...)``, e.g. the training
            resolution: no ringing above it, but softer; see
            :meth:`~pyg_infdiff.noise.GaussianMollifier.undo`); :obj:`None` deblurs every
            frequency. (default: :obj:`None`)
        nrow (int, optional): Images per row of a single-resolution grid.
            (default: :obj:`None`, near-square)
        filename (str, optional): File name pattern in the output folder, formatted with
            :obj:`step`. (default: :obj:`"samples_{step:08d}.png"`)
        save_tensors (bool, optional): Also write the images as a ``.pt`` file next to the PNG,
            a dict from ``"HxW"`` to :math:`(B, C, H, W)` tensors. (default: :obj:`False`)
        progress (bool, optional): Show the sampler's progress bar. (default: :obj:`False`)
        context (int, LatticeSubset or torch.Tensor, optional): On lattices where it helps
            (:func:`~pyg_infdiff.diffusion.context_for`: at least as many pixels as the context
            has points; more, for given points), read through it (``sample(...,
            context=...)``): that many uniform random points, random pixel centres of a lattice
            per sample, or the points given. Pass the training nodes
            (:func:`~pyg_infdiff.diffusion.training_nodes`), so that a model trained on sparse
            nodes is sampled at its training density. (default: :obj:`None`)
    """

    def __init__(
        self,
        diffusion: MollifiedDiffusion,
        channels: int,
        resolutions: Sequence[Resolution] = (32,),
        num_samples: int = 8,
        *,
        steps: int = 50,
        sampler: Literal["ddim", "ddpm"] = "ddim",
        eta: float = 0.0,
        seed: int = 0,
        deblur: float | None = None,
        deblur_band: Resolution | None = None,
        nrow: int | None = None,
        filename: str = "samples_{step:08d}.png",
        save_tensors: bool = False,
        progress: bool = False,
        context: int | LatticeSubset | Tensor | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"'channels' must be 1 or 3 (PNG images), got {channels}")
        if len(resolutions) == 0:
            raise ValueError("'resolutions' is empty")
        if num_samples < 1 or steps < 1:
            raise ValueError(f"'num_samples' and 'steps' must be positive, got {num_samples} "
                             f"and {steps}")
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"'sampler' must be 'ddim' or 'ddpm', got {sampler!r}")
        if deblur is not None and not deblur > 0:
            raise ValueError(f"'deblur' must be a positive inverse SNR or None, got {deblur}")
        self.diffusion = diffusion
        self.channels = channels
        self.shapes = [_shape(r) for r in resolutions]
        self.num_samples = num_samples
        self.steps = steps
        self.sampler = sampler
        self.eta = eta
        self.seed = seed
        self.deblur = deblur
        self.deblur_band = _shape(deblur_band) if deblur_band is not None else None
        self.nrow = nrow
        self.filename = filename
        self.save_tensors = save_tensors
        self.progress = progress
        self.context = context
        if isinstance(context, int) and context < 1:  # a LatticeSubset checks its own size
            raise ValueError(f"'context' must be a positive number of points, got {context}")
        self.seconds: dict[tuple[int, int], float] = {}

    @torch.no_grad()
    def draw(self, model: nn.Module, resolution: Resolution) -> Tensor:
        r"""Samples :obj:`num_samples` images of the fixed seed on one lattice, on the model's
        device, deblurred if :obj:`deblur` is set, and records the time taken in
        :attr:`seconds`.

        Shapes:
            - **output:** :math:`(B, C, H, W)` on the CPU, float32.
        """
        shape = _shape(resolution)
        device = next(iter(model.parameters())).device
        start = time.perf_counter()
        out = sample(
            model, self.diffusion, shape=shape, num_samples=self.num_samples,
            channels=self.channels, steps=self.steps, sampler=self.sampler, eta=self.eta,
            generator=torch.Generator().manual_seed(self.seed), progress=self.progress,
            device=device,
            context=context_for(self.context, math.prod(shape)),
        )
        images = out.images.float()
        if self.deblur is not None:
            images = self.diffusion.mollifier.undo(images, 2, inv_snr=self.deblur,
                                                   band=self.deblur_band)
        self.seconds[shape] = time.perf_counter() - start
        return images.clamp(-1.0, 1.0).cpu()

    def rows(self, model: nn.Module) -> list[tuple[str, Tensor]]:
        r"""The samples at every resolution as ``("HxW", images)`` rows (see
        :func:`~pyg_infdiff.data.images.save_rows`)."""
        return [(f"{h}x{w}", self.draw(model, (h, w))) for h, w in self.shapes]

    def __call__(self, model: nn.Module, step: int, out_dir: str | os.PathLike) -> Path:
        r"""Samples and writes ``out_dir / filename.format(step=step)``; returns the path."""
        path = Path(out_dir) / self.filename.format(step=step)
        rows = self.rows(model)
        if len(rows) == 1:
            save_grid(rows[0][1], path, nrow=self.nrow)
        else:
            save_rows(rows, path)
        if self.save_tensors:
            torch.save(dict(rows), path.with_suffix(".pt"))
        return path

    def __repr__(self) -> str:
        res = ", ".join(f"{h}x{w}" for h, w in self.shapes)
        return (f"{self.__class__.__name__}(resolutions=[{res}], num_samples={self.num_samples}, "
                f"sampler={self.sampler!r}, steps={self.steps}, seed={self.seed})")
