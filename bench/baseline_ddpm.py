r"""The dense baseline of the benchmarks: a ``diffusers`` :class:`UNet2DModel` with
:class:`DDPMScheduler` training and :class:`DDIMScheduler` sampling, at a chosen parameter count.

The architecture follows the documented defaults of ``diffusers`` (``UNet2DModel`` and the
``train_unconditional.py`` example) and of DDPM (Ho et al., 2020, the CIFAR-10 model):

* ``layers_per_block=2`` residual blocks per level, GroupNorm, SiLU, sinusoidal time embedding,
  the default mid block (resnet, attention, resnet) and ``attention_head_dim=8``;
* down to about 8² (``28 -> 14 -> 7``, ``32 -> 16 -> 8``, ``64 -> 32 -> 16 -> 8``, ...),
  channel multipliers ``(1, 2, 2)``, ``(1, 2, 2, 2)``, ``(1, 1, 2, 2, 4)``, ``(1, 1, 2, 2, 4, 4)``
  for 3, 4, 5, 6 levels;
* self-attention blocks at every level of resolution 16² or less except the first
  (``diffusers``' default puts them at every level but the first, DDPM at 16²);
* the base width :math:`w` (channels of the first level) is the one of ``8, 12, ..., 60, 64, 72,
  ..., 120, 128, 144, ..., 240, 256, 288, ...`` whose parameter count is nearest
  :obj:`target_params` (log scale); GroupNorm uses :math:`\gcd(w, 32)` groups
  (32, the default, whenever :math:`w` is a multiple of 32).

Training is the ``diffusers`` example's epsilon-prediction MSE over uniform timesteps of a
1000-step linear schedule, with the gradient norm clipped to 1; sampling is DDIM (:math:`\eta=0`)
over the same schedule, the pipeline's loop (``DDIMPipeline``).

This is a module of the benchmark scripts (run them as ``python bench/<script>.py``, which puts
``bench/`` on ``sys.path``); it needs ``diffusers`` (the ``bench`` extra). Run on its own, it
times the baseline: ``python bench/baseline_ddpm.py --resolution 28 --batch-size 64`` prints the
median training-step time, its peak memory and the time of 100-step DDIM sampling.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor

__all__ = [
    "build_dense_unet",
    "count_parameters",
    "dense_sample",
    "dense_step_factory",
    "dense_train_step",
    "dense_unet_config",
    "make_scheduler",
]

_MULTS = {3: (1, 2, 2), 4: (1, 2, 2, 2), 5: (1, 1, 2, 2, 4), 6: (1, 1, 2, 2, 4, 4)}
# Base widths tried: steps of 4 up to 64, then of 8, 16, 32 (6-12 % apart, so the parameter count
# lands within about 12 % of any target), keeping gcd(w, 32) >= 4 GroupNorm groups.
_WIDTHS = (
    *range(8, 64, 4), *range(64, 128, 8), *range(128, 256, 16), *range(256, 1025, 32)
)


def count_parameters(model: torch.nn.Module) -> int:
    r"""The number of parameters (trainable or not) of :obj:`model`."""
    return sum(p.numel() for p in model.parameters())


def _levels(resolution: int) -> int:
    if resolution < 8 or resolution != int(resolution):
        raise ValueError(f"'resolution' must be an int >= 8, got {resolution}")
    levels = 1 + int(math.floor(math.log2(resolution / 7)))
    levels = max(3, min(levels, max(_MULTS)))
    if resolution % 2 ** (levels - 1) != 0:
        raise ValueError(
            f"resolution {resolution} is not divisible by 2^{levels - 1}, the {levels - 1} "
            f"downsamplings of a {levels}-level UNet"
        )
    return levels


def dense_unet_config(
    resolution: int,
    channels: int,
    target_params: int | None = None,
    *,
    width: int | None = None,
    layers_per_block: int = 2,
    attention_resolution: int = 16,
) -> dict[str, Any]:
    r"""The keyword arguments of :class:`diffusers.UNet2DModel` for the dense baseline.

    Args:
        resolution (int): The image side length (e.g. 28, 32, 64); it must be divisible by
            :math:`2^{L-1}` for the :math:`L` levels chosen (3 up to 55², then one more per
            doubling, at most 6).
        channels (int): Image channels (1 grey, 3 RGB), both in and out.
        target_params (int, optional): Pick the base width whose parameter count is nearest
            this. Exclusive with :obj:`width`. (default: :obj:`None`)
        width (int, optional): The base width itself (a multiple of 4); with neither argument,
            32. (default: :obj:`None`)
        layers_per_block (int, optional): Residual blocks per level. (default: :obj:`2`)
        attention_resolution (int, optional): Self-attention at the levels (other than the
            first) of at most this resolution. (default: :obj:`16`)

    Returns:
        dict: Keyword arguments for :class:`UNet2DModel`.
    """
    if channels < 1:
        raise ValueError(f"'channels' must be >= 1, got {channels}")
    if target_params is not None and width is not None:
        raise ValueError(
            f"Give 'target_params' or 'width', not both (got {target_params} and {width})"
        )
    if target_params is not None and target_params <= 0:
        raise ValueError(f"'target_params' must be positive, got {target_params}")
    if width is not None and (width < 4 or width % 4 != 0):
        raise ValueError(f"'width' must be a positive multiple of 4, got {width}")
    if layers_per_block < 1:
        raise ValueError(f"'layers_per_block' must be >= 1, got {layers_per_block}")
    levels = _levels(resolution)
    down = []
    for level in range(levels):
        size = resolution // 2**level
        attn = level > 0 and size <= attention_resolution
        down.append("AttnDownBlock2D" if attn else "DownBlock2D")
    up = [name.replace("Down", "Up") for name in reversed(down)]

    def config(w: int) -> dict[str, Any]:
        return dict(
            sample_size=resolution,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=layers_per_block,
            block_out_channels=tuple(w * m for m in _MULTS[levels]),
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=math.gcd(w, 32),
        )

    if target_params is None:
        return config(32 if width is None else width)

    def size_of(w: int) -> int:
        with torch.device("meta"):
            return count_parameters(UNet2DModel(**config(w)))

    lo, hi = 0, len(_WIDTHS) - 1  # parameter count grows with the width: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size_of(_WIDTHS[mid]) < target_params:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda i: abs(math.log(size_of(_WIDTHS[i]) / target_params)))
    return config(_WIDTHS[best])


def build_dense_unet(
    resolution: int,
    channels: int,
    target_params: int | None = None,
    **kwargs: Any,
) -> UNet2DModel:
    r"""Builds the dense baseline :class:`diffusers.UNet2DModel` (see the module docstring).

    At 28², grey, :obj:`target_params=1_100_000` gives widths ``(24, 48, 48)``, attention at 14²
    and 7², 962,689 parameters.

    Args:
        resolution (int): The image side length.
        channels (int): Image channels.
        target_params (int, optional): The parameter count to approach.
            (default: :obj:`None`, base width 32)
        **kwargs: Further arguments of :func:`dense_unet_config`.

    Returns:
        UNet2DModel: The model, initialised by ``diffusers`` from the global RNG.
    """
    return UNet2DModel(**dense_unet_config(resolution, channels, target_params, **kwargs))


def make_scheduler(
    kind: str = "ddpm", num_train_timesteps: int = 1000, beta_schedule: str = "linear"
) -> SchedulerMixin:
    r"""The training (:obj:`"ddpm"`) or sampling (:obj:`"ddim"`) scheduler of the baseline, with
    the ``diffusers`` defaults (linear betas 1e-4 to 0.02, epsilon prediction, :math:`x_0`
    clipped to :math:`[-1, 1]` when sampling).

    Args:
        kind (str, optional): :obj:`"ddpm"` or :obj:`"ddim"`. (default: :obj:`"ddpm"`)
        num_train_timesteps (int, optional): Diffusion steps. (default: :obj:`1000`)
        beta_schedule (str, optional): A ``diffusers`` beta schedule (:obj:`"linear"`,
            :obj:`"squaredcos_cap_v2"`, ...). (default: :obj:`"linear"`)
    """
    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
    if kind not in classes:
        raise ValueError(f"'kind' must be 'ddpm' or 'ddim', got {kind!r}")
    return classes[kind](num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)


def dense_train_step(
    model: UNet2DModel,
    scheduler: SchedulerMixin,
    images: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    generator: torch.Generator | None = None,
    grad_clip: float | None = 1.0,
) -> float:
    r"""One optimiser step of epsilon-prediction DDPM training (the ``diffusers`` example):

    .. math::
        \mathcal{L} = \mathbb{E}_{t, \epsilon} \big\| \epsilon_\theta(\sqrt{\bar\alpha_t} x_0
        + \sqrt{1 - \bar\alpha_t}\, \epsilon, t) - \epsilon \big\|^2,
        \quad t \sim \mathcal{U}\{0, \dots, T-1\}.

    Forward, backward, gradient-norm clipping, ``optimizer.step()`` and
    ``optimizer.zero_grad(set_to_none=True)``; no EMA or learning-rate schedule (the caller's).

    Args:
        model (UNet2DModel): The network (put in train mode).
        scheduler (SchedulerMixin): Provides ``add_noise`` and the number of timesteps.
        images (torch.Tensor): Clean images in :math:`[-1, 1]`.
        optimizer (torch.optim.Optimizer): Over the model's parameters.
        generator (torch.Generator, optional): Draws noise and timesteps, on the images' device.
            (default: :obj:`None`, the global RNG)
        grad_clip (float, optional): Maximum gradient 2-norm; :obj:`None` disables.
            (default: :obj:`1.0`)

    Returns:
        float: The loss before the step.

    Shapes:
        - **images:** :math:`(B, C, H, W)`
    """
    if images.dim() != 4:
        raise ValueError(f"'images' must be [B, C, H, W], got shape {tuple(images.shape)}")
    model.train()
    num_steps = scheduler.config.num_train_timesteps
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    t = torch.randint(0, num_steps, (images.size(0),), generator=generator, device=images.device)
    noisy = scheduler.add_noise(images, noise, t)
    loss = F.mse_loss(model(noisy, t).sample, noise)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@torch.no_grad()
def dense_sample(
    model: UNet2DModel,
    scheduler: SchedulerMixin,
    num: int,
    resolution: int,
    steps: int = 100,
    generator: torch.Generator | None = None,
    *,
    eta: float = 0.0,
    batch_size: int | None = None,
) -> Tensor:
    r"""Samples images with the scheduler's loop, as ``DDIMPipeline`` / ``DDPMPipeline`` do:
    :math:`x_T \sim \mathcal{N}(0, I)`, then ``scheduler.step`` over ``steps`` timesteps.

    The scheduler is copied (from its config) first, so a training scheduler is not changed.
    Pass :func:`make_scheduler` ``("ddim")`` for DDIM (the benchmarks' 100-step default) or a
    :class:`DDPMScheduler` for ancestral sampling.

    Args:
        model (UNet2DModel): The network (put in eval mode).
        scheduler (SchedulerMixin): A DDIM or DDPM scheduler.
        num (int): Images to draw.
        resolution (int): Their side length.
        steps (int, optional): Inference steps. (default: :obj:`100`)
        generator (torch.Generator, optional): For the initial and any fresh noise, on the
            model's device. (default: :obj:`None`)
        eta (float, optional): DDIM's :math:`\eta` (ignored by DDPM). (default: :obj:`0.0`)
        batch_size (int, optional): Images per forward pass. (default: :obj:`None`, all)

    Returns:
        torch.Tensor: Samples in :math:`[-1, 1]`, float32 on the model's device.

    Shapes:
        - **output:** :math:`(\text{num}, C, \text{resolution}, \text{resolution})`
    """
    if num < 1 or steps < 1:
        raise ValueError(f"'num' and 'steps' must be >= 1, got num={num}, steps={steps}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"'batch_size' must be >= 1 or None, got {batch_size}")
    model.eval()
    param = next(model.parameters())
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(steps)
    shape = (model.config.in_channels, resolution, resolution)
    step_kwargs = {"eta": eta} if isinstance(sched, DDIMScheduler) else {}
    chunks = []
    for start in range(0, num, batch_size or num):
        count = min(batch_size or num, num - start)
        x = torch.randn((count, *shape), generator=generator, device=param.device)
        for t in sched.timesteps:
            out = model(x.to(param.dtype), t).sample
            x = sched.step(out, t, x, generator=generator, **step_kwargs).prev_sample
        chunks.append(x.float().clamp(-1.0, 1.0))
    return torch.cat(chunks)


def dense_step_factory(
    resolution: int,
    channels: int,
    target_params: int | None,
    batch_size: int,
    seed: int = 0,
    device: str = "cpu",
) -> Callable[[], float]:
    r"""Builds the baseline, an AdamW optimiser and a fixed random batch, and returns a
    zero-argument training step: the factory for :func:`_common.peak_memory`
    (``"baseline_ddpm:dense_step_factory"``) and for timing."""
    torch.manual_seed(seed)
    model = build_dense_unet(resolution, channels, target_params).to(device)
    scheduler = make_scheduler("ddpm")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device).manual_seed(seed)
    images = torch.rand(batch_size, channels, resolution, resolution, generator=gen,
                        device=device) * 2 - 1
    return lambda: dense_train_step(model, scheduler, images, optimizer, generator=gen)


def main() -> None:
    from _args import positive_int
    from _common import format_bytes, machine_description, peak_memory, time_cases

    parser = argparse.ArgumentParser(description="Times the dense DDPM baseline.")
    parser.add_argument("--resolution", type=positive_int, default=28)
    parser.add_argument("--channels", type=positive_int, default=1)
    parser.add_argument("--target-params", type=positive_int, default=1_100_000)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--num-samples", type=positive_int, default=16)
    parser.add_argument("--steps", type=positive_int, default=100, help="DDIM steps")
    parser.add_argument("--repeats", type=positive_int, default=5, help="training-step repeats")
    parser.add_argument("--sample-repeats", type=positive_int, default=1)
    parser.add_argument("--threads", type=positive_int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res, ch = args.resolution, args.channels
    step = dense_step_factory(res, ch, args.target_params, args.batch_size)
    model = build_dense_unet(res, ch, args.target_params)
    ddim = make_scheduler("ddim")
    gen = torch.Generator().manual_seed(0)
    train = time_cases({"train": step}, repeats=args.repeats, warmup=2)["train"]
    sample = time_cases(
        {"sample": lambda: dense_sample(model, ddim, args.num_samples, res, args.steps, gen)},
        repeats=args.sample_repeats, warmup=0,
    )["sample"]
    peak = peak_memory(
        "baseline_ddpm:dense_step_factory", args=[res, ch, args.target_params, args.batch_size]
    )
    cfg = model.config
    print(f"dense UNet2DModel {res}x{res}x{ch}: {count_parameters(model):,} parameters, "
          f"block_out_channels={tuple(cfg.block_out_channels)}, "
          f"layers_per_block={cfg.layers_per_block}, down={tuple(cfg.down_block_types)}")
    print(f"train step, batch {args.batch_size}: median {train.median * 1e3:.0f} ms {train!r}")
    print(f"train step peak memory ({peak.method}): {format_bytes(peak.peak_bytes)} "
          f"above a baseline of {format_bytes(peak.baseline_bytes)}")
    print(f"DDIM {args.steps} steps, {args.num_samples} images: median {sample.median:.1f} s, "
          f"{sample.median / args.num_samples * 1e3:.0f} ms per image")
    print(machine_description())


if __name__ == "__main__":
    main()
