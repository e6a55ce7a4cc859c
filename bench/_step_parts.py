r"""Where the time of an ∞-Diff training step goes: the parts of
:class:`~pyg_infdiff.models.MultiscaleOperatorUNet` timed one by one on the inputs they get in the
step.

One step runs with forward hooks that record the inputs of the pool, the dense U-Net and the
unpool; each part then runs again on copies of those inputs, forward and backward (a random
gradient of its output's shape). The noise draw (:meth:`MollifiedDiffusion.training_noise`, as the
step draws it) is timed the same way; the cases of all the steps measured (every rate of a
resolution) are interleaved (:func:`_common.time_cases`), medians. The optimiser (gradient
clipping, AdamW step, ``zero_grad``) is timed after an untimed backward, once per model. The point
levels (lift, operator blocks, projection) and the loss arithmetic are the rest: the step's median
less the parts. Parts timed alone miss the little the step shares between them (caches, allocator),
so the rest is an estimate, not a measurement of its own.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping

import torch
from _common import synchronize, time_cases

from pyg_infdiff.graph import LatticeIndex

__all__ = ["PARTS", "part_cases", "time_parts"]

#: The parts, in the order of the tables.
PARTS = ("point levels and loss (rest)", "pool + unpool", "dense U-Net", "noise draw",
         "optimiser")


def _capture(step) -> dict[str, tuple[tuple, dict]]:
    r"""The inputs of the pool, the dense U-Net and the unpool in one step of :obj:`step`."""
    model = step.model
    seen: dict[str, tuple[tuple, dict]] = {}

    def hook(name: str) -> Callable:
        def record(module, args, kwargs):
            seen[name] = (tuple(a.detach() if torch.is_tensor(a) else a for a in args),
                          dict(kwargs))
        return record

    handles = [getattr(model, name).register_forward_pre_hook(hook(name), with_kwargs=True)
               for name in ("pool", "dense", "unpool")]
    try:
        step()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _forward_backward(module: torch.nn.Module, args: tuple, kwargs: dict,
                      differentiable: tuple[int, ...]) -> Callable[[], None]:
    r"""A call of :obj:`module` on copies of :obj:`args` (those at :obj:`differentiable`
    requiring gradients) followed by a backward pass of a fixed random gradient."""
    gen = torch.Generator(device=args[0].device).manual_seed(0)
    with torch.no_grad():
        out = module(*args, **kwargs)
    grad = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)

    def call() -> None:
        inputs = [a.clone().requires_grad_() if i in differentiable else a
                  for i, a in enumerate(args)]
        module(*inputs, **kwargs).backward(grad)

    return call


def part_cases(step) -> dict[str, Callable[[], object]]:
    r"""The timed cases of one training step (a ``bench/subsampling.py`` :class:`InfDiffStep`):
    ``"step"`` itself and each part of :data:`PARTS` but the rest and the optimiser, on the
    inputs they get in the step."""
    model, batch, device = step.model, step.batch, step.batch.pos.device
    model.train()
    seen = _capture(step)
    pool_args, pool_kwargs = seen["pool"]
    dense_args, dense_kwargs = seen["dense"]
    unpool_args, unpool_kwargs = seen["unpool"]
    pooling = [_forward_backward(model.pool, pool_args, pool_kwargs, (0,)),
               _forward_backward(model.unpool, unpool_args, unpool_kwargs, (0,))]
    channels = model.config.in_channels
    gen = torch.Generator(device=device).manual_seed(0)
    lattice = LatticeIndex.from_data(batch) if hasattr(batch, "pixel") else None

    def noise() -> None:
        step.diffusion.training_noise(batch.num_graphs, channels, batch.pos, batch.batch,
                                      lattice=lattice, generator=gen)

    model.zero_grad(set_to_none=True)
    return {
        "step": step,
        "pool + unpool": lambda: [call() for call in pooling],
        "dense U-Net": _forward_backward(model.dense, dense_args, dense_kwargs, (0, 1)),
        "noise draw": noise,
    }


def time_parts(steps: Mapping[Hashable, object], repeats: int = 3,
               warmup: int = 1) -> dict[Hashable, dict[str, float]]:
    r"""Median seconds of each of :data:`PARTS` in the training steps :obj:`steps` (``bench/
    subsampling.py`` :class:`InfDiffStep` objects, by name), and ``"step"``, the whole step:
    every case of every step interleaved with all the others (:func:`_common.time_cases`), so
    that load changes during the run fall on all of them alike. The optimiser is timed once
    per model (it does not depend on the data) and shared by the steps of that model."""
    cases, device = {}, None
    for name, step in steps.items():
        device = step.batch.pos.device
        for part, call in part_cases(step).items():
            cases[name, part] = call
    times = {key: t.median for key, t in time_cases(cases, repeats, warmup, device).items()}
    optimiser: dict[int, float] = {}
    out = {}
    for name, step in steps.items():
        key = id(step.model)
        if key not in optimiser:
            optimiser[key] = _optimiser_seconds(step, repeats)
        parts = {part: times[name, part] for part in ("step", *PARTS[1:4])}
        parts["optimiser"] = optimiser[key]
        parts[PARTS[0]] = parts["step"] - sum(parts[p] for p in PARTS[1:])
        out[name] = parts
    return out


def _optimiser_seconds(step, repeats: int) -> float:
    r"""Median seconds of clipping, the AdamW step and ``zero_grad``, each after an untimed
    forward and backward pass."""
    seconds = []
    for _ in range(repeats):
        loss = step.diffusion.training_loss(step.model, step.batch, generator=step.generator)
        loss.backward()
        synchronize(step.batch.pos.device)
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(step.model.parameters(), step.grad_clip)
        step.optimizer.step()
        step.optimizer.zero_grad(set_to_none=True)
        synchronize(step.batch.pos.device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)
