r"""∞-Diff helpers shared by the benchmark scripts of issue 5 (``subsampling.py``,
``vs_dense.py``, ``resolution.py``, ``consistency.py``, ``quality.py``,
``beyond_resolution.py``): the models and diffusion process they build, the device they run
on, time-budgeted resumable training.

* :func:`unet_config`, :func:`parse_preset`, :func:`make_diffusion`: the model of a benchmark
  (a :meth:`UNetConfig.preset` or the ``"tiny"`` smoke-test model) and the library's default
  process at a training resolution.
* :func:`resolve_device`, :data:`FIGURES`: where a benchmark runs and where its figures go
  (the command line it reports is :func:`_skeleton.command_line`).
* :func:`train_infdiff` (with :class:`Recipe`): trains an ∞-Diff model for a wall-clock budget
  with :class:`~pyg_infdiff.training.Trainer`, resumably; its checkpoints load with
  :func:`pyg_infdiff.training.load_pretrained`.
* :func:`main_job_argv`: the command line of an arm that runs the README's main job.

Sampling and the sample metrics are :mod:`_scoring`'s.

Like :mod:`_common`, import it as ``from _infdiff import ...`` (``python bench/<script>.py``
puts ``bench/`` on ``sys.path``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from _args import positive_int
from _common import ROOT
from _publish import add_publish_args
from _scoring import MAIN_JOB_BENCH_SHAPES, draw_samples
from _skeleton import add_threads_arg
from torch.utils.data import Dataset

from pyg_infdiff.data import (
    GraphCollator,
    MollifiedCache,
    make_loader,
)
from pyg_infdiff.diffusion import AutoencoderLoss, MollifiedDiffusion
from pyg_infdiff.models import (
    DiffusionAutoencoder,
    EncoderConfig,
    MultiscaleOperatorUNet,
    UNetConfig,
)
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise
from pyg_infdiff.training import (
    Pretrained,
    Trainer,
    TrainerConfig,
    diffusion_to_dict,
    load_pretrained,
)

__all__ = [
    "FIGURES",
    "LossBudget",
    "Recipe",
    "add_main_job_arm_args",
    "main_job_argv",
    "main_job_arm_smoke",
    "make_diffusion",
    "parse_preset",
    "resolve_device",
    "sample_main_job_arm",
    "train_infdiff",
    "unet_config",
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
    # the noise's width in pixels of the training resolution, if not the data mollifier's
    noise_sigma_pixels: float | None = None
    parametrization: str = "mollified_eps"
    snr_gamma: float | None = None  # Min-SNR-γ loss weights (examples/shapes_demo.py: 5)
    # how the training nodes are drawn (pyg_infdiff.graph.subsample's method)
    subsample_method: str = "uniform"


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
    noise_sigma = (sigma if recipe.noise_sigma_pixels is None
                   else recipe.noise_sigma_pixels / resolution)
    diffusion = MollifiedDiffusion(MollifiedNoise(noise_sigma, config.ndim),
                                   mollifier=GaussianMollifier(sigma),
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
    collator = GraphCollator(mollifier, rate=rate, method=recipe.subsample_method,
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


def add_main_job_arm_args(parser: argparse.ArgumentParser, out: Path,
                          num_samples: int) -> None:
    r"""The options of a benchmark whose arms run the main job (:func:`main_job_argv`) and are
    sampled by :func:`sample_main_job_arm`: ``--num-samples`` (default :obj:`num_samples`),
    ``--sample-steps``, ``--sample-batch``, ``--out`` (the arms' cache folder, default
    :obj:`out`), ``--threads`` (of each arm's demo), ``--seed`` and the publishing options,
    whose ``--smoke`` runs the demo's own ``--smoke`` per arm, then 8 samples of 2 steps scored
    by SWD (:func:`main_job_arm_smoke`)."""
    parser.add_argument("--num-samples", type=positive_int, default=num_samples)
    parser.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps")
    parser.add_argument("--sample-batch", type=positive_int, default=32)
    parser.add_argument("--out", type=Path, default=out, help="cache folder of the arms")
    add_threads_arg(parser, "torch CPU threads of each arm's demo")
    parser.add_argument("--seed", type=int, default=0)
    add_publish_args(parser, "the demo's --smoke (3 tiny steps) per arm, 8 samples of 2 "
                     "steps, SWD (tests)", figures=FIGURES)


def main_job_arm_smoke(args: argparse.Namespace) -> None:
    r"""With ``--smoke``, the sampling of :func:`add_main_job_arm_args`'s help: 8 samples of 2
    steps, in one batch."""
    if args.smoke:
        args.num_samples, args.sample_steps, args.sample_batch = 8, 2, 8


def sample_main_job_arm(folder: Path, args: argparse.Namespace,
                        side: int) -> tuple[Pretrained, dict]:
    r"""Samples the main job's run in :obj:`folder` (EMA weights): ``args.num_samples`` samples
    at :obj:`side`² (DDIM, :math:`\eta = 0`, ``args.sample_steps`` steps, seeded
    ``args.seed + 1``, as every arm). Returns the loaded run and ``{"steps", "train_seconds",
    "samples", "sample_seconds"}`` (the training time from its ``log.jsonl``)."""
    pretrained = load_pretrained(folder, weights="ema")
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    start = time.perf_counter()
    samples = draw_samples(pretrained.model, pretrained.diffusion, args.num_samples, side, 3,
                           args.sample_steps, args.sample_batch, args.seed + 1,
                           torch.device("cpu"))
    return pretrained, {"steps": pretrained.step,
                        "train_seconds": max(entry.get("elapsed_s", 0.0) for entry in log),
                        "samples": samples, "sample_seconds": time.perf_counter() - start}


def main_job_argv(out: Path, args, *options: str, budget: Sequence[str],
                  shapes: str = MAIN_JOB_BENCH_SHAPES) -> list[str]:
    r"""The command line of one arm that runs the README's main job (``examples/shapes_demo.py``)
    in its own process: into :obj:`out`, on the shapes named :obj:`shapes` (by default
    ``_scoring.MAIN_JOB_BENCH_SHAPES``), with ``args.threads`` torch threads, ``args.seed``,
    8 samples per resolution and the arm's :obj:`options`; ``--smoke`` when ``args.smoke``,
    else :obj:`budget` (``["--steps", "2000"]``, ``["--minutes", "6"]``)."""
    return [sys.executable, str(ROOT / "examples" / "shapes_demo.py"), "--out", str(out),
            "--shapes", shapes, *options, "--threads", str(args.threads),
            "--seed", str(args.seed), "--num-samples", "8",
            *(["--smoke"] if args.smoke else budget)]
