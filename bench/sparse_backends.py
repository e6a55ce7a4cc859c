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
``torch_sparse.SparseTensor`` when ``torch_sparse`` imports (reported unavailable otherwise,
with the reason). Medians of repeats, backends interleaved.

CPU only: the table compares torch CPU thread counts (``--threads``), so there is no
``--device``.

Run::

    python bench/sparse_backends.py                # prints a markdown table
    python bench/sparse_backends.py --repeats 7 --write
                                                   # also replaces the section between
                                                   # <!-- bench:sparse_backends --> and
                                                   # <!-- /bench:sparse_backends --> in
                                                   # docs/benchmarks.md
    python bench/sparse_backends.py --smoke        # the same rows on a 32² lattice, C = 8
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _args import positive_int
from _common import time_cases
from _publish import add_publish_args
from _skeleton import bench_main, bench_parser, machine_note
from torch_geometric.utils import scatter, segment

from pyg_infdiff.graph import LatticeIndex, radius_graph, subsample

TITLE = "## Sparse aggregation backends (operator graph path)"
SIZE, RATE, RADIUS_PX, CHANNELS = 256, 4, 6.0, 64
# lattice side and channels of the published run and of --smoke (the same rows, smaller)
FULL, SMOKE = dict(size=SIZE, channels=CHANNELS), dict(size=32, channels=8)
SPARSE_TENSOR = "torch_sparse.SparseTensor"


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    r"""Median milliseconds of each case after one warm-up call, the cases interleaved
    (:func:`_common.time_cases`)."""
    return {name: 1e3 * t.median for name, t in time_cases(fns, repeats, warmup=1).items()}


def torch_sparse_status() -> str | None:
    r"""``None`` when ``torch_sparse`` imports, else why not."""
    try:
        import torch_sparse  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name not in ("torch_sparse", "torch_scatter"):
            return f"torch_sparse does not import: {err}"
        return (
            "torch_sparse is not installed (building it needs torch-scatter as well, ~30 min on "
            "2 cores; PyG 2.8 deprecates both)"
        )
    except Exception as err:  # e.g. built against another torch
        return f"torch_sparse does not import: {type(err).__name__}: {err}"
    return None


def torch_sparse_note(status: str | None, t_scalar: dict[int, dict[str, float]],
                      threads: list[int]) -> str:
    r"""The torch_sparse line of the notes: why it is missing, or its versions and its speed-up
    over ``torch.sparse`` CSR on scalar weights (the only case it can express)."""
    if status is not None:
        return f"torch_sparse: unavailable: {status}."
    import torch_sparse

    try:
        import torch_scatter

        scatter_version = torch_scatter.__version__
    except ImportError:
        scatter_version = "not installed"
    ratios = ", ".join(
        f"{t_scalar[t]['torch.sparse CSR'] / t_scalar[t][SPARSE_TENSOR]:.2f}× "
        f"({t} thr.)" for t in threads)
    return (f"torch_sparse {torch_sparse.__version__} (torch-scatter {scatter_version}"
            f"): SparseTensor vs torch.sparse CSR on scalar weights: {ratios} as fast; not used "
            "by the library (docs/operator.md, 'Aggregation backend').")


def workload(generator: torch.Generator, size: int = SIZE) -> tuple[torch.Tensor, int]:
    pixel = subsample((size, size), rate=RATE, generator=generator)
    index = LatticeIndex((size, size), pixel, torch.zeros_like(pixel), 1)
    edge_index = radius_graph(index.pos(), RADIUS_PX / size, loop=True)
    order = torch.argsort(edge_index[1] * pixel.numel() + edge_index[0])  # sorted by target
    return edge_index[:, order], pixel.numel()


def cases(edge_index: torch.Tensor, num_nodes: int, generator: torch.Generator,
          channels: int = CHANNELS, with_sparse_tensor: bool = True):
    src, dst = edge_index
    num_edges = src.numel()
    x = torch.randn(num_nodes, channels, generator=generator, requires_grad=True)
    w = torch.rand(num_edges, generator=generator, requires_grad=True)
    msg = torch.randn(num_edges, channels, generator=generator, requires_grad=True)
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
            x.new_zeros(num_nodes, channels).index_add_(0, dst, w.unsqueeze(-1) * x[src])
        ),
        "PyG scatter": lambda: backward(
            scatter(w.unsqueeze(-1) * x[src], dst, 0, num_nodes, reduce="sum")
        ),
        "segment (CSR)": lambda: backward(segment(w.unsqueeze(-1) * x[src], ptr, reduce="sum")),
    }
    depthwise = {
        "index_add_": lambda: backward(
            msg.new_zeros(num_nodes, channels).index_add_(0, dst, msg)
        ),
        "PyG scatter": lambda: backward(scatter(msg, dst, 0, num_nodes, reduce="sum")),
        "segment (CSR)": lambda: backward(segment(msg, ptr, reduce="sum")),
    }
    if with_sparse_tensor:
        from torch_sparse import SparseTensor

        def sparse_tensor() -> None:
            a = SparseTensor(row=dst, col=src, value=w, sparse_sizes=(num_nodes, num_nodes))
            backward(a @ x)

        scalar[SPARSE_TENSOR] = sparse_tensor
    return scalar, depthwise, num_edges


def run(args: argparse.Namespace) -> dict:
    r"""The tables of :func:`measure` at the sizes of the run."""
    return measure(args.repeats, args.threads, **(SMOKE if args.smoke else FULL))


def measure(repeats: int, threads: list[int], size: int = SIZE,
            channels: int = CHANNELS) -> dict:
    r"""Median milliseconds of every backend, scalar and depthwise, at each thread count."""
    status = torch_sparse_status()
    gen = torch.Generator().manual_seed(0)
    edge_index, num_nodes = workload(gen, size)
    scalar, depthwise, num_edges = cases(edge_index, num_nodes, gen, channels, status is None)
    t_scalar, t_depth = {}, {}
    before = torch.get_num_threads()
    try:
        for num_threads in threads:
            torch.set_num_threads(num_threads)
            t_scalar[num_threads] = median_ms(scalar, repeats)
            t_depth[num_threads] = median_ms(depthwise, repeats)
    finally:
        torch.set_num_threads(before)
    return dict(scalar=t_scalar, depthwise=t_depth, threads=threads, torch_sparse=status,
                num_nodes=num_nodes, num_edges=num_edges, size=size, channels=channels,
                repeats=repeats)


def report(args: argparse.Namespace, result: dict) -> str:
    threads, status = result["threads"], result["torch_sparse"]
    t_scalar, t_depth = result["scalar"], result["depthwise"]
    head = [f"scalar `A @ x`, {t} thr. (ms)" for t in threads]
    head += [f"depthwise `[E, C]` sum, {t} thr. (ms)" for t in threads]
    rows = ["| backend | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    first = threads[0]
    names = list(t_scalar[first]) + [n for n in t_depth[first] if n not in t_scalar[first]]
    if status is not None:
        names.append(SPARSE_TENSOR)
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
        f"{result['num_nodes']:,} nodes, {result['num_edges']:,} edges ({RATE}× subsampled "
        f"{result['size']}², radius {RADIUS_PX:g} px, self loops), C = {result['channels']}, "
        f"float32, forward + backward, median of {result['repeats']} repeats (backends "
        "interleaved). The scalar rows include forming the sparse matrix (or the gathered "
        "`x[src]`) each call.",
        "torch.sparse and torch_sparse.SparseTensor have no per-channel (depthwise) weights: "
        "'n/a'.",
        torch_sparse_note(status, t_scalar, threads),
        machine_note(result),
    ]
    return "\n".join([TITLE, "", *rows, "", *[f"- {n}" for n in notes]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__, epilog="CPU only: the table compares torch CPU thread counts, so "
                     "there is no --device.")
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--threads", type=positive_int, nargs="+", default=None,
                   help="torch CPU thread counts to compare (None: 1 and all)")
    add_publish_args(p, "the same rows on a 4× subsampled 32² lattice, C = 8, one repeat (for "
                        "the tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    args.threads = args.threads or sorted({1, torch.get_num_threads()})
    return args


def main(argv: list[str] | None = None) -> dict:
    return bench_main(__file__, "sparse_backends", parse_args, run, report, argv, stamp=True,
                      threads=False)


if __name__ == "__main__":
    main()
