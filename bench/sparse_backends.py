r"""Benchmark of the sparse aggregation backends for :class:`KernelIntegralConv`'s graph path.

Workload: the radius graph (with self loops) of a 4x subsampled 256² lattice, radius 6 pixels
(16,384 nodes, ~28 neighbours each), C = 64 channels, float32, forward + backward.

* **scalar** weights (one weight per edge, e.g. the quadrature window of the denominator or a
  fixed scalar kernel): ``y = A x`` with a sparse ``A``;
* **depthwise** messages (one weight per edge and channel, the operator's numerator): the
  ``[E, C]`` message is already formed; only its sum per target is timed.

Backends: ``torch.sparse`` CSR / COO matmul, ``index_add_``, PyG's ``scatter`` (``scatter_add_``
with a broadcast index), segment reduction over target-sorted edges
(``torch_geometric.utils.segment``, i.e. ``torch.segment_reduce`` without torch-scatter) and
``torch_sparse.SparseTensor`` when ``torch_sparse`` is importable (reported unavailable
otherwise, with the reason). Medians of repeats, backends interleaved.

Run: ``python bench/sparse_backends.py`` (prints a markdown table); ``--write`` also replaces the
section between ``<!-- bench:sparse_backends -->`` and ``<!-- /bench:sparse_backends -->`` in
``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from _common import DOC, write_section
from torch_geometric.utils import scatter, segment

from pyg_infdiff.graph import LatticeIndex, radius_graph, subsample

SIZE, RATE, RADIUS_PX, CHANNELS = 256, 4, 6.0, 64


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


def torch_sparse_status() -> str | None:
    r"""``None`` when ``torch_sparse`` is importable, else why not."""
    if importlib.util.find_spec("torch_sparse") is None:
        return (
            "torch_sparse is not installed (building it needs torch-scatter as well, ~30 min on "
            "2 cores; PyG 2.8 deprecates both)"
        )
    return None


def torch_sparse_note(status: str | None, t_scalar: dict[int, dict[str, float]],
                      threads: list[int]) -> str:
    r"""The torch_sparse line of the notes: why it is missing, or its versions and its speed-up
    over ``torch.sparse`` CSR on scalar weights (the only case it can express)."""
    if status is not None:
        return f"torch_sparse: unavailable: {status}."
    import torch_scatter
    import torch_sparse

    ratios = ", ".join(
        f"{t_scalar[t]['torch.sparse CSR'] / t_scalar[t]['torch_sparse.SparseTensor']:.2f}× "
        f"({t} thr.)" for t in threads)
    return (f"torch_sparse {torch_sparse.__version__} (torch-scatter {torch_scatter.__version__}"
            f"): SparseTensor vs torch.sparse CSR on scalar weights: {ratios} as fast; not used "
            "by the library (docs/operator.md, 'Aggregation backend').")


def workload(generator: torch.Generator) -> tuple[torch.Tensor, int]:
    pixel = subsample((SIZE, SIZE), rate=RATE, generator=generator)
    index = LatticeIndex((SIZE, SIZE), pixel, torch.zeros_like(pixel), 1)
    edge_index = radius_graph(index.pos(), RADIUS_PX / SIZE, loop=True)
    order = torch.argsort(edge_index[1] * pixel.numel() + edge_index[0])  # sorted by target
    return edge_index[:, order], pixel.numel()


def cases(edge_index: torch.Tensor, num_nodes: int, generator: torch.Generator):
    src, dst = edge_index
    num_edges = src.numel()
    x = torch.randn(num_nodes, CHANNELS, generator=generator, requires_grad=True)
    w = torch.rand(num_edges, generator=generator, requires_grad=True)
    msg = torch.randn(num_edges, CHANNELS, generator=generator, requires_grad=True)
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(dst, minlength=num_nodes).cumsum(0)

    def backward(out: torch.Tensor) -> None:
        out.sum().backward()

    def sparse_matmul(layout: str) -> Callable[[], None]:
        def fn() -> None:
            coo = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (num_nodes, num_nodes))
            a = coo.coalesce() if layout == "coo" else coo.to_sparse_csr()
            backward(torch.sparse.mm(a, x))

        return fn

    scalar = {
        "torch.sparse CSR": sparse_matmul("csr"),
        "torch.sparse COO": sparse_matmul("coo"),
        "index_add_": lambda: backward(
            x.new_zeros(num_nodes, CHANNELS).index_add_(0, dst, w.unsqueeze(-1) * x[src])
        ),
        "PyG scatter": lambda: backward(
            scatter(w.unsqueeze(-1) * x[src], dst, 0, num_nodes, reduce="sum")
        ),
        "segment (CSR)": lambda: backward(segment(w.unsqueeze(-1) * x[src], ptr, reduce="sum")),
    }
    depthwise = {
        "index_add_": lambda: backward(
            msg.new_zeros(num_nodes, CHANNELS).index_add_(0, dst, msg)
        ),
        "PyG scatter": lambda: backward(scatter(msg, dst, 0, num_nodes, reduce="sum")),
        "segment (CSR)": lambda: backward(segment(msg, ptr, reduce="sum")),
    }
    if torch_sparse_status() is None:
        from torch_sparse import SparseTensor

        def sparse_tensor() -> None:
            a = SparseTensor(row=dst, col=src, value=w, sparse_sizes=(num_nodes, num_nodes))
            backward(a @ x)

        scalar["torch_sparse.SparseTensor"] = sparse_tensor
    return scalar, depthwise, num_edges


def run(repeats: int, threads: list[int]) -> tuple[str, list[str]]:
    gen = torch.Generator().manual_seed(0)
    edge_index, num_nodes = workload(gen)
    scalar, depthwise, num_edges = cases(edge_index, num_nodes, gen)
    t_scalar, t_depth = {}, {}
    for num_threads in threads:
        torch.set_num_threads(num_threads)
        t_scalar[num_threads] = median_ms(scalar, repeats)
        t_depth[num_threads] = median_ms(depthwise, repeats)
    head = [f"scalar `A @ x`, {t} thr. (ms)" for t in threads]
    head += [f"depthwise `[E, C]` sum, {t} thr. (ms)" for t in threads]
    rows = ["| backend | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    names = list(scalar) + [n for n in depthwise if n not in scalar]
    status = torch_sparse_status()
    if status is not None:
        names.append("torch_sparse.SparseTensor")
    for name in names:
        cells = []
        for table in (t_scalar, t_depth):
            for t in threads:
                if name in table[t]:
                    cells.append(f"{table[t][name]:.1f}")
                else:
                    cells.append("unavailable" if status is not None and "torch_sparse" in name
                                 else "n/a")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = [
        f"{num_nodes:,} nodes, {num_edges:,} edges (4× subsampled {SIZE}², radius "
        f"{RADIUS_PX:g} px, self loops), C = {CHANNELS}, float32, forward + backward, median of "
        f"{repeats} repeats (backends interleaved). The scalar rows include forming the "
        "sparse matrix (or the gathered `x[src]`) each call.",
        "torch.sparse and torch_sparse.SparseTensor have no per-channel (depthwise) weights: "
        "'n/a'.",
        torch_sparse_note(status, t_scalar, threads),
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores "
        f"(shared; load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}. Command: "
        f"`{' '.join(['python', 'bench/sparse_backends.py', *sys.argv[1:]])}`.",
    ]
    return "\n".join(rows), notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to compare (default: 1 and all)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    threads = args.threads or sorted({1, torch.get_num_threads()})
    table, notes = run(args.repeats, threads)
    print(table)
    print("\n".join(f"- {n}" for n in notes))
    if args.write:
        write_section("sparse_backends", "\n".join([
            "## Sparse aggregation backends (operator graph path)", "", table, "",
            *[f"- {n}" for n in notes]]))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
