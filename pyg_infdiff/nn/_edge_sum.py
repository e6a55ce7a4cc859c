r"""The depthwise kernel sum over edges, :math:`\sum_{e \to i} \kappa_e \odot x_{s(e)}`, in
cache-sized chunks with a hand-written backward.

Written with autograd from its parts (gather the kernel and the sources per edge, multiply, add
by target), the sum materialises three :math:`E \times C` tensors in the forward pass, keeps two
of them for the backward pass and writes four more there. On a CPU those tensors are far larger
than the caches, so the layer runs at the speed of main memory. Here every :math:`E \times C`
intermediate lives for one chunk of edges only (about a megabyte), and the backward pass
recomputes the gathers from the inputs instead of keeping them: for the edges of a training
batch on this project's CPU, 2.1-2.3x faster with freed memory kept in the process (as the
examples run) and 5.7-7.6x with glibc's default allocator, where the composition also pays
page faults on its large tensors (``bench/edge_sum.py``); and no per-edge activation memory on
any device.

**Compiled loops.** Even chunked, every operation of the sum is a pass over memory of its own.
With the ``"compiled"`` backend (:func:`set_edge_sum_backend`), the forward sum and the two sums
of the backward pass are each one loop that :func:`torch.compile` (Inductor's C++ code) writes:
gather, multiply and add per edge, nothing per edge stored. Those loops run on one thread: in
edge order, as the chunked sum adds, so the two backends add the same terms in the same order
(bit for bit alike on this project's machine; the tests allow rounding) and a run repeats
exactly; and without the atomic additions that a parallel scatter needs, which made a parallel
compiled sum slower than the chunked one on two threads. While a loop runs, the process's
intra-op thread count is 1 (:func:`torch.set_num_threads`, restored afterwards). On a training
batch of ``bench/edge_sum.py`` (611,686 edges, 32 channels) they take the sum, forward and
backward, from 79.2 to 10.9 ms on one thread (46.3 ms for the chunked sum on two). The first call
compiles (about 12 s; about 3 s in later processes, which find the code in Inductor's cache on
disk), so ``"auto"``, the default, compiles only sums of at least :data:`AUTO_MIN_ELEMENTS`
edges × channels, on a CPU.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Elements of one E x C intermediate: 2^18 float32 values, 1 MiB, a core's L2 cache.
CHUNK_ELEMENTS = 1 << 18

#: The backends of :func:`edge_sum` (:func:`set_edge_sum_backend`).
EdgeSumBackend = Literal["auto", "fused", "compiled"]
#: The environment variable that sets the backend when a process starts.
BACKEND_ENV_VAR = "PYG_INFDIFF_EDGE_SUM"
#: Under ``"auto"``, sums of at least this many edges × channels run as compiled loops: a
#: training batch of sparse nodes is far above it (9.8 M and 19.6 M in ``bench/edge_sum.py``), the
#: tests' graphs and a layer read once are below it, where compiling would cost more than it saves.
AUTO_MIN_ELEMENTS = 1 << 20
_BACKENDS = ("auto", "fused", "compiled")
_backend: str = os.environ.get(BACKEND_ENV_VAR, "auto")
_compiled: dict[str, Callable] = {}  # the compiled loops, made on first use
_compile_error: str | None = None  # why compiling failed under "auto" (then never tried again)


def set_edge_sum_backend(backend: EdgeSumBackend) -> str:
    r"""Chooses how the depthwise edge sum of :class:`~pyg_infdiff.nn.KernelIntegralConv`'s
    graph path runs on a CPU, for the whole process, and returns the previous choice.

    * ``"fused"``: chunks of cache size in eager PyTorch, backward by hand.
    * ``"compiled"``: one loop per sum, written by :func:`torch.compile` (needs a C++ compiler,
      as torch-cluster's build does); a sum that cannot compile raises.
    * ``"auto"``: compiled loops for sums of at least :data:`AUTO_MIN_ELEMENTS` edges ×
      channels, the chunks below that or where compiling fails (with one warning).

    Both add the same terms in the same order. Off the CPU the sum is one pass of PyTorch
    operations, and under :func:`torch.compile` of a whole model the compiler fuses the sum
    itself. The environment variable ``PYG_INFDIFF_EDGE_SUM`` sets the backend when a process
    starts. (default: ``"auto"``)

    Args:
        backend (str): ``"auto"``, ``"fused"`` or ``"compiled"``.
    """
    global _backend
    _check_backend(backend)
    previous, _backend = _backend, backend
    return previous


def get_edge_sum_backend() -> str:
    r"""The backend of the edge sum (:func:`set_edge_sum_backend`)."""
    _check_backend(_backend)
    return _backend


def _check_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"The edge-sum backend must be one of {', '.join(_BACKENDS)}, got "
                         f"{backend!r} (set_edge_sum_backend, or ${BACKEND_ENV_VAR})")


def chunk_edges(num_edges: int, channels: int, device: torch.device) -> int:
    r"""Edges per chunk: the whole set off the CPU (one fused pass per operation, no loop of
    small launches), else about :data:`CHUNK_ELEMENTS` values per intermediate."""
    if device.type != "cpu":
        return max(num_edges, 1)
    return max(CHUNK_ELEMENTS // max(channels, 1), 64)


def _kernel_rows(kernel: Tensor, tap: Tensor | None, sl: slice) -> Tensor:
    return kernel[sl] if tap is None else kernel.index_select(0, tap[sl])


def _saved(ctx) -> tuple:
    # what both edge sums keep for the backward pass, and which inputs need gradients
    return (*ctx.saved_tensors, *ctx.needs_input_grad[:2])


class _EdgeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor, src: Tensor, dst: Tensor, tap: Tensor | None,
                num_dst: int) -> Tensor:
        num_edges, channels = src.numel(), x.size(1)
        chunk = chunk_edges(num_edges, channels, x.device)
        out = x.new_zeros(num_dst, channels, dtype=torch.promote_types(x.dtype, kernel.dtype))
        for start in range(0, num_edges, chunk):
            sl = slice(start, start + chunk)
            out.index_add_(0, dst[sl], _kernel_rows(kernel, tap, sl) * x.index_select(0, src[sl]))
        ctx.save_for_backward(x, kernel, src, dst, tap)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, kernel, src, dst, tap, need_x, need_kernel = _saved(ctx)
        grad_x = torch.zeros_like(x) if need_x else None
        grad_kernel = torch.zeros_like(kernel) if need_kernel else None
        grad = grad.contiguous()
        for start in range(0, src.numel(), ctx.chunk):
            sl = slice(start, start + ctx.chunk)
            grad_e = grad.index_select(0, dst[sl])
            if need_x:
                grad_x.index_add_(0, src[sl], (grad_e * _kernel_rows(kernel, tap, sl)).to(x.dtype))
            if need_kernel:
                grad_k = (grad_e * x.index_select(0, src[sl])).to(kernel.dtype)
                if tap is None:
                    grad_kernel[sl] = grad_k
                else:
                    grad_kernel.index_add_(0, tap[sl], grad_k)
        return grad_x, grad_kernel, None, None, None, None


def _kernel_grad(grad: Tensor, x: Tensor, src: Tensor, dst: Tensor, num_rows: int,
                 tap: Tensor | None) -> Tensor:
    # d out / d kernel: per edge, or summed into the rows of the table
    per_edge = grad.index_select(0, dst) * x.index_select(0, src)
    if tap is None:
        return per_edge
    return per_edge.new_zeros(num_rows, per_edge.size(1)).index_add_(0, tap, per_edge)


class _OneThread:
    r"""Runs the compiled loops on one thread (in edge order, no atomic additions), restoring
    the thread count afterwards."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        if self.threads > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        if self.threads > 1:
            torch.set_num_threads(self.threads)


def _run_loop(name: str, *args) -> Tensor:
    r"""One of :data:`_LOOPS`, compiled on first use and run on one thread. Where compiling
    fails under ``"auto"``: a warning (once), this call eager (the same numbers) and the
    chunked sum from then on; under ``"compiled"``: an error."""
    global _compile_error
    try:
        if name not in _compiled:
            _compiled[name] = torch.compile(_LOOPS[name], dynamic=True, fullgraph=True)
        with _OneThread():
            return _compiled[name](*args)
    except Exception as error:  # a compiler missing or failing
        if get_edge_sum_backend() == "compiled":
            raise RuntimeError(
                "The compiled edge sum failed (torch.compile needs a working C++ compiler); "
                f"set_edge_sum_backend('fused') or {BACKEND_ENV_VAR}=fused runs the chunked "
                "sum instead") from error
        if _compile_error is None:
            _compile_error = f"{type(error).__name__}: {error}".splitlines()[0]
            warnings.warn(f"The compiled edge sum failed ({_compile_error}); using the chunked "
                          f"sum from now on (set {BACKEND_ENV_VAR}=fused to skip the attempt)",
                          RuntimeWarning, stacklevel=2)
        return _LOOPS[name](*args)


class _CompiledEdgeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor, src: Tensor, dst: Tensor, tap: Tensor | None,
                num_dst: int) -> Tensor:
        with torch.no_grad():
            out = _run_loop("sum", x, kernel, src, dst, num_dst, tap)
        ctx.save_for_backward(x, kernel, src, dst, tap)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, kernel, src, dst, tap, need_x, need_kernel = _saved(ctx)
        grad = grad.contiguous()
        grad_x = grad_kernel = None
        if need_x:  # the same sum along the reversed edges
            grad_x = _run_loop("sum", grad, kernel, dst, src, x.size(0), tap).to(x.dtype)
        if need_kernel:
            grad_kernel = _run_loop("kernel_grad", grad, x, src, dst, kernel.size(0),
                                    tap).to(kernel.dtype)
        return grad_x, grad_kernel, None, None, None, None


def _wants_compiled(x: Tensor, num_edges: int) -> bool:
    backend = get_edge_sum_backend()
    if x.device.type != "cpu" or backend == "fused":
        return False
    if backend == "compiled":
        return True
    return _compile_error is None and num_edges * x.size(1) >= AUTO_MIN_ELEMENTS


def edge_sum(x: Tensor, kernel: Tensor, src: Tensor, dst: Tensor, num_dst: int,
             tap: Tensor | None = None) -> Tensor:
    r"""The depthwise kernel sum :math:`y_i = \sum_{e:\, d(e) = i} \kappa_e \odot x_{s(e)}`.

    Args:
        x (torch.Tensor): Source features, :math:`(N_s, C)`.
        kernel (torch.Tensor): The kernel of each edge, :math:`(E, C)`, or, with :obj:`tap`, a
            table :math:`(T, C)` whose row ``tap[e]`` is the kernel of edge :math:`e`.
        src (torch.Tensor): Source of each edge, :math:`(E,)`.
        dst (torch.Tensor): Target of each edge, :math:`(E,)`, any order.
        num_dst (int): Number of targets :math:`N_t`.
        tap (torch.Tensor, optional): Row of :obj:`kernel` of each edge, :math:`(E,)`.

    Returns:
        torch.Tensor: :math:`(N_t, C)`, differentiable in :obj:`x` and :obj:`kernel`.
    """
    if torch.compiler.is_compiling():  # one traced expression: the compiler fuses it itself
        return composed_edge_sum(x, kernel, src, dst, num_dst, tap)
    if _wants_compiled(x, src.numel()):
        return _CompiledEdgeSum.apply(x, kernel, src, dst, tap, num_dst)
    return _EdgeSum.apply(x, kernel, src, dst, tap, num_dst)


def composed_edge_sum(x: Tensor, kernel: Tensor, src: Tensor, dst: Tensor, num_dst: int,
                      tap: Tensor | None = None) -> Tensor:
    r""":func:`edge_sum` written with autograd from its parts: gather the kernel rows and the
    sources per edge, multiply, add by target (what :func:`edge_sum` traces to under
    :func:`torch.compile`, the forward loop of its compiled backend, and the reference of
    ``bench/edge_sum.py``)."""
    rows = kernel if tap is None else kernel.index_select(0, tap)
    msg = rows * x.index_select(0, src)
    return msg.new_zeros(num_dst, x.size(1)).index_add_(0, dst, msg)


# The loops of the compiled backend, as PyTorch expressions for the compiler: the sum is its
# composition (in edge order, out[d(e)] += kernel[tap(e)] * x[s(e)]), the kernel's gradient
# the products per edge, summed into the rows of a table.
_LOOPS: dict[str, Callable] = {"sum": composed_edge_sum, "kernel_grad": _kernel_grad}
