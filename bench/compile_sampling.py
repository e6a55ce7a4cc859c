r"""Compiled against eager sampling (issue 16, #2): full-lattice sampling with the multiscale
operator U-Net, eager and under ``torch.compile``, at each resolution.

The model is :meth:`UNetConfig.preset` of ``--preset`` (32: the model ``examples/sample.py``
samples from a 32² checkpoint), untrained (speed does not depend on the weights; the output
projection, zero at initialisation, is drawn at random so that outputs can be compared), in eval
mode.
Each case is one :func:`~pyg_infdiff.diffusion.sample` run of ``--steps`` DDIM steps on full
lattices (``shape=(n, n)``, a batch of ``--batch-size``): the model then runs its dense path, the
full-lattice forward that compiles as one graph (``torch._dynamo.explain`` counts the graph
breaks, reported). The compiled model is ``torch.compile(model)`` (``inductor``, static shapes),
compiled afresh at every resolution (``torch._dynamo.reset()``); its first run (compilation) is
timed apart.

* **Time per sampling step**: the run's time divided by its steps; medians of ``--repeats``
  runs, eager and compiled interleaved round-robin (:func:`_common.time_cases`), side by side
  in one process.
* **Goal** (issue 16): compiled sampling at least 1.3× faster than eager on the CPU.

Run::

    python bench/compile_sampling.py                 # 32² and 64², CPU, 1 thread
    python bench/compile_sampling.py --write         # also docs/benchmarks.md
    python bench/compile_sampling.py --smoke         # tiny model at 16², eager backend
"""
from __future__ import annotations

import argparse
import copy
import gc
import time
from collections.abc import Callable

import torch
from _args import positive_int
from _common import time_cases
from _infdiff import make_diffusion, parse_preset, resolve_device, unet_config
from _publish import add_publish_args, markdown_table
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, machine_note
from subsampling import goal_line

from pyg_infdiff.diffusion import MollifiedDiffusion, SampleOutput, sample
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import MultiscaleOperatorUNet

TITLE = "## torch.compile: full-lattice sampling, compiled against eager"
GOAL = 1.3
FULL = dict(resolutions=(32, 64), preset=32, batch_size=8, steps=5, repeats=5,
            backend="inductor")
SMOKE = dict(resolutions=(16,), preset="tiny", batch_size=2, steps=2, repeats=1,
             backend="eager")


def graph_breaks(model: MultiscaleOperatorUNet, resolution: int, batch_size: int,
                 device: torch.device) -> int:
    r"""The graph breaks of the model's full-lattice forward (``torch._dynamo.explain``)."""
    lattice = LatticeIndex.full((resolution, resolution), batch_size, device)
    pos = lattice.pos()
    x = torch.randn(pos.size(0), model.config.in_channels, device=device)
    t = torch.full((batch_size,), 500, device=device)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x, pos, t, lattice.batch, lattice=lattice)
    torch._dynamo.reset()
    return explained.graph_break_count


def sampling_run(model: torch.nn.Module, diffusion: MollifiedDiffusion, resolution: int,
                 channels: int, args: argparse.Namespace, device: torch.device
                 ) -> Callable[[], SampleOutput]:
    r"""One case: a :func:`sample` run on full lattices, seeded, as a zero-argument call."""
    def call() -> SampleOutput:
        return sample(model, diffusion, shape=(resolution, resolution),
                      num_samples=args.batch_size, channels=channels, steps=args.steps,
                      progress=False, device=device,
                      generator=torch.Generator(device).manual_seed(0))
    return call


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    config = unet_config(args.preset)
    torch.manual_seed(0)
    eager = MultiscaleOperatorUNet(config).to(device).eval()
    torch.nn.init.normal_(eager.proj.weight, std=0.02)  # non-zero outputs, to compare them
    rows = []
    for res in args.resolutions:
        torch._dynamo.reset()  # compile afresh for this resolution's shapes
        breaks = graph_breaks(eager, res, args.batch_size, device)
        compiled = torch.compile(copy.deepcopy(eager), backend=args.backend, dynamic=False)
        diffusion = make_diffusion(res)

        cases = {name: sampling_run(model, diffusion, res, config.in_channels, args, device)
                 for name, model in (("eager", eager), ("compiled", compiled))}
        first = {}
        for name, fn in cases.items():
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first[name] = time.perf_counter() - start
            if name == "eager":
                reference = out.values
            else:  # the compiled model computes what the eager one does
                error = float((out.values - reference).abs().max())
        timings = time_cases(cases, args.repeats, warmup=0, device=device)
        step = {name: timings[name].median / args.steps for name in cases}
        for name in cases:
            rows.append(dict(resolution=res, mode=name, ms=1e3 * step[name],
                             speedup=step["eager"] / step[name], first_s=first[name],
                             breaks=breaks, error=error))
        del compiled, cases
        gc.collect()
    return dict(rows=rows, device=str(device), preset=args.preset,
                parameters=eager.num_parameters(), batch_size=args.batch_size,
                steps=args.steps, repeats=args.repeats, backend=args.backend)


def report(args: argparse.Namespace, result: dict) -> str:
    headers = ["resolution", "mode", "per sampling step (ms)", "vs eager", "first run (s)",
               "graph breaks", "max abs. difference"]
    table = markdown_table(headers, [
        [f"{r['resolution']}²", r["mode"], f"{r['ms']:.1f}", f"{r['speedup']:.2f}×",
         f"{r['first_s']:.1f}", str(r["breaks"]) if r["mode"] == "compiled" else "—",
         f"{r['error']:.1e}" if r["mode"] == "compiled" else "—"]
        for r in result["rows"]])
    goals = [goal_line(f"compiled vs eager at {r['resolution']}²", r["speedup"], GOAL)
             for r in result["rows"] if r["mode"] == "compiled"]
    notes = [
        f"Model: `UNetConfig.preset({result['preset']!r})`, "
        f"{result['parameters'] / 1e6:.2f} M parameters, untrained, eval mode. Each run: "
        f"`sample(..., shape=(n, n), steps={result['steps']})`, DDIM, a batch of "
        f"{result['batch_size']}; time per step = run time / steps, median of "
        f"{result['repeats']} runs, eager and compiled interleaved.",
        f"Compiled: `torch.compile(model, backend='{result['backend']}', dynamic=False)`; the "
        "first run compiles. Graph breaks: `torch._dynamo.explain` of the full-lattice forward; "
        "max abs. difference: between the compiled and the eager samples.",
        *goals,
        f"Device: {result['device']}; torch threads: {args.threads}. "
        + machine_note(result, load=True),
    ]
    return "\n".join([TITLE, "", table, "", *[f"- {n}" for n in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--resolutions", default=None,
                   help="comma-separated sampling resolutions (default: 32,64)")
    p.add_argument("--preset", type=parse_preset, default=None,
                   help="UNetConfig.preset, or 'tiny' (default: 32; --smoke: tiny)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples per run (default: 8)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="DDIM steps per run (default: 5)")
    p.add_argument("--repeats", type=positive_int, default=None,
                   help="timed runs per case (default: 5)")
    p.add_argument("--backend", default=None,
                   help="torch.compile backend (default: inductor; --smoke: eager)")
    add_threads_arg(p)
    add_device_arg(p)
    add_publish_args(p, "a tiny model at 16², one repeat, torch.compile's eager backend (for "
                        "the tests)")
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    if args.resolutions is None:
        args.resolutions = defaults["resolutions"]
    else:
        args.resolutions = tuple(int(r) for r in args.resolutions.split(","))
    for key in ("preset", "batch_size", "steps", "repeats", "backend"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "compile_sampling", parse_args, run, report, argv, stamp=True)


if __name__ == "__main__":
    main()
