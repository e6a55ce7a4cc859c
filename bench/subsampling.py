r"""Benchmark (issue 5, #1): the payoff of subsampled training.

One training step of the multiscale operator U-Net (:meth:`UNetConfig.preset` of the training
resolution: 40.0 M parameters at 64², 77.2 M at 128²) on a fixed batch of the built-in
:class:`~pyg_infdiff.data.ContinuousShapes`, at subsampling rates 1, 2, 4 and 8 (rate :math:`r`
keeps :math:`\lceil P / r \rceil` of the :math:`P` pixels of each image as graph nodes, uniformly,
as :class:`~pyg_infdiff.data.GraphCollator` does in training). The step is what
:class:`~pyg_infdiff.training.Trainer` does per batch, EMA excluded: the loss of
:meth:`MollifiedDiffusion.training_loss` (time steps and mollified noise drawn inside), backward,
gradient-norm clipping at 1, an AdamW step and ``zero_grad``. Collation (mollify, subsample,
radius graph) happens once, outside the timed step; its own time is a separate column.

* **Time**: medians of repeats, all cases interleaved round-robin (:func:`_common.time_cases`),
  so the ratios to rate 1 are measured side by side under the same load. At each resolution the
  rates share one model and optimiser (the optimiser's cost does not depend on the data).
* **Peak memory**: one step in a fresh subprocess per case (:func:`_common.peak_memory`): on CPU
  the resident-set high-water mark above the resident set before the step (model, optimiser
  state and batch excluded); on CUDA ``max_memory_allocated`` above the allocation before it.

Goal (issue 5): at 128², rate 8 at least 3× faster and at least 4× less peak memory than rate 1
(the paper reports 1.6× and 2.46×).

Run::

    python bench/subsampling.py                       # prints a markdown table
    python bench/subsampling.py --write               # also docs/benchmarks.md + the plot
    python bench/subsampling.py --preset 32 --resolutions 64,128   # a smaller model
    python bench/subsampling.py --smoke               # tiny model, seconds (the tests)

This module also holds :class:`InfDiffStep`, the ∞-Diff training step that
``bench/vs_dense.py`` and ``bench/resolution.py`` reuse (with :func:`make_model`); the helpers
shared by all the ∞-Diff benchmarks are in ``bench/_infdiff.py``.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from _args import positive_int
from _common import format_bytes, machine_description, peak_memory, time_cases
from _infdiff import FIGURES, make_diffusion, parse_preset, resolve_device, unet_config
from _publish import add_publish_args, markdown_table, save_figure
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, report_footer
from _step_parts import PARTS, time_parts
from torch import nn
from torch_geometric.data import Batch

from pyg_infdiff.data import ContinuousShapes, GraphCollator, ShapesConfig
from pyg_infdiff.diffusion import MollifiedDiffusion
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig

GOAL_RESOLUTION, GOAL_RATE, GOAL_SPEEDUP, GOAL_MEMORY = 128, 8, 3.0, 4.0
# issue 14 #1: at 256², rate 8, >= 2x faster and >= 3x less activation memory than rate 1
GOAL14_RESOLUTION, GOAL14_SPEEDUP, GOAL14_MEMORY = 256, 2.0, 3.0
#: The batch size a GPU user would pick (the examples' default on CUDA), for the memory estimate.
GPU_BATCH = 16


# --------------------------------------------------------------------------- the step
def make_batch(config: UNetConfig, diffusion: MollifiedDiffusion, resolution: int, rate: float,
               batch_size: int, seed: int = 0, radius_edges: bool = True) -> Batch:
    r"""A training batch of :class:`ContinuousShapes` items (grey or RGB as the model) collated
    as in training: mollified, :obj:`rate`-subsampled (uniform), radius edges of the model's
    radius (without :obj:`radius_edges`, none: full lattices then take the dense path)."""
    data = ContinuousShapes(batch_size, resolution, ShapesConfig(channels=config.in_channels),
                            seed=seed)
    collator = GraphCollator(diffusion.mollifier, rate=rate,
                             radius=config.radius if radius_edges else None)
    return collator([data[i] for i in range(batch_size)],
                    generator=torch.Generator().manual_seed(seed))


@dataclass
class InfDiffStep:
    r"""One ∞-Diff training step on a fixed batch, as :class:`~pyg_infdiff.training.Trainer`
    takes it (EMA excluded): loss, backward, gradient clipping, AdamW step, ``zero_grad``.

    Args:
        model (MultiscaleOperatorUNet): The denoiser.
        diffusion (MollifiedDiffusion): The process (draws time steps and noise).
        batch (Batch): The collated batch, on the model's device.
        optimizer (torch.optim.Optimizer): AdamW over the model's parameters.
        generator (torch.Generator): Source of time steps and noise, on the device.
        grad_clip (float, optional): Gradient-norm clip. (default: :obj:`1.0`)
    """

    model: nn.Module
    diffusion: MollifiedDiffusion
    batch: Batch
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    grad_clip: float = 1.0

    def __call__(self) -> float:
        self.model.train()
        loss = self.diffusion.training_loss(self.model, self.batch, generator=self.generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    @property
    def nodes_per_graph(self) -> int:
        return self.batch.num_nodes // self.batch.num_graphs

    @property
    def edges_per_graph(self) -> int:
        edges = getattr(self.batch, "edge_index", None)
        return 0 if edges is None else edges.size(1) // self.batch.num_graphs


def make_model(config: UNetConfig, device: torch.device | str, seed: int = 0
               ) -> tuple[MultiscaleOperatorUNet, torch.optim.Optimizer]:
    r"""The model (seeded) and its AdamW optimiser with the library's default settings
    (:class:`~pyg_infdiff.training.TrainerConfig`: lr 2e-4, betas (0.9, 0.999), no weight
    decay)."""
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(config).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)


def build_step(preset: int | str, resolution: int, rate: float, batch_size: int,
               seed: int = 0, device: str = "cpu", radius_edges: bool = True) -> InfDiffStep:
    r"""Builds everything for one case and returns its step (the factory of
    :func:`_common.peak_memory`; :obj:`radius_edges` as in :func:`make_batch`)."""
    config = unet_config(preset)
    diffusion = make_diffusion(resolution)
    model, optimizer = make_model(config, device, seed)
    batch = make_batch(config, diffusion, resolution, rate, batch_size, seed,
                       radius_edges).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    return InfDiffStep(model, diffusion, batch, optimizer, generator)


def goal_line(name: str, value: float, goal: float, unit: str = "×") -> str:
    r"""``"name: 2.1× (goal ≥ 3×): **NOT met**"``."""
    verdict = "met" if value >= goal else "NOT met"
    return f"{name}: {value:.2f}{unit} (goal ≥ {goal:g}{unit}) — **{verdict}**"


# --------------------------------------------------------------------------- the benchmark
def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cases, steps, collate = {}, {}, {}
    for res in args.resolutions:
        config = unet_config(args.preset if args.preset is not None else res)
        diffusion = make_diffusion(res)
        model, optimizer = make_model(config, device, args.seed)
        data = ContinuousShapes(args.batch_size, res, ShapesConfig(channels=config.in_channels),
                                seed=args.seed)
        images = [data[i] for i in range(args.batch_size)]
        for rate in args.rates:
            collator = GraphCollator(diffusion.mollifier, rate=rate, radius=config.radius)
            batch = collator(images, generator=torch.Generator().manual_seed(args.seed))
            generator = torch.Generator(device=device).manual_seed(args.seed)
            step = InfDiffStep(model, diffusion, batch.to(device), optimizer, generator)
            steps[res, rate] = step
            cases[f"step {res} {rate}"] = step
            collate[f"collate {res} {rate}"] = (
                lambda c=collator, im=images: c(im, generator=torch.Generator().manual_seed(0)))
        print(f"{res}²: {model.summary()}", flush=True)
    print(f"timing {len(cases)} cases: {args.warmup} warm-up + {args.repeats} repeats, "
          f"interleaved", flush=True)
    timings = time_cases({**cases, **collate}, args.repeats, args.warmup, device)
    print(f"where the time goes: {args.parts}, rates {args.rates} ...", flush=True)
    parts = time_parts({(res, rate): steps[res, rate] for res in args.parts
                        for rate in args.rates}, args.repeats, args.warmup)
    params = {res: sum(p.numel() for p in steps[res, args.rates[0]].model.parameters())
              for res in args.resolutions}
    dense = {res: sum(p.numel() for p in steps[res, args.rates[0]].model.dense.parameters())
             for res in args.resolutions}
    del cases, steps
    memory = {}
    if not args.no_memory:
        factory = f"{Path(__file__).resolve()}:build_step"
        for res in args.resolutions:
            for rate in args.rates:
                print(f"peak memory {res}² rate {rate} ...", flush=True)
                memory[res, rate] = peak_memory(
                    factory, kwargs=dict(preset=args.preset if args.preset is not None else res,
                                         resolution=res, rate=rate, batch_size=args.batch_size,
                                         seed=args.seed, device=device.type),
                    warmup=1, device=device.type, threads=args.threads)
    rows = []
    for res in args.resolutions:
        base = timings[f"step {res} {args.rates[0]}"].median
        for rate in args.rates:
            t = timings[f"step {res} {rate}"]
            nodes = math.ceil(res * res / rate)
            row = {"resolution": res, "rate": rate, "nodes": nodes, "seconds": t.median,
                   "spread": t.spread, "speedup": base / t.median,
                   "collate": timings[f"collate {res} {rate}"].median}
            if memory:
                row["peak"] = memory[res, rate].peak_bytes
                row["baseline"] = memory[res, rate].baseline_bytes
                row["memory_reduction"] = memory[res, args.rates[0]].peak_bytes / max(
                    memory[res, rate].peak_bytes, 1)
                row["memory_method"] = memory[res, rate].method
            rows.append(row)
    return {"rows": rows, "params": params, "dense_params": dense, "device": device,
            "parts": parts, "machine": machine_description(device)}


def report(args: argparse.Namespace, result: dict, figure: Path | None) -> str:
    rows = result["rows"]
    has_mem = "peak" in rows[0]
    headers = ["resolution", "rate", "nodes / image", "step (s)", "speed-up", "collate (ms)"]
    if has_mem:
        headers += ["peak memory", "memory ÷"]
    table = []
    for r in rows:
        lo, hi = r["spread"]
        cells = [f"{r['resolution']}²", r["rate"], f"{r['nodes']:,}",
                 f"{r['seconds']:.3g} [{lo:.3g}–{hi:.3g}]", f"{r['speedup']:.2f}×",
                 f"{1e3 * r['collate']:.0f}"]
        if has_mem:
            cells += [format_bytes(r["peak"]), f"{r['memory_reduction']:.2f}×"]
        table.append(cells)
    preset = "tiny" if args.preset == "tiny" else args.preset
    models = ", ".join(
        f"{res}²: preset {preset if preset is not None else res} "
        f"({result['params'][res] / 1e6:.2f} M parameters)" for res in args.resolutions)
    lines = ["## Subsampling payoff: one training step vs subsampling rate", "",
             markdown_table(headers, table), ""]
    if figure is not None:
        lines += [f"![Speed-up and memory reduction vs subsampling rate]"
                  f"(_static/figures/{figure.name})", ""]
    lines += goal_lines(args, rows, has_mem)
    dense, total = result["dense_params"], result["params"]
    shares = ", ".join(f"{dense[res] / 1e6:.2f} M of {total[res] / 1e6:.2f} M at {res}²"
                       for res in args.resolutions)
    lines.append(
        f"- What does not shrink with the rate: the dense U-Net on the fixed grid ({shares} "
        "parameters), its activations, and the AdamW update over all parameters; only the "
        "operator blocks on the nodes, pooling and the noise evaluation scale with the number "
        "of nodes.")
    if result["parts"]:
        lines += ["", *parts_table(result["parts"]), ""]
    memory_note = ""
    if has_mem:
        method = rows[0]["memory_method"]
        memory_note = (
            " Peak memory: one step (after one warm-up step) in a fresh subprocess per case, "
            + ("resident-set high-water mark above the resident set before the step (model, "
               "optimiser state and batch excluded; glibc mmap threshold 64 KiB)"
               if method == "rss-hwm" else
               "`torch.cuda.max_memory_allocated` above the allocation before the step") + ".")
    lines += [
        f"- Model: {models}; AdamW (lr 2e-4), gradient clip 1, no EMA. Data: a fixed batch of "
        f"{args.batch_size} `ContinuousShapes` images per step, mollified (σ = half a pixel), "
        f"subsampled uniformly with radius edges of the model's radius, as `GraphCollator` "
        f"does in training; \"step\" = `training_loss` (time steps and mollified noise drawn "
        f"inside) + backward + clip + AdamW step; \"collate\" (not in the step) = mollify + "
        f"subsample + radius graph of the batch.",
        f"- Timing: median of {args.repeats} repeats after {args.warmup} warm-up, all cases "
        f"interleaved round-robin (bracket: {'quartiles' if args.repeats >= 4 else 'min–max'})"
        f"; ratios are to rate {args.rates[0]} at the same resolution.{memory_note}",
        *([gpu_batch_note(rows, args.batch_size)] if has_mem else []),
        *report_footer(args, result),
    ]
    return "\n".join(lines)


def goal_lines(args: argparse.Namespace, rows: list[dict], has_mem: bool) -> list[str]:
    r"""The goal lines: issue 5 #1 at 128² and issue 14 #1 at 256², rate 8, where measured."""
    lines = []
    goals = (("issue 5 #1", GOAL_RESOLUTION, GOAL_SPEEDUP, GOAL_MEMORY, "peak memory"),
             ("issue 14 #1", GOAL14_RESOLUTION, GOAL14_SPEEDUP, GOAL14_MEMORY,
              "activation memory"))
    for issue, res, speedup, memory, kind in goals:
        found = [r for r in rows if r["resolution"] == res and r["rate"] == GOAL_RATE]
        if not found or args.preset is not None:
            lines.append(f"- Goal ({issue}: the default {res}² model, rate {GOAL_RATE}, "
                         f"≥ {speedup:g}× faster and ≥ {memory:g}× less {kind}): not evaluated "
                         "by this configuration.")
            continue
        head = f"- Goal ({issue}) at {res}², rate {GOAL_RATE}: "
        lines.append(head + goal_line("speed-up", found[0]["speedup"], speedup))
        if has_mem:
            lines.append(head + goal_line(f"{kind.replace(' ', '-')} reduction",
                                          found[0]["memory_reduction"], memory))
    return lines


def parts_table(parts: dict[tuple[int, float], dict[str, float]]) -> list[str]:
    r"""Where the time goes, per resolution and rate, with the Amdahl bound: the speed-up over
    rate 1 if everything that scales with the nodes took no time at all."""
    headers = ["resolution", "rate", "step (s)", *[f"{p} (s, %)" for p in PARTS],
               "Amdahl bound"]
    table = []
    for (res, rate), t in parts.items():
        first = parts[res, min(r for q, r in parts if q == res)]
        fixed = first["dense U-Net"] + first["optimiser"]
        table.append([f"{res}²", rate, f"{t['step']:.3g}",
                      *[f"{t[p]:.3g} ({100 * t[p] / t['step']:.0f}%)" for p in PARTS],
                      f"{first['step'] / fixed:.2f}×"])
    return ["### Where the time goes", "", markdown_table(headers, table), "",
            "- " + " ".join(STEP_PARTS_DOC.split()),
            "- Amdahl bound: the step of the lowest rate divided by its dense U-Net and optimiser "
            "time, the parts that do not shrink with the nodes: no rate can be faster."]


STEP_PARTS_DOC = (
    "Parts timed one by one on the inputs they get in the step (`bench/_step_parts.py`): pool + "
    "unpool, the dense U-Net (forward and backward), the noise draw, the optimiser (clipping, "
    "AdamW, zero_grad); 'point levels and loss (rest)' is the step less those parts: the lift, "
    "the operator blocks on the nodes, the projection and the loss arithmetic (an estimate).")


def gpu_batch_note(rows: list[dict], batch_size: int) -> str:
    r"""The peak memory at the batch size a GPU user would pick, on paper: activations scale
    with the batch (the measurement excludes the model and the optimiser state)."""
    scale = GPU_BATCH / batch_size
    cells = ", ".join(f"{r['resolution']}² rate {r['rate']}: {format_bytes(r['peak'] * scale)}"
                      for r in rows if r["rate"] in (1, GOAL_RATE))
    return (f"- On paper, at batch {GPU_BATCH} (a GPU user's batch; not run here): the "
            f"activation memory above scales with the batch, ×{scale:g}: {cells}.")


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_mem = "peak" in rows[0]
    fig, axes = plt.subplots(1, 2 if has_mem else 1, figsize=(9 if has_mem else 4.5, 3.6),
                             squeeze=False)
    panels = [("speedup", "step speed-up vs rate 1", GOAL_SPEEDUP)]
    if has_mem:
        panels.append(("memory_reduction", "peak-memory reduction vs rate 1", GOAL_MEMORY))
    rates = sorted({r["rate"] for r in rows})
    for ax, (key, title, goal) in zip(axes[0], panels, strict=True):
        for res in sorted({r["resolution"] for r in rows}):
            sel = [r for r in rows if r["resolution"] == res]
            ax.plot([r["rate"] for r in sel], [r[key] for r in sel], "o-", label=f"{res}²")
        ax.plot(rates, rates, ":", color="grey", label="ideal (= rate)")
        ax.plot([GOAL_RATE], [goal], "r*", markersize=12, label=f"goal at {GOAL_RESOLUTION}²")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(rates, [str(r) for r in rates])
        ax.set_yticks(rates, [f"{r:g}×" for r in rates])
        ax.set_xlabel("subsampling rate")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--resolutions", default="64,128,256", help="comma list of image sides")
    p.add_argument("--rates", default="1,2,4,8,16", help="comma list of subsampling rates")
    p.add_argument("--parts", default=None,
                   help="comma list of the resolutions whose step is split into its parts "
                   "('where the time goes'; default: the largest; 'none' for none)")
    p.add_argument("--preset", type=parse_preset, default=None,
                   help="UNetConfig.preset to use at every resolution (default: the preset of "
                   "each resolution; 'tiny' for tests)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per step (default: 2 on CPU, 16 on CUDA)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    add_device_arg(p)
    add_threads_arg(p)
    p.add_argument("--seed", type=int, default=0)
    add_publish_args(p, "tiny model at 16², rates 1 and 4, one repeat (for the tests)",
                     figures=FIGURES, figure="plot")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.resolutions, args.rates = "tiny", "16", "1,4"
        args.repeats, args.warmup, args.batch_size = 1, 1, args.batch_size or 2
    args.resolutions = [int(r) for r in str(args.resolutions).split(",")]
    if args.parts is None:
        args.parts = [max(args.resolutions)]
    else:
        args.parts = [] if args.parts == "none" else [int(r) for r in args.parts.split(",")]
    if not set(args.parts) <= set(args.resolutions):
        p.error("--parts must be among --resolutions")
    args.rates = [float(r) if "." in r else int(r) for r in str(args.rates).split(",")]
    if args.batch_size is None:
        args.batch_size = 16 if resolve_device(args.device).type == "cuda" else 2
    if min(args.rates) < 1:
        p.error("rates must be >= 1")
    return args


def draw_figure(args: argparse.Namespace, result: dict) -> Path:
    return plot(result["rows"], args.figures / "bench_subsampling.png")


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "subsampling", parse_args, run, report, argv, figure=draw_figure)


if __name__ == "__main__":
    main()
