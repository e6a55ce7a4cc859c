r"""Benchmark (issue 16, #5): page-fault churn, system against user CPU time, with and without
:func:`~pyg_infdiff.training.allocator.keep_freed_memory`.

Each case runs in a fresh child process (so the allocator setting and the page cache of one
case cannot leak into another), with one torch thread: the preset-32 model (3 channels, random
weights, head re-drawn) either **samples** (DDIM on full lattices, ``--sample-steps`` steps) or
**trains** (``--train-steps`` AdamW steps of the diffusion loss on full lattices of random
smooth images, the dense path). The child calls ``keep_freed_memory()`` first in the "kept"
cases, exactly as the examples do, and nothing in the "default" cases; no environment variable
is set in either. The child reports the user and system CPU time and the minor page faults of
its loop (``getrusage(RUSAGE_SELF)`` around it: imports and model construction excluded) and
its peak resident memory. Sides 32², 64² (batch 64) and 128²
(batch 16). Goal (issue 16): system time at most 10% of user time at 64² with a batch of 64,
with no environment variable set.

Run::

    python bench/page_churn.py --write      # ~10 min on this machine
    python bench/page_churn.py --smoke      # 16², 1 step each (the tests)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _args import positive_int
from _common import ROOT, machine_description
from _publish import add_publish_args, markdown_table
from _skeleton import add_threads_arg, bench_main, bench_parser, report_footer

CHILD = r"""
import json, resource, sys, torch
keep = sys.argv[1] == "kept"
if keep:
    from pyg_infdiff.training.allocator import keep_freed_memory
    assert keep_freed_memory()
from pyg_infdiff.diffusion import MollifiedDiffusion, sample
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.testing import redraw_zero_layers
task, side, batch, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
torch.manual_seed(0)
model = MultiscaleOperatorUNet(UNetConfig.preset(32, in_channels=3, out_channels=3))
redraw_zero_layers(model, gain=0.5)
diffusion = MollifiedDiffusion(MollifiedNoise(0.5 / side, 2), parametrization="x0")
before = resource.getrusage(resource.RUSAGE_SELF)
if task == "sample":
    model.eval()
    sample(model, diffusion, shape=(side, side), num_samples=batch, channels=3, steps=steps,
           generator=torch.Generator().manual_seed(0), progress=False)
else:
    from types import SimpleNamespace
    lattice = LatticeIndex.full((side, side), batch)
    pos = lattice.pos()
    x = torch.tanh(3 * torch.sin(6 * pos[:, :1] + torch.arange(3) * pos[:, 1:]))
    data = SimpleNamespace(x=x, pos=pos, batch=lattice.batch, num_graphs=batch,
                           pixel=lattice.pixel,
                           lattice_shape=torch.tensor([[side, side]]).repeat(batch, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = diffusion.training_loss(model, data, generator=gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"user": after.ru_utime - before.ru_utime,
                  "sys": after.ru_stime - before.ru_stime,
                  "faults": after.ru_minflt - before.ru_minflt,
                  "rss_gib": after.ru_maxrss / 2**20}))
"""


def child_usage(mode: str, task: str, side: int, batch: int, steps: int) -> dict:
    r"""Runs one case in a child process; returns the CPU times and minor faults of its loop
    (model built, imports done) and its peak resident memory."""
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, task, str(side), str(batch),
                           str(steps)], cwd=ROOT, capture_output=True, text=True,
                          env={**_clean_env(), "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} {task} {side}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clean_env() -> dict:
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}


def run(args: argparse.Namespace) -> dict:
    rows = []
    for task in ("sample", "train"):
        for side, batch in args.cases:
            steps = args.sample_steps if task == "sample" else args.train_steps
            for mode in ("default", "kept"):
                usage = child_usage(mode, task, side, batch, steps)
                rows.append({"task": task, "side": side, "batch": batch, "steps": steps,
                             "mode": mode, **usage})
                print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "machine": machine_description(None)}


def report(args: argparse.Namespace, result: dict) -> str:
    table = []
    by = {(r["task"], r["side"], r["mode"]): r for r in result["rows"]}
    goal = None
    for task in ("sample", "train"):
        for side, batch in args.cases:
            off, on = by[task, side, "default"], by[task, side, "kept"]
            what = (f"sample {batch} at {side}², {off['steps']} DDIM steps" if task == "sample"
                    else f"train {off['steps']} steps at {side}², batch {batch}")
            table.append([what,
                          f"{off['sys']:.1f} / {off['user']:.1f} ({off['sys'] / off['user']:.0%})",
                          f"{on['sys']:.1f} / {on['user']:.1f} ({on['sys'] / on['user']:.0%})",
                          f"{off['faults'] / 1e6:.2f} M → {on['faults'] / 1e6:.2f} M",
                          f"{off['rss_gib']:.2f} → {on['rss_gib']:.2f}"])
            if side == 64 and batch == 64:  # the goal's case: the worse of sample and train
                goal = max(goal or 0.0, on["sys"] / on["user"])
    lines = ["## Page-fault churn: system against user CPU time (issue 16 #5)", "",
             markdown_table(["case (one thread)", "system / user s, default",
                             "system / user s, keep_freed_memory()", "minor page faults",
                             "peak RSS GiB"],
                            table), ""]
    if goal is not None:
        lines.append(f"- Goal (issue 16): system time ≤ 10% of user time at 64², batch 64, with "
                     f"no environment variable set: {goal:.1%} with `keep_freed_memory()` "
                     f"(the examples call it first), **{'met' if goal <= 0.10 else 'NOT met'}**.")
    lines += [
        "- Each case in a fresh child process; the 'default' child leaves glibc's allocator "
        "as it is, the other calls `pyg_infdiff.training.allocator.keep_freed_memory()` first; "
        "no `MALLOC_*` variable is set in either. Times and faults of the loop only (imports "
        "and model construction excluded). Preset 32 (3 channels) on full lattices, "
        "random weights with the zero-initialised layers re-drawn; training on random smooth "
        "images (dense path). Times from `getrusage`; on a shared machine the "
        "ratio system / user is steadier than either time.",
        *report_footer(args, {"device": "cpu", "machine": result["machine"]}),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    add_threads_arg(p, "torch CPU threads of this process (the children use one; CPU only: no "
                    "--device, page faults are a host matter)")
    add_publish_args(p, "16², batch 2, 1 step each (for the tests)")
    p.add_argument("--sample-steps", type=positive_int, default=10,
                   help="DDIM steps of a sample case")
    p.add_argument("--train-steps", type=positive_int, default=8,
                   help="optimiser steps of a train case")
    args = p.parse_args(argv)
    args.cases = [(32, 64), (64, 64), (128, 16)]
    if args.smoke:
        args.cases, args.sample_steps, args.train_steps = [(16, 2)], 1, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "page_churn", parse_args, run, report, argv)


if __name__ == "__main__":
    main()
