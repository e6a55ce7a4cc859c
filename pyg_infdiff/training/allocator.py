r"""Keeping freed memory in the process: glibc's allocator settings for loops over large
tensors (issue 16).

A training or sampling loop allocates and frees the same large temporaries at every step. By
default glibc serves every block above its ``mmap`` threshold (dynamic, but never above 32 MiB
on 64-bit Linux) with a fresh ``mmap`` and unmaps it again on ``free``; the heap is trimmed
back to the system as soon as its free top exceeds the trim threshold. Every step then touches
new pages, which the kernel must fault in and zero: measured in issue 16, sampling 64 images at
64² spent 22.9 s of *system* time for 25.6 s of user time. :func:`keep_freed_memory` tells glibc
to keep what the process frees for the next step instead.

The price: the resident memory of the process stays at its high-water mark until it exits
(freed blocks are reused by the process, not given back), and that mark is somewhat higher.
That is what a training or sampling script wants, and why the library's entry points
(``examples/sample.py``, ``examples/shapes_demo.py``) call it first thing, and not the library
itself, which must not change the allocator of a process it is imported into.

Measured with ``/usr/bin/time`` around the examples (2 threads, a 32² preset checkpoint; the
2-core machine was shared with other jobs, so wall times are not comparable), without the call
and then with it:

======================================  ========================  ===============  ==============
case                                    system / user (s)         minor faults     peak RSS (GiB)
======================================  ========================  ===============  ==============
sample 64 images at 64², 25 DDIM steps  23.4 / 65.2 → 0.7 / 54.4  13.6 M → 0.25 M  0.87 → 1.00
sample 64 images at 32², 10 steps       1.5 / 6.7 → 0.45 / 6.4    0.57 M → 0.13 M  0.50 → 0.56
sample 16 images at 128², 10 steps      14.9 / 15.4 → 1.0 / 12.3  8.0 M → 0.40 M   1.14 → 1.58
train 8 steps at 64², batch 64          2.4 / 51.9 → 0.9 / 36.4   1.10 M → 0.32 M  1.31 → 1.31
======================================  ========================  ===============  ==============

The samples are bit-for-bit the same. Of the 2.0 GiB of fresh pages that one forward of that
model faults in at 64² with 64 samples, the operator blocks take 1.3 GiB and pooling and
unpooling 0.6 GiB (activations of :math:`N = 262{,}144` nodes by 32 to 128 channels, 32 to
128 MiB each, all above glibc's largest ``mmap`` threshold); the sampler's own arithmetic
faults in 94 MiB over all 25 steps.
"""
from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["freed_memory_kept", "keep_freed_memory"]

# mallopt parameters of glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

# Whether keep_freed_memory() applied its settings in this process (a one-element list, mutated).
_KEPT: list[bool] = [False]


def keep_freed_memory(top_pad: int = 64 << 20) -> bool:
    r"""Makes glibc's ``malloc`` keep freed memory in the process, so that a loop which
    allocates and frees the same large tensors at every step stops paying the kernel to map and
    zero fresh pages each time (page-fault churn: system time comparable to the user time).

    Sets, with ``mallopt``: ``M_MMAP_MAX = 0`` (no block is served by its own ``mmap``: those
    above 32 MiB could not be kept otherwise, since glibc caps ``M_MMAP_THRESHOLD`` there),
    ``M_TRIM_THRESHOLD`` to 2 GiB, the largest value it takes (the heap is not trimmed while
    less than that of it is free) and ``M_TOP_PAD`` to
    :obj:`top_pad` (the heap grows in steps of at least that much). The same as starting
    Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...``, from
    within the process; call it before the loop (it affects only later allocations).

    The resident memory then stays at the process's high-water mark until exit. A no-op
    returning :obj:`False` off glibc (macOS, Windows, musl).

    .. skip-test: it would change the allocator of the test process itself
    .. code-block:: python

        from pyg_infdiff.training.allocator import keep_freed_memory

        keep_freed_memory()  # first thing in a training or sampling script

    Args:
        top_pad (int, optional): Bytes the heap grows by beyond each request.
            (default: :obj:`64 << 20`, 64 MiB)

    Returns:
        bool: Whether every setting was applied (glibc accepted it).
    """
    if top_pad < 0:
        raise ValueError(f"'top_pad' must be non-negative, got {top_pad}")
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    int_max = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can express
    settings = [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, int_max), (M_TOP_PAD, min(top_pad, int_max))]
    _KEPT[0] = all(mallopt(param, value) == 1 for param, value in settings)
    return _KEPT[0]


def freed_memory_kept() -> bool:
    r"""Whether :func:`keep_freed_memory` applied its settings in this process: timings of
    loops over large tensors differ a lot between the two regimes (the benchmarks record it)."""
    return _KEPT[0]
