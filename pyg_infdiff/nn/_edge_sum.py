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
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Elements of one E x C intermediate: 2^18 float32 values, 1 MiB, a core's L2 cache.
CHUNK_ELEMENTS = 1 << 18


def chunk_edges(num_edges: int, channels: int, device: torch.device) -> int:
    r"""Edges per chunk: the whole set off the CPU (one fused pass per operation, no loop of
    small launches), else about :data:`CHUNK_ELEMENTS` values per intermediate."""
    if device.type != "cpu":
        return max(num_edges, 1)
    return max(CHUNK_ELEMENTS // max(channels, 1), 64)


def _kernel_rows(kernel: Tensor, tap: Tensor | None, sl: slice) -> Tensor:
    return kernel[sl] if tap is None else kernel.index_select(0, tap[sl])


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
        x, kernel, src, dst, tap = ctx.saved_tensors
        need_x, need_kernel = ctx.needs_input_grad[:2]
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
    return _EdgeSum.apply(x, kernel, src, dst, tap, num_dst)


def composed_edge_sum(x: Tensor, kernel: Tensor, src: Tensor, dst: Tensor, num_dst: int,
                      tap: Tensor | None = None) -> Tensor:
    r""":func:`edge_sum` written with autograd from its parts: gather the kernel rows and the
    sources per edge, multiply, add by target (what :func:`edge_sum` traces to under
    :func:`torch.compile`, and the reference of ``bench/edge_sum.py``)."""
    rows = kernel if tap is None else kernel.index_select(0, tap)
    msg = rows * x.index_select(0, src)
    return msg.new_zeros(num_dst, x.size(1)).index_add_(0, dst, msg)
