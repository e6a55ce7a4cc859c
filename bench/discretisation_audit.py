r"""Where the model still depends on the discretisation (issue 12, item 2): one measurement per
place, at the scale of the Fashion-MNIST preset (``UNetConfig.preset(28)``: training resolution
28², rate 4, so 196 nodes per function; mollifier and noise width :math:`\sigma` half a training
pixel; kernel radius 2.5 training pixels; pool grid 14²), on the model's real input, the
mollified noise :math:`T\varepsilon`.

The rows (one function each, ``measure_*``):

* ``kernel``: the spread (RMS) of a kernel integral (:class:`~pyg_infdiff.nn.KernelIntegralConv`
  of the preset's radius, random weights) of :math:`T\varepsilon` on the training nodes, on full
  lattices of 28², 56² and 112², and on 112² read through a context of 196 random points
  (:func:`~pyg_infdiff.graph.context_graph`), with the mean number of nodes in a ball;
* ``quadrature``: the relative difference of that integral between full lattices 28² and 84²,
  84² and 252² (3× refinements share pixel centres), for :math:`T\varepsilon` and for a smooth
  field (:math:`\sigma` = 2 training pixels), and between 28² and 84² when both read the same
  context; with the share of the noise variance above the 28² lattice's frequencies;
* ``pool``: the RMS of the tent pool (:class:`~pyg_infdiff.nn.GridPool`) of :math:`T\varepsilon`
  on the same point sets and the share of empty tent windows (filled by widening);
* ``idw``: the relative difference of the pooled :math:`T\varepsilon` between full lattices 28²
  and 112², tent against inverse distance;
* ``border``: the largest difference of the tent pool of :math:`f(u) = u_1` between 28² and 112²
  in the border cells and inside;
* ``noise``: the noise's variance at the nodes (:meth:`MollifiedNoise.covariance`), mean and
  largest, on lattices of 28² and 112² and at uniform random points; the share of uniform points
  in the outer half training pixel and their mean variance;
* ``loss``: the share of a 784-node graph in the loss beside a 196-node graph
  (:meth:`MollifiedDiffusion.training_losses`, a model that outputs zero);
* ``metric``: the PSNR between the mollified Fashion-MNIST test images read at 28² and the same
  functions read at 56² and 112² and average-pooled, as the consistency benchmark compares
  samples: the score of a perfect model; and after Wiener deblurring on each lattice (inverse
  SNR 0.05), without and with the band of the training resolution.

Run (CPU, ~1 min; nothing is timed)::

    python bench/discretisation_audit.py --write   # replaces <!-- bench:audit --> in
                                                   # docs/concepts.md
    python bench/discretisation_audit.py --smoke   # 2 fields, 8 images (the tests)
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import ROOT
from _publish import add_publish_args, markdown_table
from _skeleton import add_threads_arg, bench_main, bench_parser
from torch import Tensor
from torch_geometric.data import Batch, Data

from pyg_infdiff.data import FashionMNIST
from pyg_infdiff.diffusion import ContextNodes, MollifiedDiffusion
from pyg_infdiff.graph import (
    LatticeIndex,
    context_graph,
    lattice,
    pixel_to_pos,
    radius_graph,
    subsample,
)
from pyg_infdiff.models import UNetConfig
from pyg_infdiff.nn import GridPool, KernelIntegralConv
from pyg_infdiff.nn.pool import multilinear_weights
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise, dct, idct
from pyg_infdiff.noise.mollifier import gaussian_gains, outer_product

CONCEPTS = ROOT / "docs" / "concepts.md"
RES, RATE = 28, 4
CONFIG = UNetConfig.preset(RES)
SIGMA = 0.5 / RES
CONTEXT = RES * RES // RATE  # 196 points, the training nodes per function
FULL = dict(fields=64, images=1000)
SMOKE = dict(fields=2, images=8)


def _nodes_of(values: Tensor) -> Tensor:
    r"""Lattice batches :math:`(B, C, n, n)` as node values :math:`(B n^2, C)`, graph after
    graph, row-major."""
    b, c = values.shape[:2]
    return values.reshape(b, c, -1).transpose(1, 2).reshape(-1, c)


class PointSets:
    r"""The point sets of the audit for :obj:`B` graphs: the training nodes (a uniform subset
    of a quarter of the 28² pixels), full lattices, and lattices read through a context."""

    def __init__(self, num_graphs: int, generator: torch.Generator) -> None:
        self.num_graphs, self.generator = num_graphs, generator

    def training(self, field) -> dict:
        shape = (RES, RES)
        pixels = [subsample(shape, rate=RATE, generator=self.generator)
                  for _ in range(self.num_graphs)]
        pos = torch.cat([pixel_to_pos(p, shape) for p in pixels])
        batch = torch.arange(self.num_graphs).repeat_interleave(pixels[0].numel())
        x = field.evaluate(pos, batch)
        return {"x": x, "pos": pos, "batch": batch,
                "edges": radius_graph(pos, CONFIG.radius, batch, loop=True)}

    def full(self, field, side: int) -> dict:
        pos = lattice((side, side)).repeat(self.num_graphs, 1)
        batch = torch.arange(self.num_graphs).repeat_interleave(side * side)
        return {"x": _nodes_of(field.on_lattice((side, side))), "pos": pos, "batch": batch,
                "lattice": LatticeIndex.full((side, side), self.num_graphs)}

    def pixel_centres(self) -> Tensor:
        r"""A context of :data:`CONTEXT` random pixel centres of the training lattice per
        graph, :math:`(B, M, d)`: where the training nodes sit."""
        shape = (RES, RES)
        return torch.stack([pixel_to_pos(subsample(shape, rate=RATE, generator=self.generator),
                                         shape) for _ in range(self.num_graphs)])

    def context(self, field, side: int, points: int | Tensor = CONTEXT) -> dict:
        plain = self.full(field, side)
        ctx = ContextNodes.build(points, plain["pos"], plain["batch"], self.num_graphs,
                                 self.generator)
        x = ctx.merge(plain["x"], field.evaluate(ctx.context_pos, ctx.context_batch))
        return {"x": x, "pos": ctx.pos, "batch": ctx.batch, "ctx": ctx,
                "edges": context_graph(ctx.pos, CONFIG.radius, ctx.context, ctx.batch)}


def _conv(seed: int = 0) -> KernelIntegralConv:
    torch.manual_seed(seed)
    return KernelIntegralConv(1, 4, CONFIG.radius, depthwise=False, bias=False).eval()


@torch.no_grad()
def _integral(conv: KernelIntegralConv, nodes: dict) -> Tensor:
    r"""The kernel integral at the nodes (at the query nodes only, through a context)."""
    out = conv(nodes["x"], nodes["pos"], edge_index=nodes.get("edges"),
               lattice=nodes.get("lattice"))
    return out[nodes["ctx"].query] if "ctx" in nodes else out


def _rms(x: Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def _ball_count(nodes: dict) -> tuple[float, float]:
    r"""Mean number of nodes in the ball of a node (itself included), and the share of nodes
    whose ball holds only themselves (at the query nodes, through a context)."""
    if "edges" in nodes:
        degree = torch.bincount(nodes["edges"][1], minlength=nodes["pos"].size(0)).double()
        if "ctx" in nodes:
            degree = degree[nodes["ctx"].query]
        return float(degree.mean()), float((degree == 1).double().mean())
    side = nodes["lattice"].shape[0]  # one graph suffices: every graph is the same lattice
    edges = radius_graph(lattice((side, side)), CONFIG.radius, loop=True)
    return edges.size(1) / side**2, 0.0


def measure_kernel(sets: PointSets, noise: MollifiedNoise, generator) -> dict:
    field = noise.draw(sets.num_graphs, 1, generator)
    conv = _conv()
    cases = {"training nodes (28², rate 4)": sets.training(field),
             "full 28²": sets.full(field, 28), "full 56²": sets.full(field, 56),
             "full 112²": sets.full(field, 112),
             f"112² through {CONTEXT} random 28² pixel centres":
                 sets.context(field, 112, sets.pixel_centres()),
             f"112² through {CONTEXT} context points": sets.context(field, 112)}
    out = {}
    for name, nodes in cases.items():
        ball, alone = _ball_count(nodes)
        out[name] = {"rms": _rms(_integral(conv, nodes)), "ball": ball, "alone": alone}
    return out


def _shared(out: Tensor, num_graphs: int, side: int, factor: int) -> Tensor:
    r"""The values at the pixel centres shared with the lattice :math:`side / factor` (odd
    :obj:`factor`: coarse pixel :math:`i` is fine pixel :math:`factor\, i + factor // 2`)."""
    grid = out.view(num_graphs, side, side, -1)
    return grid[:, factor // 2::factor, factor // 2::factor].reshape(-1, out.size(-1))


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).double().norm() / b.double().norm())


def measure_quadrature(sets: PointSets, noise: MollifiedNoise, generator) -> dict:
    conv = _conv()
    b = sets.num_graphs
    out = {}
    for name, width in (("Tε (σ = ½ px)", SIGMA), ("smooth (σ = 2 px)", 2.0 / RES)):
        field = MollifiedNoise(width, 2).draw(b, 1, generator)
        y = {n: _integral(conv, sets.full(field, n)) for n in (28, 84, 252)}
        out[name] = (_rel(y[28], _shared(y[84], b, 84, 3)),
                     _rel(_shared(y[84], b, 84, 3), _shared(y[252], b, 252, 9)))
    field = noise.draw(b, 1, generator)
    points = torch.rand(b, CONTEXT, 2, generator=generator)  # one context for both lattices
    y28 = _integral(conv, sets.context(field, 28, points))
    y84 = _integral(conv, sets.context(field, 84, points))
    out["context"] = _rel(y28, _shared(y84, b, 84, 3))
    power = noise.amplitudes(dtype=torch.float64).square()
    out["above_nyquist"] = float(1 - power[:RES, :RES].sum() / power.sum())
    return out


def _windows(pos: Tensor, batch: Tensor, num_graphs: int) -> float:
    r"""The share of grid points whose tent window holds no node."""
    grid = CONFIG.grid_shape
    cells = grid[0] * grid[1]
    index, weight = multilinear_weights(pos, grid)
    den = torch.zeros(num_graphs * cells, dtype=torch.float64)
    den.index_add_(0, (index + (batch * cells)[:, None]).view(-1), weight.double().view(-1))
    return float((den == 0).double().mean())


@torch.no_grad()
def measure_pool(sets: PointSets, noise: MollifiedNoise, generator) -> dict:
    field = noise.draw(sets.num_graphs, 1, generator)
    pool = GridPool(CONFIG.grid_shape, method="tent")
    b = sets.num_graphs
    out = {}
    train = sets.training(field)
    out["training nodes (28², rate 4)"] = (
        _rms(pool(train["x"], train["pos"], train["batch"], b)),
        _windows(train["pos"], train["batch"], b))
    for side in (28, 112):
        nodes = sets.full(field, side)
        out[f"full {side}²"] = (
            _rms(pool(nodes["x"], nodes["pos"], nodes["batch"], b, lattice=nodes["lattice"])),
            0.0 if side >= CONFIG.grid_shape[0] else _windows(nodes["pos"], nodes["batch"], b))
    for name, points in ((f"{CONTEXT} random 28² pixel centres", sets.pixel_centres()),
                         (f"{CONTEXT} context points", CONTEXT)):
        nodes = sets.context(field, 112, points)
        c = nodes["ctx"].context
        out[name] = (_rms(pool(nodes["x"][c], nodes["pos"][c], nodes["batch"][c], b)),
                     _windows(nodes["pos"][c], nodes["batch"][c], b))
    return out


@torch.no_grad()
def measure_idw(sets: PointSets, noise: MollifiedNoise, generator) -> dict:
    field = noise.draw(sets.num_graphs, 1, generator)
    b = sets.num_graphs
    out = {}
    for method in ("tent", "idw"):
        pool = GridPool(CONFIG.grid_shape, method=method)
        y = {n: pool(*(sets.full(field, n)[k] for k in ("x", "pos", "batch")), b,
                     lattice=sets.full(field, n)["lattice"]) for n in (28, 112)}
        out[method] = _rel(y[28], y[112])
    return out


@torch.no_grad()
def measure_border(sets: PointSets) -> dict:
    pool = GridPool(CONFIG.grid_shape, method="tent")
    y = {}
    for n in (28, 112):
        pos = lattice((n, n))
        y[n] = pool(pos[:, :1].double(), pos.double(), lattice=LatticeIndex.full((n, n)))[0, 0]
    diff = (y[28] - y[112]).abs()
    g = CONFIG.grid_shape[0]
    border = torch.zeros(g, g, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    return {"border": float(diff[border].max()), "interior": float(diff[~border].max()),
            "bound": 1 / (24 * g)}


def measure_noise(noise: MollifiedNoise, generator) -> dict:
    out = {}
    for side in (28, 112):
        u = lattice((side, side), dtype=torch.float64)
        var = noise.covariance(u, u)
        out[f"full {side}²"] = (float(var.mean()), float(var.max()))
    u = torch.rand(20000, 2, generator=generator, dtype=torch.float64)
    var = noise.covariance(u, u)
    out["uniform points"] = (float(var.mean()), float(var.max()))
    band = ((u < 0.5 / RES) | (u > 1 - 0.5 / RES)).any(-1)
    out["band"] = (float(band.double().mean()), float(var[band].mean()),
                   float((var > out["full 28²"][1]).double().mean()))
    return out


def measure_loss(noise: MollifiedNoise, generator) -> dict:
    diffusion = MollifiedDiffusion(noise)
    graphs = []
    for side, rate in ((28, 1), (28, RATE)):
        pixel = subsample((side, side), rate=rate, generator=generator)
        pos = pixel_to_pos(pixel, (side, side))
        graphs.append(Data(x=torch.rand(pixel.numel(), 1, generator=generator) * 2 - 1,
                           pos=pos))
    batch = Batch.from_data_list(graphs)
    losses = diffusion.training_losses(
        lambda x_t, pos, t, batch, edge_index=None: torch.zeros_like(x_t), batch,
        t=torch.tensor([500, 500]), generator=generator)
    counts = torch.tensor([g.num_nodes for g in graphs], dtype=torch.float64)
    share = counts[0] * losses.per_graph[0].double() / (counts.sum() * losses.loss.double())
    return {"nodes": [int(c) for c in counts], "share": float(share),
            "per_graph_share": float(losses.per_graph[0] / losses.per_graph.sum())}


def measure_metric(num_images: int) -> dict:
    images = FashionMNIST(train=False).images[:num_images].float().div(127.5).sub(1)[:, None]
    gains = outer_product([gaussian_gains(SIGMA, RES, dtype=torch.float32)] * 2)
    coeffs = dct(images, 2) * gains  # the mollified data T x0 as a function
    read = {n: idct(coeffs, 2, shape=(n, n)) for n in (28, 56, 112)}
    mollifier = GaussianMollifier(SIGMA)
    out = {}
    for name, fn in (("mollified", lambda x: x),
                     ("deblurred", lambda x: mollifier.undo(x, 2, inv_snr=0.05)),
                     ("deblurred, band 28", lambda x: mollifier.undo(x, 2, inv_snr=0.05,
                                                                     band=RES))):
        low = fn(read[28])
        out[name] = {m: _psnr(F.avg_pool2d(fn(read[m]), m // RES), low) for m in (56, 112)}
    return out


def _psnr(a: Tensor, b: Tensor) -> dict:
    mse = (a - b).double().pow(2).flatten(1).mean(1).clamp_min(1e-20)
    db = 10 * torch.log10(4.0 / mse)
    return {"mean": float(db.mean()), "min": float(db.min())}


def run(args: argparse.Namespace) -> dict:
    size = SMOKE if args.smoke else FULL
    generator = torch.Generator().manual_seed(args.seed)
    noise = MollifiedNoise(SIGMA, 2)
    sets = PointSets(size["fields"], generator)
    return {"kernel": measure_kernel(sets, noise, generator),
            "quadrature": measure_quadrature(sets, noise, generator),
            "pool": measure_pool(sets, noise, generator),
            "idw": measure_idw(sets, noise, generator),
            "border": measure_border(sets),
            "noise": measure_noise(noise, generator),
            "loss": measure_loss(noise, generator),
            "metric": measure_metric(size["images"]), "size": size}


def rows(result: dict) -> list[list[str]]:
    r"""The audit table: place, what changes, measured effect, status."""
    k, q, p = result["kernel"], result["quadrature"], result["pool"]
    names = list(k)
    train, ctx = names[0], names[-1]
    spread = "; ".join(f"{n}: {v['rms']:.3f} ({v['ball']:.1f} nodes per ball)"
                       for n, v in k.items())
    pool = "; ".join(f"{n}: {rms:.3f}" + (f" ({empty:.1%} of windows empty)" if empty else "")
                     for n, (rms, empty) in p.items())
    tq, sq = q["Tε (σ = ½ px)"], q["smooth (σ = 2 px)"]
    ctx_pool, pix_pool = list(p)[-1], list(p)[-2]
    cells = CONFIG.grid_shape[0] * CONFIG.grid_shape[1]
    n, m = result["noise"], result["metric"]
    loss = result["loss"]
    b = result["border"]

    def ball(a: str, b: str) -> float:
        return k[a]["ball"] / k[b]["ball"]

    def db(name: str) -> str:
        return ", ".join(f"{s}²↓ {v['mean']:.1f} / {v['min']:.1f} dB"
                         for s, v in m[name].items())

    return [
        ["Pixel-based constants of the presets (radius 2.5 or 3 training pixels, pool grid "
         "half the training resolution, σ = ½ training pixel)",
         "nothing once the model is built: they are domain units, the same at every sampling "
         "lattice; what they imply there is in the rows below",
         "(the rows below)", "documented (`UNetConfig.preset`, `bench/density_table.py`)"],
        ["Kernel integrals (`KernelIntegralConv`, every operator block)",
         f"nodes per ball: the same radius holds {ball('full 112²', 'full 28²'):.0f}× more "
         f"nodes at 112² than at 28², {ball('full 112²', train):.0f}× more than at a training "
         "node",
         f"RMS of one integral of Tε: {spread}. Through the context it is "
         f"{k[ctx]['rms'] / k[train]['rms']:.2f}× the training spread (through pixel centres "
         f"{k[names[-2]]['rms'] / k[train]['rms']:.2f}×), on the full 112² lattice "
         f"{k['full 112²']['rms'] / k[train]['rms']:.2f}×. Nodes whose ball holds only "
         f"themselves: {k[train]['alone']:.1%} of the training nodes; of the pixels read "
         f"through the context {k[ctx]['alone']:.1%} (through pixel centres "
         f"{k[names[-2]]['alone']:.1%}): pixels of the sample that see no context point",
         "handled by context sampling (`sample(..., context=...)`); the lone nodes "
         "documented"],
        ["Quadrature of the sub-pixel input (σ = ½ training pixel)",
         f"Tε has {q['above_nyquist']:.0%} of its variance above the frequencies of the 28² "
         "lattice, which the quadrature at 28² aliases",
         f"relative difference of one integral, 28² vs 84² / 84² vs 252²: Tε "
         f"{tq[0]:.1%} / {tq[1]:.2%}; smooth input {sq[0]:.1%} / {sq[1]:.2%}; 28² vs 84² "
         f"reading the same context: {q['context']:.1e}",
         "handled by context sampling (the integrals read the same context at every "
         "resolution); the plain lattice reading is issue 12's remaining target"],
        ["Pooling onto the grid (`GridPool`, tent)",
         f"nodes per grid cell: {CONTEXT / cells:g} on the training nodes, {28 * 28 / cells:g} "
         f"at 28², {112 * 112 / cells:g} at 112²; empty windows on sparse nodes are widened",
         f"RMS of pooled Tε: {pool}. Uniform context points are less even than a subset of "
         f"pixels: {p[ctx_pool][0] / p[train][0]:.2f}× the training spread, random pixel "
         f"centres {p[pix_pool][0] / p[train][0]:.2f}×",
         "handled by context sampling (the pool reads the context only); uniform points "
         "documented"],
        ["Pooling by inverse distance (`UNetConfig(pool=\"idw\")`)",
         "a point value of the nearest nodes, not a window integral: another quantity on each "
         "lattice",
         f"pooled Tε, 28² vs 112²: {result['idw']['idw']:.1%} (tent: "
         f"{result['idw']['tent']:.1%})",
         "documented (tent is the default; IDW kept for the official configurations)"],
        ["Tent pool in the border half-cells",
         "the hat reflected at the face reads a slope 1/24 of a cell inside, by a quadrature "
         "that depends on the lattice",
         f"pool of f(u) = u₁, largest difference between 28² and 112²: {b['border']:.1e} in "
         "the border cells, "
         f"{b['interior']:.1e} inside (bound 1/(24 g) = {b['bound']:.1e})",
         "documented (below the bound; exact inside)"],
        ["Noise normalisation on subsets (`MollifiedNoise`)",
         "none by construction: the field is normalised as a function (unit average variance "
         "over the domain), never per node set",
         f"variance at the nodes, mean / largest: 28² {n['full 28²'][0]:.3f} / "
         f"{n['full 28²'][1]:.2f}, 112² {n['full 112²'][0]:.3f} / {n['full 112²'][1]:.2f}, "
         f"uniform points {n['uniform points'][0]:.3f} / {n['uniform points'][1]:.2f}",
         "no dependence (the largest value is the border's, next item)"],
        ["Border band of the nodes (noise variance near the faces)",
         "training nodes are 28² pixel centres, at least half a pixel from a face; nodes of "
         "finer lattices and uniform context points come closer, where the reflected noise "
         "has up to 2× (faces) and 4× (corners) the variance",
         f"{n['band'][0]:.1%} of uniform points lie in the outer half training pixel, "
         f"variance there {n['band'][1]:.2f} on average, up to {n['uniform points'][1]:.2f}; "
         f"at the training nodes at most {n['full 28²'][1]:.2f} (a corner pixel), exceeded at "
         f"{n['band'][2]:.1%} of uniform points",
         "documented (the model sees larger border values than in training; context points "
         "drawn at the training pixel centres would avoid it)"],
        ["Loss weighting (`MollifiedDiffusion.training_losses`)",
         "the loss is a mean over all nodes of the batch, so a graph weighs as many nodes as "
         "it has",
         f"a {loss['nodes'][0]}-node graph beside a {loss['nodes'][1]}-node one: "
         f"{loss['share']:.0%} of the loss (a per-graph mean would give "
         f"{loss['per_graph_share']:.0%})",
         "documented (equal within one resolution and rate, as the collator makes batches)"],
        ["The consistency metric (28² vs average-pooled 56² and 112²)",
         "point values at 28² against cell averages of the finer lattices: they differ for "
         "detail below the pixel even for a perfect model",
         f"mollified Fashion-MNIST test images read exactly, mean / min PSNR: {db('mollified')}"
         f"; deblurred on each lattice: {db('deblurred')}"
         + ("" if db("deblurred") != db("deblurred, band 28") else
            " (the same with `undo(..., band=28)`: the data hold no higher frequency)")
         + ("" if db("deblurred") == db("deblurred, band 28") else
            f"; with `undo(..., band=28)`: {db('deblurred, band 28')}"),
         "documented (the ceiling of `bench/consistency.py`)"],
        ["Per-node normalisations (`LayerNorm` of the operator blocks, `GroupNorm` of the "
         "dense U-Net)",
         "none: pointwise over the channels of a node, or on the fixed grid",
         "exact (no quadrature involved)",
         "no dependence"],
    ]


def report(args: argparse.Namespace, result: dict) -> str:
    size = result["size"]
    notes = [
        f"Preset 28 (radius {CONFIG.radius:.4f} = 2.5 training pixels, grid "
        f"{CONFIG.grid_shape[0]}²), σ = ½ training pixel; {size['fields']} noise fields per "
        f"point set, one random `KernelIntegralConv(1, 4, radius, depthwise=False)` (seed 0), "
        f"{size['images']} test images for the metric; context: {CONTEXT} uniform random points "
        f"per field (the training nodes per function at 28², rate {RATE}).",
        f"Command: `{args.command}`.",
    ]
    return "\n".join([markdown_table(["place", "what changes with the discretisation",
                                      "measured effect", "status"], rows(result)), "",
                      *[f"- {note}" for note in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--seed", type=int, default=0)
    add_threads_arg(p, "torch CPU threads (CPU only: no --device; nothing is timed)")
    add_publish_args(p, "2 noise fields and 8 images (for the tests)")
    p.set_defaults(doc=CONCEPTS)
    args = p.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "audit", parse_args, run, report, argv)


if __name__ == "__main__":
    main()
