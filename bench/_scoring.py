r"""Sampling and scoring helpers shared by the benchmark scripts: DDIM samples of a model from
fixed seeds, the ground truth of the built-in shapes, and the sample metrics.

* :func:`draw_samples` (:func:`context_label` names how a set read its lattice): DDIM samples
  from fixed seeds at one resolution, in batches, optionally through a context.
* :func:`renders` and :func:`upsample`: the ground truth of the built-in shapes at any
  resolution, and the bicubic baseline; :func:`main_job_held_out`: the held-out renders the
  main job's samples are scored against.
* :func:`inception_metrics`, :func:`swd_metrics`: FID/KID or SWD of sample sets against real
  images; :func:`kid_cell` formats KID for a table.

The models and training they score are :mod:`_infdiff`'s. Import it as
``from _scoring import ...`` (``python bench/<script>.py`` puts ``bench/`` on ``sys.path``).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from pyg_infdiff.data import ContinuousShapes, ShapesConfig
from pyg_infdiff.diffusion import LatticeSubset, MollifiedDiffusion, sample

__all__ = [
    "MAIN_JOB_BENCH_SHAPES",
    "MAIN_JOB_HELD_OUT_SEED",
    "context_label",
    "draw_samples",
    "inception_metrics",
    "kid_cell",
    "main_job_held_out",
    "renders",
    "swd_metrics",
    "upsample",
]


@torch.no_grad()
def draw_samples(model, diffusion: MollifiedDiffusion, num: int, side: int, channels: int,
                 steps: int, batch: int, seed: int, device: torch.device,
                 context: int | Tensor | LatticeSubset | None = None,
                 context_until: int = -1, eta: float = 0.0) -> Tensor:
    r""":obj:`num` samples (DDIM, :math:`\eta = 0` unless :obj:`eta` says otherwise) at one
    side, in batches; batch :math:`b` seeded ``seed + b`` (so the same seeds give the same
    noise fields at every side), read through :obj:`context` if given
    (``sample(..., context=..., context_until=...)``). Returns float32 CPU images in
    :math:`[-1, 1]`, as sampled (mollified)."""
    out = []
    for b, start in enumerate(range(0, num, batch)):
        count = min(batch, num - start)
        images = sample(model, diffusion, shape=(side, side), num_samples=count,
                        channels=channels, steps=steps, sampler="ddim", eta=eta,
                        generator=torch.Generator(device=device).manual_seed(seed + b),
                        progress=False, device=device, context=context,
                        context_until=context_until).images
        out.append(images.float().clamp(-1, 1).cpu())
    return torch.cat(out)


def context_label(context: int | Tensor | LatticeSubset | None) -> str:
    r"""How a set of samples read its lattice: plainly, or through which context."""
    if context is None:
        return "the lattice itself"
    if isinstance(context, int):
        return f"{context:,} random points"
    if isinstance(context, LatticeSubset):
        return f"{context.num:,} random pixels of the {context.shape[0]}² training lattice"
    return f"the {int(round(context.size(0) ** 0.5))}² training lattice"


def renders(num: int, side: int, channels: int, seed: int,
            config: ShapesConfig | None = None) -> Tensor:
    r"""The first :obj:`num` items of :class:`ContinuousShapes` (dataset seed :obj:`seed`,
    :obj:`config` or the default :class:`ShapesConfig`) rendered at :obj:`side`², a stacked
    batch: the ground truth at any resolution."""
    if config is None:
        config = ShapesConfig(channels=channels)
    elif config.channels != channels:
        raise ValueError(f"'config' has {config.channels} channels, expected {channels}")
    data = ContinuousShapes(num, side, config, seed=seed)
    return torch.stack([data[i] for i in range(num)])


#: The dataset seed of the main job's held-out items (the main job trains on dataset seed 0).
MAIN_JOB_HELD_OUT_SEED = 777
#: The shapes the benchmarks of the main job's recipe train on and score against
#: (``examples/shapes_demo.py --shapes simple``): random colours. Their published numbers were
#: measured on them, before the demo itself moved to ``ShapesConfig.demo()``'s five colours.
MAIN_JOB_BENCH_SHAPES = "simple"


def main_job_held_out(num: int, side: int, shapes: str = MAIN_JOB_BENCH_SHAPES) -> Tensor:
    r"""The first :obj:`num` held-out items of the main job's shapes (:obj:`shapes`, a name of
    :meth:`ShapesConfig.named`; dataset seed :data:`MAIN_JOB_HELD_OUT_SEED`, colour), rendered
    at :obj:`side`²: the reference its samples are scored against."""
    return renders(num, side, 3, MAIN_JOB_HELD_OUT_SEED, ShapesConfig.named(shapes))


def upsample(images: Tensor, side: int) -> Tensor:
    r"""Bicubic upsampling of a batch to :obj:`side`², clamped to :math:`[-1, 1]`."""
    return F.interpolate(images, size=(side, side), mode="bicubic",
                         align_corners=False).clamp(-1, 1)


def _batches(images: Tensor | Dataset, num: int, batch: int) -> Iterable[Tensor]:
    for start in range(0, num, batch):
        items = [images[i] for i in range(start, min(num, start + batch))]
        items = [it[0] if isinstance(it, tuple | list) else it for it in items]
        yield torch.stack([it if it.dim() == 3 else it.unsqueeze(0) for it in items])


def inception_metrics(fakes: dict[str, Tensor], real: Tensor | Dataset, num_real: int,
                      cache_name: str | None, *, device: str = "cpu", seed: int = 0,
                      batch: int = 50) -> dict[str, dict[str, float]]:
    r"""FID and KID of each set of :obj:`fakes` (float :math:`[-1, 1]` images) against the
    first :obj:`num_real` of :obj:`real` (images or ``(image, label)`` items, ``uint8`` or
    float), on the standard FID Inception features. The real statistics are cached
    (:class:`~pyg_infdiff.metrics.StatisticsCache`) under :obj:`cache_name` when given.
    Raises :class:`FileNotFoundError` (saying how to get them) without the weights."""
    from pyg_infdiff.metrics import (
        StatisticsCache,
        compute_statistics,
        extract_features,
        fid_from_features,
        kernel_inception_distance,
        load_inception,
    )

    net = load_inception(device=device)
    first = next(iter(_batches(real, 1, 1)))
    side = first.shape[-1]

    def real_features() -> Tensor:
        return extract_features(net, _batches(real, num_real, batch), num=num_real,
                                desc="inception real")

    if cache_name is not None:
        variant = f"{net.resize_mode}-c{first.size(1)}-{side}x{side}"
        real_stats = StatisticsCache().get_or_compute(real_features, cache_name, side, num_real,
                                                      net.sha1, variant)
    else:
        real_stats = compute_statistics(real_features())
    results = {}
    for name, images in fakes.items():
        stats = compute_statistics(extract_features(net, images, batch_size=batch,
                                                    desc=f"inception {name}"))
        kid, kid_std = kernel_inception_distance(real_stats.features, stats.features,
                                                 generator=torch.Generator().manual_seed(seed))
        results[name] = {"fid": fid_from_features(real_stats, stats), "kid": kid,
                         "kid_std": kid_std, "num_fake": images.size(0), "num_real": num_real}
    return results


def kid_cell(metrics: dict, digits: int = 1) -> str:
    r"""KID ×10³ of :func:`inception_metrics`'s entry as a table cell, with its spread over
    subsets where there were several (a few hundred images make one subset: no spread shown);
    ``"—"`` without KID."""
    if "kid" not in metrics:
        return "—"
    kid, std = 1e3 * metrics["kid"], 1e3 * metrics["kid_std"]
    if std < 0.5 * 10**-digits:
        return f"{kid:.{digits}f}"
    return f"{kid:.{digits}f} ± {std:.{digits}f}"


def swd_metrics(fakes: dict[str, Tensor], real: Tensor, seed: int = 0) -> dict[str, dict]:
    r"""The multi-scale SWD (mean over levels, ×10³) of each fake set against as many real
    images (float :math:`[-1, 1]`)."""
    from pyg_infdiff.metrics import sliced_wasserstein_distance

    out = {}
    for name, images in fakes.items():
        n = min(images.size(0), real.size(0))
        result = sliced_wasserstein_distance(real[:n], images[:n],
                                             generator=torch.Generator().manual_seed(seed))
        out[name] = {"swd": result.mean, "num_fake": n, "num_real": n}
    return out
