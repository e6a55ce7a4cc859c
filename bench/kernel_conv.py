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

The graph paths and the dense path compute the same operator: the largest relative difference
of their outputs (one forward pass per case, not timed) is reported under the table.

Crossover (``--crossover``): direct vs FFT dense path on a full 128² lattice for growing radii,
and the unit costs the layer's cost model uses (``GRAPH_COST``, ``DIRECT_COST``, ``FFT_COST``).

Convergence (``--convergence``): a 2-channel smooth field, radius 0.08,
read at 300 fixed query points through the bipartite form from 64², 128², 256² lattices;
relative differences between consecutive resolutions for both normalisations, 8 kernel seeds.

Neighbour search runs on the CPU (``torch_cluster``); everything else on ``--device``.

Run::

    python bench/kernel_conv.py                    # all three parts; prints markdown
    python bench/kernel_conv.py --repeats 5 --threads 1 --write
                                                   # the published tables (shared 2-core box):
                                                   # replaces the section between
                                                   # <!-- bench:operator --> and
                                                   # <!-- /bench:operator --> in docs/benchmarks.md
    python bench/kernel_conv.py --smoke            # the same rows at 16²–64², C = 8 (the tests)
"""
from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _args import positive_int
from _common import time_cases
from _infdiff import resolve_device
from _publish import add_publish_args
from _skeleton import add_device_arg, add_threads_arg, bench_main, bench_parser, machine_note

from pyg_infdiff.graph import LatticeIndex, lattice, radius, radius_graph, subsample
from pyg_infdiff.nn.kernel_conv import KernelIntegralConv
from pyg_infdiff.nn.stencil import fast_fft_size

CHANNELS, RADIUS_PX = 64, 3.5
CROSSOVER_RADII_PX = [1.5, 3.5, 6, 10, 16]
# sizes of the published run and of --smoke (the same rows and columns, smaller)
FULL = dict(sizes=[64, 128, 256], channels=CHANNELS, crossover_size=128,
            resolutions=(64, 128, 256), seeds=8)
SMOKE = dict(sizes=[16, 32], channels=8, crossover_size=32, resolutions=(16, 32, 64), seeds=2)


def median_ms(fns: dict[str, Callable[[], object]], repeats: int,
              device: torch.device | None = None) -> dict[str, float]:
    r"""Median milliseconds of each case after one warm-up call, the cases interleaved
    (:func:`_common.time_cases`, synchronised on CUDA)."""
    timings = time_cases(fns, repeats, warmup=1, device=device)
    return {name: 1e3 * t.median for name, t in timings.items()}


def _fwd_bwd(conv: KernelIntegralConv, x: torch.Tensor, pos: torch.Tensor, **kw) -> None:
    conv.path = "graph" if kw.get("edge_index") is not None else "dense"
    conv.zero_grad(set_to_none=True)
    x.grad = None
    conv(x, pos, **kw).sum().backward()


@torch.no_grad()
def _forward(conv: KernelIntegralConv, x: torch.Tensor, pos: torch.Tensor,
             **kw) -> torch.Tensor:
    conv.path = "graph" if kw.get("edge_index") is not None else "dense"
    return conv(x, pos, **kw)


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Largest absolute difference relative to the largest absolute value of :obj:`b`."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _on(index: LatticeIndex, device: torch.device) -> LatticeIndex:
    return LatticeIndex(index.shape, index.pixel.to(device), index.batch.to(device),
                        index.num_graphs)


def speed(sizes: list[int], rates: list[int], batch: int, repeats: int, max_edge_channels: float,
          channels: int = CHANNELS, device: torch.device | None = None) -> dict:
    device = torch.device("cpu") if device is None else device
    gen = torch.Generator().manual_seed(0)
    results = {}
    for n in sizes:
        r = RADIUS_PX / n
        torch.manual_seed(0)
        conv = KernelIntegralConv(channels, channels, r).to(device)
        image = torch.randn(batch, channels, n, n, generator=gen).to(device)
        image_cl = image.contiguous(memory_format=torch.channels_last).requires_grad_()
        image.requires_grad_()
        with torch.no_grad():
            st = conv.kernel.on_lattice((n, n))
            kappa = conv.kernel(st.offset) * (st.inside | st.border).unsqueeze(-1)
            weight = kappa.t().reshape(channels, 1, *st.box).flip(2, 3).contiguous()
        weight.requires_grad_()
        full = LatticeIndex.full((n, n), batch, device=device)
        full_pos = full.pos()
        full_x = torch.randn(full_pos.size(0), channels, generator=gen).to(device)
        full_x.requires_grad_()
        for rate in rates:
            pixel = (
                torch.arange(n * n) if rate == 1 else subsample((n, n), rate=rate, generator=gen)
            )
            cpu_index = LatticeIndex(
                (n, n),
                pixel.repeat(batch),
                torch.arange(batch).repeat_interleave(pixel.numel()),
                batch,
            )
            edge_index = radius_graph(cpu_index.pos(), r, cpu_index.batch, loop=True).to(device)
            index = _on(cpu_index, device)
            pos = index.pos()
            x = torch.randn(pos.size(0), channels, generator=gen).to(device).requires_grad_()
            fns = {
                "dense": lambda c=conv, x=x, p=pos, i=index: _fwd_bwd(c, x, p, lattice=i),
                "conv2d": lambda x=image, w=weight, h=st.half: F.conv2d(
                    x, w, padding=h, groups=channels
                ).sum().backward(),
                "conv2d_cl": lambda x=image_cl, w=weight, h=st.half: F.conv2d(
                    x, w, padding=h, groups=channels
                ).sum().backward(),
            }
            if rate != 1:
                fns["dense_full"] = lambda c=conv, x=full_x, p=full_pos, i=full: _fwd_bwd(
                    c, x, p, lattice=i
                )
            with_graph = edge_index.size(1) * channels <= max_edge_channels
            if with_graph:
                fns["graph"] = lambda c=conv, x=x, p=pos, e=edge_index, i=index: _fwd_bwd(
                    c, x, p, edge_index=e, lattice=i
                )
                fns["generic"] = lambda c=conv, x=x, p=pos, e=edge_index: _fwd_bwd(
                    c, x, p, edge_index=e
                )
            t = median_ms(fns, repeats, device)
            t.setdefault("dense_full", t["dense"])
            # the graph paths compute the dense path's operator: compare the outputs
            diff = None
            if with_graph:
                dense = _forward(conv, x, pos, lattice=index)
                diff = max(_rel_diff(_forward(conv, x, pos, edge_index=edge_index, lattice=index),
                                     dense),
                           _rel_diff(_forward(conv, x, pos, edge_index=edge_index), dense))
            conv.path = "auto"
            auto = "graph" if conv.plan(edge_index, index) == "graph" else "dense"
            results[(n, rate)] = dict(
                t, edges=edge_index.size(1), nodes=pos.size(0), auto=auto,
                method=conv.plan(None, index), graph_vs_dense=diff,
            )
    return results


def table(results: dict, batch: int, repeats: int,
          channels: int = CHANNELS) -> tuple[list[str], list[str]]:
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
    diffs = [res["graph_vs_dense"] for res in results.values()
             if res["graph_vs_dense"] is not None]
    notes = [
        "Goal: dense path on full lattices within 1.5× of the plain depthwise conv2d: "
        + ("**met**" if goal_full and all(goal_full) else "**not met**")
        + f" ({sum(goal_full)}/{len(goal_full)} sizes).",
        "Goal: graph path on ≥4× subsampled nodes faster than the dense path on the full "
        "lattice: " + ("**met**" if goal_sub and all(goal_sub) else "**not met**")
        + f" ({sum(goal_sub)}/{len(goal_sub)} cases).",
        f"C = {channels}, batch {batch}, radius {RADIUS_PX} px (37 taps), float32, forward + "
        f"backward, median of {repeats} repeats (cases interleaved); neighbour search not timed. "
        "*graph*: the layer's graph path given the lattice (kernel tabulated per offset); "
        "*graph generic*: without it (kernel MLP on every edge, as on arbitrary point clouds); "
        "*dense full*: the dense path on the full lattice of that size; *conv2d*: plain "
        "`F.conv2d(groups=C)` of a contiguous NCHW image, *CL*: of a channels-last one (the "
        "layout the layer's dense path uses), both with precomputed weights and without "
        "normalisation or channel mixing.",
    ]
    if diffs:
        notes.append("Same operator: largest difference between the outputs of the graph paths "
                     f"and of the dense path, relative to the largest output: {max(diffs):.1e} "
                     f"({len(diffs)} cases).")
    return rows, notes


def crossover(n: int, radii_px: list[float], repeats: int, channels: int = CHANNELS,
              device: torch.device | None = None) -> dict:
    device = torch.device("cpu") if device is None else device
    gen = torch.Generator().manual_seed(1)
    index = LatticeIndex.full((n, n), device=device)
    pos = index.pos()
    x = torch.randn(n * n, channels, generator=gen).to(device).requires_grad_()
    rows = [
        "| radius (px) | taps in box | direct (ms) | FFT (ms) | layer picks |",
        "|---:|---:|---:|---:|---|",
    ]
    units: dict[str, list[float]] = {"direct": [], "fft": [], "graph": []}
    diffs = []
    for rpx in radii_px:
        r = rpx / n
        conv = KernelIntegralConv(channels, channels, r).to(device)
        direct = KernelIntegralConv(channels, channels, r, dense_method="direct").to(device)
        fft = KernelIntegralConv(channels, channels, r, dense_method="fft").to(device)
        fft.load_state_dict(direct.state_dict())  # same weights: the outputs must agree
        fns = {
            "direct": lambda c=direct: _fwd_bwd(c, x, pos, lattice=index),
            "fft": lambda c=fft: _fwd_bwd(c, x, pos, lattice=index),
        }
        edges = None
        if rpx <= 4:
            edges = radius_graph(pos.cpu(), r, loop=True).to(device)
            graph = KernelIntegralConv(channels, channels, r).to(device)
            graph.load_state_dict(direct.state_dict())
            fns["graph"] = lambda c=graph, e=edges: _fwd_bwd(
                c, x, pos, edge_index=e, lattice=index
            )
        t = median_ms(fns, repeats, device)
        reference = _forward(direct, x, pos, lattice=index)
        diffs.append(_rel_diff(_forward(fft, x, pos, lattice=index), reference))
        if edges is not None:
            diffs.append(_rel_diff(_forward(graph, x, pos, edge_index=edges, lattice=index),
                                   reference))
        half = conv.kernel.on_lattice((n, n)).half
        taps = math.prod(2 * h + 1 for h in half)
        padded = math.prod(fast_fft_size(n + h) for h in half)
        units["direct"].append(t["direct"] * 1e-3 / (n * n * channels * taps))
        units["fft"].append(t["fft"] * 1e-3 / (padded * math.log2(padded) * channels))
        if edges is not None:
            units["graph"].append(t["graph"] * 1e-3 / (edges.size(1) * channels))
        pick = conv.plan(None, index)
        best = "fft" if t["fft"] < t["direct"] else "direct"
        rows.append(
            f"| {rpx:g} | {taps} | {t['direct']:.1f} | {t['fft']:.1f} | "
            f"{pick} ({'ok' if pick == best else 'fastest: ' + best}) |"
        )
    fitted = {k: statistics.median(v) for k, v in units.items() if v}
    return dict(rows=rows, units=fitted, max_rel_diff=max(diffs))


def _field(p: torch.Tensor) -> torch.Tensor:
    u, v = p[:, 0], p[:, 1]
    return torch.stack(
        [
            torch.sin(2 * math.pi * (1.1 * u + 0.7 * v) + 0.3),
            torch.cos(2 * math.pi * (0.6 * u - 1.3 * v)) * torch.exp(-((u - 0.4) ** 2)),
        ],
        dim=1,
    )


def convergence(seeds: int, resolutions=(64, 128, 256), r: float = 0.08,
                device: torch.device | None = None) -> dict:
    device = torch.device("cpu") if device is None else device
    queries = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
    a, b, c = resolutions
    rows = [
        f"| normalisation | {a}²↔{b}² median (max) | {b}²↔{c}² median (max) | {b}↔{c} ≤ 1% and "
        f"< {a}↔{b} | {c}² 4× subsampled ↔ {c}² median (max) |",
        "|---|---:|---:|---|---:|",
    ]
    sources = [lattice((n, n)) for n in resolutions]
    edges = [radius(src, queries, r).to(device) for src in sources]
    sub = [subsample((c, c), rate=4, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    sub_edges = [radius(sources[-1][p], queries, r).to(device) for p in sub]
    sources = [s.to(device) for s in sources]
    queries = queries.to(device)
    stats = {}
    for normalization in ("window", "mean"):
        coarse, fine, noise, ok = [], [], [], 0
        for seed in range(seeds):
            torch.manual_seed(seed)
            conv = KernelIntegralConv(2, 2, r, normalization=normalization).to(device)
            with torch.no_grad():
                outs = [
                    conv((_field(s), None), (s, queries), e)
                    for s, e in zip(sources, edges, strict=True)
                ]
                for p, e in zip(sub, sub_edges, strict=True):
                    src = sources[-1][p.to(device)]
                    out = conv((_field(src), None), (src, queries), e)
                    noise.append(((out - outs[-1]).norm() / outs[-1].norm()).item())
            diffs = [
                ((x - y).norm() / y.norm()).item()
                for x, y in zip(outs[:-1], outs[1:], strict=True)
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
        stats[normalization] = dict(coarse=coarse, fine=fine, subsampled=noise, ok=ok)
    return dict(rows=rows, stats=stats)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    p.add_argument("--speed", action="store_true", help="graph vs dense vs conv2d")
    p.add_argument("--crossover", action="store_true", help="direct vs FFT, unit costs")
    p.add_argument("--convergence", action="store_true", help="window vs mean")
    p.add_argument("--sizes", type=positive_int, nargs="+", default=FULL["sizes"])
    p.add_argument("--rates", type=positive_int, nargs="+", default=[1, 4, 8])
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--seeds", type=positive_int, default=FULL["seeds"])
    p.add_argument("--max-edge-channels", type=float, default=1.6e8,
                   help="skip the graph path above this E*C (memory)")
    add_threads_arg(p)
    add_device_arg(p, "cpu or cuda (default: cuda when present); neighbour search stays on the "
                   "CPU")
    add_publish_args(p, "the same rows on 16², 32² (speed), 32² (crossover) and 16²–64² "
                        "(convergence, 2 seeds), C = 8, one repeat (for the tests)")
    args = p.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.smoke:
        args.sizes, args.seeds, args.repeats = sizes["sizes"], sizes["seeds"], 1
    args.channels = sizes["channels"]
    args.crossover_size, args.resolutions = sizes["crossover_size"], sizes["resolutions"]
    if not (args.speed or args.crossover or args.convergence):
        args.speed = args.crossover = args.convergence = True
    return args


def run(args: argparse.Namespace) -> dict:
    r"""The parts asked for: ``"speed"``, ``"crossover"``, ``"convergence"``."""
    device = resolve_device(args.device)
    result: dict = {"device": str(device)}
    if args.speed:
        result["speed"] = speed(args.sizes, args.rates, args.batch, args.repeats,
                                args.max_edge_channels, args.channels, device)
    if args.crossover:
        result["crossover"] = crossover(args.crossover_size, CROSSOVER_RADII_PX, args.repeats,
                                        args.channels, device)
    if args.convergence:
        result["convergence"] = convergence(args.seeds, args.resolutions, device=device)
    return result


def report(args: argparse.Namespace, result: dict) -> str:
    blocks = []
    if "speed" in result:
        rows, notes = table(result["speed"], args.batch, args.repeats, args.channels)
        notes = [f"- {n}" for n in notes]
        blocks += ["### Graph path vs dense path vs conv2d", "", *rows, "", *notes, ""]
    if "crossover" in result:
        n, channels, cross = args.crossover_size, args.channels, result["crossover"]
        per = {"direct": "pixel·channel·tap", "fft": "padded pixel·channel·log2 size",
               "graph": "edge·channel"}
        units = ", ".join(f"{k} {v:.2e} s per {per[k]}" for k, v in cross["units"].items())
        blocks += [
            f"### Dense path: direct vs FFT (full {n}², C = {channels}, fwd + bwd)", "",
            *cross["rows"], "",
            f"- Unit costs (median over radii): {units}; the cost model in the layer uses "
            "constants fitted to these and to the table above.",
            "- Same operator: largest difference between the FFT (and graph) outputs and the "
            f"direct ones, relative to the largest output: {cross['max_rel_diff']:.1e}.", "",
        ]
    if "convergence" in result:
        low, high = args.resolutions[0], args.resolutions[-1]
        blocks += [
            "### Convergence between resolutions (smooth 2-channel field, radius 0.08)", "",
            *result["convergence"]["rows"], "",
            f"- Relative L2 difference of the outputs at 300 fixed points, {args.seeds} kernel "
            f"seeds, radius 0.08 ({0.08 * low:.1f} px at {low}²); last column: sources a uniform "
            f"random quarter of the {high}² pixels (4 draws per seed) against all of them.", "",
        ]
    device_note = "" if result["device"] == "cpu" else f"Device: {result['device']}. "
    blocks.append(f"- {device_note}{machine_note(result)}")
    return "\n".join(["## Integral-kernel operator (KernelIntegralConv)", "", *blocks])


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "operator", parse_args, run, report, argv, stamp=True)


if __name__ == "__main__":
    main()
