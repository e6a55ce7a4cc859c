r"""Device smoke benchmark (issue 16, #4): a training step on the device, by resolution, by
execution path of the operator blocks, eager and under ``torch.compile``.

One training step of the multiscale operator U-Net (:meth:`UNetConfig.preset` of the
resolution: 40.0 M parameters at 64², 77.2 M at 128²) on a fixed batch of the built-in
:class:`~pyg_infdiff.data.ContinuousShapes`, 4× subsampled as in training, is timed with every
:class:`~pyg_infdiff.nn.KernelIntegralConv` of the model forced onto

* the **graph** path: message passing over the radius edges of the batch, and
* the **dense** path: masked lattice convolutions on the pixels the nodes came from,

each **eager** and **compiled** (``model.compile()``: the forward is compiled, the loss,
backward and optimiser step are eager). The step is that of ``bench/subsampling.py``
(:class:`InfDiffStep`: loss, backward, gradient clipping at 1, AdamW, ``zero_grad``), the noise
and time steps drawn from a generator on the device.

* **Time**: medians of repeats, all cases of a resolution interleaved round-robin
  (:func:`_common.time_cases`); the first call (compilation for the compiled cases) is timed
  apart.
* **Peak memory** of one step above what was held before it (model, optimiser state, batch
  excluded): on CUDA ``torch.cuda.max_memory_allocated``, in this process; on the CPU one step in
  a fresh subprocess (:func:`_common.peak_memory`, the resident-set high-water mark; not with
  ``--smoke``).

Run::

    python bench/device_smoke.py                     # 64² and 128², on CUDA when present
    python bench/device_smoke.py --write             # also docs/benchmarks.md
    python bench/device_smoke.py --resolutions 64    # one resolution: compiling takes minutes
    python bench/device_smoke.py --smoke             # tiny model at 16², no memory on CPU

``--smoke`` compiles with the ``eager`` backend of :func:`torch.compile` (graph capture only,
no code generation: seconds); the full run with ``inductor``. Compilation starts afresh at every
resolution (``torch._dynamo.reset()``), so each is compiled for its own static shapes.
"""
from __future__ import annotations

import argparse
import copy
import gc
import time
from pathlib import Path

import torch
from _args import positive_int
from _common import format_bytes, peak_memory, time_cases
from _infdiff import make_diffusion, parse_preset, resolve_device, unet_config
from _publish import add_publish_args, markdown_table
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, machine_note
from subsampling import InfDiffStep, make_batch, make_model

from pyg_infdiff.nn import KernelIntegralConv

TITLE = "## On the device: training step by path, eager and compiled"
PATHS = ("graph", "dense")
MODES = ("eager", "compiled")
FULL = dict(resolutions=(64, 128), preset=None, batch_size=8, repeats=5, backend="inductor")
SMOKE = dict(resolutions=(16,), preset="tiny", batch_size=2, repeats=1, backend="eager")
RATE = 4.0


def build_step(preset: int | str, resolution: int, path: str, mode: str, batch_size: int,
               backend: str = "inductor", seed: int = 0, device: str = "cpu") -> InfDiffStep:
    r"""One case: the model (seeded) with its kernel convolutions on :obj:`path`, compiled
    with :obj:`backend` when :obj:`mode` is ``"compiled"``, its optimiser, a 4×-subsampled
    batch on :obj:`device` and a generator there (the factory of :func:`_common.peak_memory`)."""
    config = unet_config(preset)
    diffusion = make_diffusion(resolution)
    model, optimizer = make_model(config, device, seed)
    set_path(model, path)
    if mode == "compiled":
        model.compile(backend=backend)
    batch = make_batch(config, diffusion, resolution, RATE, batch_size, seed).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    return InfDiffStep(model, diffusion, batch, optimizer, generator)


def set_path(model: torch.nn.Module, path: str) -> None:
    r"""Forces every :class:`KernelIntegralConv` of :obj:`model` onto :obj:`path`."""
    for module in model.modules():
        if isinstance(module, KernelIntegralConv):
            module.path = path


def cuda_peak(step: InfDiffStep, device: torch.device) -> int:
    r"""``max_memory_allocated`` during one more call of :obj:`step` above the allocation
    before it."""
    gc.collect()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    rows = []
    for res in args.resolutions:
        preset = args.preset if args.preset is not None else res
        steps, first = {}, {}
        torch._dynamo.reset()  # compile afresh for this resolution's shapes
        base = build_step(preset, res, "graph", "eager", args.batch_size, device=str(device))
        for path in PATHS:
            for mode in MODES:
                name = f"{path}/{mode}"
                step = copy.copy(base)  # the batch is shared, the model and optimiser are not
                step.model = copy.deepcopy(base.model)
                set_path(step.model, path)
                if mode == "compiled":
                    step.model.compile(backend=args.backend)
                step.optimizer = torch.optim.AdamW(step.model.parameters(), lr=2e-4,
                                                   weight_decay=0.0)
                start = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                first[name] = time.perf_counter() - start
                steps[name] = step
        timings = time_cases(steps, args.repeats, warmup=1, device=device)
        for name, step in steps.items():
            path, mode = name.split("/")
            if device.type == "cuda":
                peak = cuda_peak(step, device)
            elif args.smoke:
                peak = None
            else:  # the CPU: a fresh process, so that memory freed earlier does not hide it
                peak = peak_memory(
                    f"{Path(__file__).resolve()}:build_step",
                    kwargs=dict(preset=preset, resolution=res, path=path, mode=mode,
                                batch_size=args.batch_size, backend=args.backend),
                    device="cpu", threads=args.threads,
                ).peak_bytes
            eager = timings[f"{path}/eager"].median
            rows.append(dict(resolution=res, path=path, mode=mode,
                             nodes=step.nodes_per_graph, edges=step.edges_per_graph,
                             ms=1e3 * timings[name].median,
                             speedup=eager / timings[name].median,
                             first_s=first[name], peak=peak))
        del steps, base
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return dict(rows=rows, device=str(device), batch_size=args.batch_size,
                repeats=args.repeats, backend=args.backend)


def report(args: argparse.Namespace, result: dict) -> str:
    headers = ["resolution", "path", "mode", "nodes / graph", "step (ms)", "vs eager",
               "first call (s)", "peak memory"]
    table = markdown_table(headers, [
        [f"{r['resolution']}²", r["path"], r["mode"], f"{r['nodes']:,}", f"{r['ms']:.1f}",
         f"{r['speedup']:.2f}×", f"{r['first_s']:.1f}",
         "—" if r["peak"] is None else format_bytes(r["peak"])]
        for r in result["rows"]])
    memory = ("`torch.cuda.max_memory_allocated` above the allocation before the step"
              if result["device"].startswith("cuda") else
              "resident-set high-water mark of one step in a fresh process, above the resident "
              "set before it (not measured with --smoke)")
    notes = [
        f"Device: {result['device']}. Batch {result['batch_size']}, {RATE:g}× subsampled; "
        f"median of {result['repeats']} repeats, the cases of a resolution interleaved; "
        f"`torch.compile` backend `{result['backend']}` (the first call compiles).",
        f"Peak memory: {memory}.",
        machine_note(result, load=False),
    ]
    return "\n".join([TITLE, "", table, "", *[f"- {n}" for n in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--resolutions", default=None,
                   help="comma-separated training resolutions (default: 64,128)")
    p.add_argument("--preset", type=parse_preset, default=None,
                   help="UNetConfig.preset of this resolution, or 'tiny', for every resolution "
                   "(default: each resolution's own preset; --smoke: tiny)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per step (default: 8)")
    p.add_argument("--repeats", type=positive_int, default=None,
                   help="timed steps per case (default: 5)")
    p.add_argument("--backend", default=None,
                   help="torch.compile backend (default: inductor; --smoke: eager)")
    add_threads_arg(p, "torch CPU threads (1 is far steadier on a loaded, shared machine)")
    add_device_arg(p)
    add_publish_args(p, "a tiny model at 16², one repeat, torch.compile's eager backend, no "
                        "peak memory on the CPU (for the tests)")
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    if args.preset is None:
        args.preset = defaults["preset"]
    if args.resolutions is None:
        args.resolutions = defaults["resolutions"]
    else:
        args.resolutions = tuple(int(r) for r in args.resolutions.split(","))
    for key in ("batch_size", "repeats", "backend"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "device_smoke", parse_args, run, report, argv, stamp=True)


if __name__ == "__main__":
    main()
