r"""Benchmark of :class:`~pyg_infdiff.nn.KernelIntegralConv`: graph path vs dense path vs a
plain depthwise ``conv2d``, plus the direct/FFT crossover and the convergence of the two
normalisations between resolutions.

Speed (``--speed``): C = 64 channels, batch 1, float32, forward + backward, radius
3.5 pixels at each resolution (a 7×7 box, 37 taps), on 64², 128², 256² lattices fully or
4×/8× subsampled (uniform). Per case, interleaved, medians of repeats:

* **graph**: message passing over the precomputed radius graph (search not timed);
* **dense**: the layer's masked lattice convolution (direct or FFT, chosen by the layer);
* **conv2d**: ``F.conv2d(..., groups=C)`` on the full lattice with the same support and the
  kernel precomputed (no normalisation, no channel mixing): the floor for a dense layer.

Crossover (``--crossover``): direct vs FFT dense path on a full 128² lattice for growing radii,
and the unit costs the layer's cost model uses (``GRAPH_COST``, ``DIRECT_COST``, ``FFT_COST``).

Convergence (``--convergence``): DESIGN §2 protocol — a 2-channel smooth field, radius 0.08,
read at 300 fixed query points through the bipartite form from 64², 128², 256² lattices;
relative differences between consecutive resolutions for both normalisations, 8 kernel seeds.

Run: ``python bench/kernel_conv.py`` (all three parts; prints markdown; the published tables used
``--repeats 5 --threads 1`` on the shared 2-core box); ``--write`` replaces the section between
``<!-- bench:operator -->`` and ``<!-- /bench:operator -->`` in ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import DOC, write_section

from pyg_infdiff.graph import LatticeIndex, lattice, radius, radius_graph, subsample
from pyg_infdiff.nn.kernel import fast_fft_size
from pyg_infdiff.nn.kernel_conv import KernelIntegralConv

CHANNELS, RADIUS_PX = 64, 3.5


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _fwd_bwd(conv: KernelIntegralConv, x: torch.Tensor, pos: torch.Tensor, **kw) -> None:
    conv.path = "graph" if kw.get("edge_index") is not None else "dense"
    conv.zero_grad(set_to_none=True)
    x.grad = None
    conv(x, pos, **kw).sum().backward()


def speed(sizes: list[int], rates: list[int], batch: int, repeats: int, max_edge_channels: float):
    gen = torch.Generator().manual_seed(0)
    results = {}
    for n in sizes:
        r = RADIUS_PX / n
        torch.manual_seed(0)
        conv = KernelIntegralConv(CHANNELS, CHANNELS, r)
        image = torch.randn(batch, CHANNELS, n, n, generator=gen)
        image_cl = image.contiguous(memory_format=torch.channels_last).requires_grad_()
        image.requires_grad_()
        with torch.no_grad():
            st = conv.kernel.on_lattice((n, n))
            kappa = conv.kernel(st.offset) * (st.inside | st.border).unsqueeze(-1)
            weight = kappa.t().reshape(CHANNELS, 1, *st.box).flip(2, 3).contiguous()
        weight.requires_grad_()
        full = LatticeIndex.full((n, n), batch)
        full_pos = full.pos()
        full_x = torch.randn(full_pos.size(0), CHANNELS, generator=gen, requires_grad=True)
        for rate in rates:
            pixel = (
                torch.arange(n * n) if rate == 1 else subsample((n, n), rate=rate, generator=gen)
            )
            index = LatticeIndex(
                (n, n),
                pixel.repeat(batch),
                torch.arange(batch).repeat_interleave(pixel.numel()),
                batch,
            )
            pos = index.pos()
            x = torch.randn(pos.size(0), CHANNELS, generator=gen, requires_grad=True)
            edge_index = radius_graph(pos, r, index.batch, loop=True)
            fns = {
                "dense": lambda c=conv, x=x, p=pos, i=index: _fwd_bwd(c, x, p, lattice=i),
                "conv2d": lambda x=image, w=weight, h=st.half: F.conv2d(
                    x, w, padding=h, groups=CHANNELS
                ).sum().backward(),
                "conv2d_cl": lambda x=image_cl, w=weight, h=st.half: F.conv2d(
                    x, w, padding=h, groups=CHANNELS
                ).sum().backward(),
            }
            if rate != 1:
                fns["dense_full"] = lambda c=conv, x=full_x, p=full_pos, i=full: _fwd_bwd(
                    c, x, p, lattice=i
                )
            if edge_index.size(1) * CHANNELS <= max_edge_channels:
                fns["graph"] = lambda c=conv, x=x, p=pos, e=edge_index, i=index: _fwd_bwd(
                    c, x, p, edge_index=e, lattice=i
                )
                fns["generic"] = lambda c=conv, x=x, p=pos, e=edge_index: _fwd_bwd(
                    c, x, p, edge_index=e
                )
            t = median_ms(fns, repeats)
            t.setdefault("dense_full", t["dense"])
            conv.path = "auto"
            auto = "graph" if conv.plan(edge_index, index) == "graph" else "dense"
            results[(n, rate)] = dict(
                t, edges=edge_index.size(1), nodes=pos.size(0), auto=auto,
                method=conv.plan(None, index),
            )
    return table(results, batch, repeats)


def table(results: dict, batch: int, repeats: int) -> tuple[list[str], list[str]]:
    rows = [
        "| lattice | nodes | edges | graph generic (ms) | graph (ms) | dense (ms) | dense full "
        "(ms) | conv2d (ms) | conv2d CL (ms) | dense full / conv2d | graph / dense full | "
        "auto picks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    goal_full, goal_sub = [], []
    for (n, rate), res in results.items():
        graph = res.get("graph")

        def ms(key: str, res=res) -> str:
            return f"{res[key]:.1f}" if key in res else "skipped"

        vs_full = f"{graph / res['dense_full']:.2f}×" if graph is not None else "–"
        method = res["method"]
        fastest = "graph" if graph is not None and graph < res["dense"] else "dense"
        label = f"{n}²" + ("" if rate == 1 else f" / {rate}")
        rows.append(
            f"| {label} | {res['nodes']:,} | {res['edges']:,} | {ms('generic')} | {ms('graph')} "
            f"| {res['dense']:.1f} ({method}) | {res['dense_full']:.1f} | {res['conv2d']:.1f} | "
            f"{res['conv2d_cl']:.1f} | {res['dense_full'] / res['conv2d']:.2f}× | {vs_full} | "
            f"{res['auto']} ({'ok' if res['auto'] == fastest else 'fastest: ' + fastest}) |"
        )
        if rate == 1:
            goal_full.append(res["dense"] / res["conv2d"] <= 1.5)
        elif rate >= 4 and graph is not None:
            goal_sub.append(graph < res["dense_full"])
    notes = [
        "Goal: dense path on full lattices within 1.5× of the plain depthwise conv2d: "
        + ("**met**" if goal_full and all(goal_full) else "**not met**")
        + f" ({sum(goal_full)}/{len(goal_full)} sizes).",
        "Goal: graph path on ≥4× subsampled nodes faster than the dense path on the full "
        "lattice: " + ("**met**" if goal_sub and all(goal_sub) else "**not met**")
        + f" ({sum(goal_sub)}/{len(goal_sub)} cases).",
        f"C = {CHANNELS}, batch {batch}, radius {RADIUS_PX} px (37 taps), float32, forward + "
        f"backward, median of {repeats} repeats (cases interleaved); neighbour search not timed. "
        "*graph*: the layer's graph path given the lattice (kernel tabulated per offset); "
        "*graph generic*: without it (kernel MLP on every edge, as on arbitrary point clouds); "
        "*dense full*: the dense path on the full lattice of that size; *conv2d*: plain "
        "`F.conv2d(groups=C)` of a contiguous NCHW image, *CL*: of a channels-last one (the "
        "layout the layer's dense path uses), both with precomputed weights and without "
        "normalisation or channel mixing.",
    ]
    return rows, notes


def crossover(n: int, radii_px: list[float], repeats: int) -> tuple[list[str], dict[str, float]]:
    gen = torch.Generator().manual_seed(1)
    index = LatticeIndex.full((n, n))
    pos = index.pos()
    x = torch.randn(n * n, CHANNELS, generator=gen, requires_grad=True)
    rows = [
        "| radius (px) | taps in box | direct (ms) | FFT (ms) | layer picks |",
        "|---:|---:|---:|---:|---|",
    ]
    units: dict[str, list[float]] = {"direct": [], "fft": [], "graph": []}
    for rpx in radii_px:
        r = rpx / n
        conv = KernelIntegralConv(CHANNELS, CHANNELS, r)
        direct = KernelIntegralConv(CHANNELS, CHANNELS, r, dense_method="direct")
        fft = KernelIntegralConv(CHANNELS, CHANNELS, r, dense_method="fft")
        fns = {
            "direct": lambda c=direct: _fwd_bwd(c, x, pos, lattice=index),
            "fft": lambda c=fft: _fwd_bwd(c, x, pos, lattice=index),
        }
        edges = None
        if rpx <= 4:
            edges = radius_graph(pos, r, loop=True)
            graph = KernelIntegralConv(CHANNELS, CHANNELS, r)
            fns["graph"] = lambda c=graph, e=edges: _fwd_bwd(
                c, x, pos, edge_index=e, lattice=index
            )
        t = median_ms(fns, repeats)
        half = conv.kernel.on_lattice((n, n)).half
        taps = math.prod(2 * h + 1 for h in half)
        padded = math.prod(fast_fft_size(n + h) for h in half)
        units["direct"].append(t["direct"] * 1e-3 / (n * n * CHANNELS * taps))
        units["fft"].append(t["fft"] * 1e-3 / (padded * math.log2(padded) * CHANNELS))
        if edges is not None:
            units["graph"].append(t["graph"] * 1e-3 / (edges.size(1) * CHANNELS))
        pick = conv.plan(None, index)
        best = "fft" if t["fft"] < t["direct"] else "direct"
        rows.append(
            f"| {rpx:g} | {taps} | {t['direct']:.1f} | {t['fft']:.1f} | "
            f"{pick} ({'ok' if pick == best else 'fastest: ' + best}) |"
        )
    fitted = {k: statistics.median(v) for k, v in units.items() if v}
    return rows, fitted


def _field(p: torch.Tensor) -> torch.Tensor:
    u, v = p[:, 0], p[:, 1]
    return torch.stack(
        [
            torch.sin(2 * math.pi * (1.1 * u + 0.7 * v) + 0.3),
            torch.cos(2 * math.pi * (0.6 * u - 1.3 * v)) * torch.exp(-((u - 0.4) ** 2)),
        ],
        dim=1,
    )


def convergence(seeds: int, resolutions=(64, 128, 256), r: float = 0.08) -> list[str]:
    queries = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
    rows = [
        "| normalisation | 64²↔128² median (max) | 128²↔256² median (max) | 128↔256 ≤ 1% and "
        "< 64↔128 | 256² 4× subsampled ↔ 256² median (max) |",
        "|---|---:|---:|---|---:|",
    ]
    sources = [lattice((n, n)) for n in resolutions]
    edges = [radius(src, queries, r) for src in sources]
    n = resolutions[-1]
    sub = [subsample((n, n), rate=4, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    sub_edges = [radius(sources[-1][p], queries, r) for p in sub]
    for normalization in ("window", "mean"):
        coarse, fine, noise, ok = [], [], [], 0
        for seed in range(seeds):
            torch.manual_seed(seed)
            conv = KernelIntegralConv(2, 2, r, normalization=normalization)
            with torch.no_grad():
                outs = [
                    conv((_field(s), None), (s, queries), e)
                    for s, e in zip(sources, edges, strict=True)
                ]
                for p, e in zip(sub, sub_edges, strict=True):
                    src = sources[-1][p]
                    out = conv((_field(src), None), (src, queries), e)
                    noise.append(((out - outs[-1]).norm() / outs[-1].norm()).item())
            diffs = [
                ((a - b).norm() / b.norm()).item()
                for a, b in zip(outs[:-1], outs[1:], strict=True)
            ]
            coarse.append(diffs[0])
            fine.append(diffs[1])
            ok += diffs[1] <= 0.01 and diffs[1] < diffs[0]
        rows.append(
            f"| {normalization} | {100 * statistics.median(coarse):.3f}% "
            f"({100 * max(coarse):.3f}%) | {100 * statistics.median(fine):.3f}% "
            f"({100 * max(fine):.3f}%) | {ok}/{seeds} seeds | "
            f"{100 * statistics.median(noise):.2f}% ({100 * max(noise):.2f}%) |"
        )
    return rows


def machine(command: str) -> str:
    return (
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores "
        f"(shared; load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {datetime.date.today().isoformat()}. "
        f"Command: `{command}`."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true", help="graph vs dense vs conv2d")
    parser.add_argument("--crossover", action="store_true", help="direct vs FFT, unit costs")
    parser.add_argument("--convergence", action="store_true", help="window vs mean")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--rates", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--max-edge-channels", type=float, default=1.6e8,
                        help="skip the graph path above this E*C (memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if not (args.speed or args.crossover or args.convergence):
        args.speed = args.crossover = args.convergence = True
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    blocks = []
    if args.speed:
        rows, notes = speed(args.sizes, args.rates, args.batch, args.repeats,
                            args.max_edge_channels)
        notes = [f"- {n}" for n in notes]
        blocks += ["### Graph path vs dense path vs conv2d", "", *rows, "", *notes, ""]
    if args.crossover:
        rows, fitted = crossover(128, [1.5, 3.5, 6, 10, 16], args.repeats)
        per = {"direct": "pixel·channel·tap", "fft": "padded pixel·channel·log2 size",
               "graph": "edge·channel"}
        units = ", ".join(f"{k} {v:.2e} s per {per[k]}" for k, v in fitted.items())
        blocks += [
            "### Dense path: direct vs FFT (full 128², C = 64, fwd + bwd)", "", *rows, "",
            f"- Unit costs (median over radii): {units}; the cost model in the layer uses "
            "constants fitted to these and to the table above.", "",
        ]
    if args.convergence:
        blocks += [
            "### Convergence between resolutions (DESIGN §2 protocol)", "",
            *convergence(args.seeds), "",
            f"- Relative L2 difference of the outputs at 300 fixed points, {args.seeds} kernel "
            "seeds, radius 0.08 (5.1 px at 64²); last column: sources a uniform random quarter "
            "of the 256² pixels (4 draws per seed) against all of them.", "",
        ]
    blocks.append(f"- {machine(' '.join(['python', 'bench/kernel_conv.py', *sys.argv[1:]]))}")
    print("\n".join(blocks))
    if args.write:
        write_section("operator", "\n".join(
            ["## Integral-kernel operator (KernelIntegralConv)", "", *blocks]))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
