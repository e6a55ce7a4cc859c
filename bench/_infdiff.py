r"""∞-Diff helpers shared by the benchmark scripts of issue 5 (``subsampling.py``,
``vs_dense.py``, ``resolution.py``, ``consistency.py``, ``quality.py``,
``beyond_resolution.py``): the models and diffusion process they build, the device they run
on, time-budgeted resumable training, sampling and the sample metrics.

* :func:`unet_config`, :func:`parse_preset`, :func:`make_diffusion`: the model of a benchmark
  (a :meth:`UNetConfig.preset` or the ``"tiny"`` smoke-test model) and the library's default
  process at a training resolution.
* :func:`resolve_device`, :data:`FIGURES`: where a benchmark runs and where its figures go
  (the command line it reports is :func:`_skeleton.command_line`).
* :func:`train_infdiff` (with :class:`Recipe`): trains an ∞-Diff model for a wall-clock budget
  with :class:`~pyg_infdiff.training.Trainer`, resumably; its checkpoints load with
  :func:`pyg_infdiff.training.load_pretrained`.
* :func:`draw_samples`, :func:`inception_metrics`, :func:`swd_metrics`: DDIM samples from fixed
  seeds and their FID/KID or SWD against real images; :func:`renders` and :func:`upsample`:
  the ground truth of the built-in shapes at any resolution, and the bicubic baseline.

Like :mod:`_common`, import it as ``from _infdiff import ...`` (``python bench/<script>.py``
puts ``bench/`` on ``sys.path``).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import ROOT
from torch import Tensor
from torch.utils.data import Dataset

from pyg_infdiff.data import (
    ContinuousShapes,
    GraphCollator,
    MollifiedCache,
    ShapesConfig,
    make_loader,
)
from pyg_infdiff.diffusion import AutoencoderLoss, LatticeSubset, MollifiedDiffusion, sample
from pyg_infdiff.models import (
    DiffusionAutoencoder,
    EncoderConfig,
    MultiscaleOperatorUNet,
    UNetConfig,
)
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import Trainer, TrainerConfig, diffusion_to_dict

__all__ = [
    "FIGURES",
    "LossBudget",
    "Recipe",
    "draw_samples",
    "inception_metrics",
    "kid_cell",
    "make_diffusion",
    "parse_preset",
    "renders",
    "resolve_device",
    "swd_metrics",
    "train_infdiff",
    "unet_config",
    "upsample",
]

FIGURES = ROOT / "docs" / "_static" / "figures"


# --------------------------------------------------------------------------- models, devices
def resolve_device(name: str | None) -> torch.device:
    r"""``name``, or CUDA when present, else the CPU."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return device


def unet_config(preset: int | str, channels: int | None = None) -> UNetConfig:
    r"""The model of a benchmark: :meth:`UNetConfig.preset` of an int, or ``"tiny"`` (a
    few-thousand-parameter model for the smoke tests). :obj:`channels` overrides the preset's
    data channels."""
    extra = {} if channels is None else {"in_channels": channels, "out_channels": channels}
    if preset == "tiny":
        tiny = dict(in_channels=3, out_channels=3, operator_channels=8, radius=2.5 / 16,
                    kernel_hidden_channels=8, kernel_num_basis=4, grid_shape=(8, 8), channels=8,
                    channel_mults=(1, 2), attention_levels=(1,), num_heads=2, time_embed_dim=8)
        return UNetConfig(**{**tiny, **extra})
    return UNetConfig.preset(int(preset), **extra)


def parse_preset(text: str) -> int | str:
    r"""``"tiny"`` or an int preset."""
    return text if text == "tiny" else int(text)


def make_diffusion(resolution: int) -> MollifiedDiffusion:
    r"""The library's default process at a training resolution: mollifier (and noise) width
    half a pixel, :math:`\sigma = 0.5 / n`, cosine schedule of 1000 steps, mollified-noise
    prediction (as ``examples/celebahq_train.py`` and ``examples/shapes_demo.py``)."""
    return MollifiedDiffusion(MollifiedNoise(0.5 / resolution, 2))


# --------------------------------------------------------------------------- training
@dataclass
class Recipe:
    r"""How an ∞-Diff arm trains (defaults: the 28² recipe of ``examples/celebahq_train.py``)."""

    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    ema_start: int = 0
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    keep_last: int | None = 2  # None keeps every checkpoint (for scores at equal steps)
    log_every: int = 50
    sigma_pixels: float = 0.5
    parametrization: str = "mollified_eps"
    snr_gamma: float | None = None  # Min-SNR-γ loss weights (examples/shapes_demo.py: 5)


class LossBudget:
    r"""A time budget for :class:`~pyg_infdiff.training.Trainer`, as the loss function it calls:
    records the time spent before each step (:obj:`clock`, offset by what :obj:`spent_at`
    records for the step the trainer resumed from) and, once :obj:`seconds` are spent, makes
    the current step the last one (``trainer.config.max_steps``). Set ``budget.trainer`` before
    training. :func:`train_infdiff` uses it; so does ``bench/two_stage.py`` for its latent
    stage."""

    def __init__(self, loss_fn: Callable, seconds: float, spent_at: dict[int, float],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.loss_fn, self.seconds, self.spent_at, self.clock = loss_fn, seconds, spent_at, clock
        self.trainer: Trainer | None = None
        self.start: float | None = None
        self.offset = 0.0
        self.elapsed: dict[int, float] = {}  # trainer.step -> seconds spent after that step
        self.last_print = 0.0

    def now(self) -> float:
        return self.offset + self.clock() - self.start

    def __call__(self, model, batch, **kwargs):
        step = self.trainer.step
        if self.start is None:  # the first call: the trainer has resumed (or not) by now
            self.start = self.clock()
            self.offset = self.spent_at.get(step, 0.0)
        elapsed = self.now()
        self.elapsed[step] = elapsed
        if elapsed >= self.seconds:
            self.trainer.config.max_steps = step + 1
        if elapsed - self.last_print >= 60:
            self.last_print = elapsed
            print(f"  step {step}, {elapsed / 60:.1f} / {self.seconds / 60:.1f} min", flush=True)
        return self.loss_fn(model, batch, **kwargs)


def train_infdiff(
    out: Path,
    dataset: Dataset,
    config: UNetConfig,
    resolution: int,
    rate: float,
    minutes: float,
    recipe: Recipe | None = None,
    *,
    data_name: str = "data",
    seed: int = 0,
    device: str = "cpu",
    radius_edges: bool = True,
    encoder: EncoderConfig | None = None,
    encoder_rate: float | None = None,
    clock: str = "wall",
) -> dict:
    r"""Trains an ∞-Diff model for a time budget with the public library parts
    (:class:`GraphCollator`, :func:`make_loader`, :class:`MollifiedDiffusion`,
    :class:`Trainer`), resumably.

    The run folder holds the trainer's checkpoints and logs and ``budget.json``, the time spent
    up to each checkpoint; a rerun resumes from the newest checkpoint with the rest of the budget,
    returns at once when the budget was spent, continues training when given a larger budget and
    refuses a smaller one. A :class:`~pyg_infdiff.data.MollifiedCache` whose mollifier has the
    recipe's width is collated as it is (mollified once, not at every step; another width is a
    :class:`ValueError`). :obj:`radius_edges` set to :obj:`False` collates no radius edges: on
    full lattices the model then takes its dense path, where edges of a wide kernel on a fine
    lattice would cost far more to build than the step. The checkpoints carry the examples'
    ``model_config`` (``unet``, ``diffusion``, ``data``), so
    :func:`pyg_infdiff.training.load_pretrained` and ``examples/sample.py`` read them.

    With an :obj:`encoder` it trains the first stage of the two-stage model instead: a
    :class:`~pyg_infdiff.models.DiffusionAutoencoder` of :obj:`encoder` and :obj:`config` (whose
    ``cond_dim`` is the latent size), the encoder reading its own random subsets of
    1/:obj:`encoder_rate` of the pixels (default: :obj:`rate`), with
    :class:`~pyg_infdiff.diffusion.AutoencoderLoss`; ``model_config`` then has
    ``autoencoder`` in place of ``unet``.

    :obj:`clock` ``"wall"`` counts wall-clock time; ``"cpu"`` the CPU time of this process
    (:func:`time.process_time`, all its threads), which other jobs on a shared machine slow
    far less: with one torch thread, arms trained one after the other under different loads
    still get the same computation.

    Returns:
        dict: ``steps``, ``train_seconds``, ``checkpoint`` (path), ``parameters``.
    """
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    if clock not in clocks:
        raise ValueError(f"'clock' must be 'wall' or 'cpu', got {clock!r}")
    recipe = recipe or Recipe()
    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "budget.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    if ledger.get("done"):  # a larger budget continues from the last checkpoint
        if abs(ledger["budget_seconds"] - 60.0 * minutes) < 1e-6:
            return ledger["result"]
        if ledger["budget_seconds"] > 60.0 * minutes:
            raise ValueError(f"{out} holds a run trained for {ledger['budget_seconds'] / 60:g} "
                             f"min, more than the {minutes:g} min asked for: use another folder")
    if ledger and ledger.get("clock", "wall") != clock:
        raise ValueError(f"{out} holds a run timed by the {ledger.get('clock', 'wall')} clock, "
                         f"not {clock!r}: use another folder")
    spent_at = {int(k): v for k, v in ledger.get("spent_at", {}).items()}
    sigma = recipe.sigma_pixels / resolution
    diffusion = MollifiedDiffusion(MollifiedNoise(sigma, config.ndim),
                                   parametrization=recipe.parametrization,
                                   snr_gamma=recipe.snr_gamma)
    mollifier = diffusion.mollifier
    if isinstance(dataset, MollifiedCache) and dataset.mollifier is not None:
        if abs(getattr(dataset.mollifier, "sigma", -1.0) - sigma) > 1e-12 * sigma:
            raise ValueError(f"the cache was mollified with {dataset.mollifier!r}, the recipe "
                             f"asks for sigma {sigma:g}")
        mollifier = None  # mollified once, when the cache was built
    if encoder is not None:
        encoder_rate = rate if encoder_rate is None else encoder_rate
    collator = GraphCollator(mollifier, rate=rate,
                             radius=config.radius if radius_edges else None,
                             encoder_rate=encoder_rate if encoder is not None else None)
    loader = make_loader(dataset, collator, recipe.batch_size, seed=seed, drop_last=True)
    torch.manual_seed(seed)
    if encoder is not None:
        model = DiffusionAutoencoder(encoder, config)
        architecture, loss_fn = {"autoencoder": model.to_dict()}, AutoencoderLoss(diffusion)
    else:
        model = MultiscaleOperatorUNet(config)
        architecture, loss_fn = {"unet": config.to_dict()}, partial(diffusion.training_loss)
    model_config = {
        **architecture,
        "diffusion": diffusion_to_dict(diffusion),
        "data": {"dataset": data_name, "resolution": resolution,
                 "channels": config.in_channels, "subsample": rate, "seed": seed},
    }
    trainer_config = TrainerConfig(
        lr=recipe.lr, warmup_steps=recipe.warmup, max_steps=10**9, grad_clip=recipe.grad_clip,
        ema_decay=recipe.ema_decay, ema_start=recipe.ema_start, log_every=recipe.log_every,
        sample_every=0, checkpoint_every=recipe.checkpoint_every, keep_last=recipe.keep_last,
        out_dir=str(out), seed=seed, device=device, progress=False, verbose=False,
    )
    budget = LossBudget(loss_fn, 60.0 * minutes, spent_at, clocks[clock])
    trainer = Trainer(model, budget, trainer_config, model_config=model_config,
                      pass_generator=True)
    budget.trainer = trainer
    print(f"training {data_name} {resolution}², rate {rate:g}, {minutes:g} min budget, "
          f"{trainer.num_parameters:,} parameters -> {out}", flush=True)
    result = None
    try:
        result = trainer.fit(loader, resume="auto")
    finally:
        # Time spent up to each checkpoint on disk (a checkpoint written on an interrupt, after
        # the last recorded step, gets the time of now).
        finished = budget.now() if budget.start is not None else spent_at.get(trainer.step, 0.0)
        for step, _ in trainer.checkpoints.checkpoints():
            if step not in spent_at:
                spent_at[step] = budget.elapsed.get(step, finished)
        ledger = {"budget_seconds": 60.0 * minutes, "clock": clock,
                  "spent_at": {str(k): v for k, v in sorted(spent_at.items())}}
        if result is not None:
            ledger["done"] = True
            ledger["result"] = {
                "steps": result.step, "train_seconds": round(finished, 1),
                "checkpoint": str(result.checkpoint),
                "parameters": trainer.num_parameters,
                "images_seen": result.step * recipe.batch_size,
                "recipe": vars(recipe), "rate": rate,
            }
        ledger_path.write_text(json.dumps(ledger, indent=2))
    return ledger["result"]


def main_job_argv(out: Path, args, *options: str, budget: Sequence[str]) -> list[str]:
    r"""The command line of one arm that runs the README's main job (``examples/shapes_demo.py``)
    in its own process: into :obj:`out`, with ``args.threads`` torch threads, ``args.seed``, 8
    samples per resolution and the arm's :obj:`options`; ``--smoke`` when ``args.smoke``, else
    :obj:`budget` (``["--steps", "2000"]``, ``["--minutes", "6"]``)."""
    return [sys.executable, str(ROOT / "examples" / "shapes_demo.py"), "--out", str(out),
            *options, "--threads", str(args.threads), "--seed", str(args.seed),
            "--num-samples", "8", *(["--smoke"] if args.smoke else budget)]


# --------------------------------------------------------------------------- sampling, metrics
@torch.no_grad()
def draw_samples(model, diffusion: MollifiedDiffusion, num: int, side: int, channels: int,
                 steps: int, batch: int, seed: int, device: torch.device,
                 context: int | Tensor | None = None, context_until: int = -1) -> Tensor:
    r""":obj:`num` samples (DDIM, :math:`\eta = 0`) at one side, in batches; batch :math:`b`
    seeded ``seed + b`` (so the same seeds give the same initial noise fields at every side),
    read through :obj:`context` if given (``sample(..., context=..., context_until=...)``).
    Returns float32 CPU images in :math:`[-1, 1]`, as sampled (mollified)."""
    out = []
    for b, start in enumerate(range(0, num, batch)):
        count = min(batch, num - start)
        images = sample(model, diffusion, shape=(side, side), num_samples=count,
                        channels=channels, steps=steps, sampler="ddim", eta=0.0,
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
