"""Counting host synchronisations (issue 16, item 1): every way Python code reads a tensor's
value back to the host, where on a GPU it would wait for the device.

:func:`count_host_syncs` patches ``torch.Tensor.item``, ``tolist``, ``__bool__``, ``__int__``,
``__float__`` and ``__index__`` with counters for the duration of a ``with`` block, and records
where each call came from (file and line of the first frame inside ``pyg_infdiff``, the
caller of a shared checker such as :func:`~pyg_infdiff.graph.check_nodes`), so a
failing test names the line that synchronised. It counts on any device, CPU included: a read of
a CPU tensor is the same Python call that would wait for a GPU.

Operators that synchronise inside C++ on CUDA (their output size or a bound depends on the
data) are counted too, under their own names: ``torch.bincount``, ``nonzero``, ``unique``,
``masked_select`` and indexing with a boolean mask (``x[mask]``). ``repeat_interleave`` is not
(it is free with ``output_size``, and only :meth:`LatticeIndex.full` uses it, at set-up).
"""
from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

PACKAGE = str(Path(__file__).resolve().parents[1] / "pyg_infdiff")
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
DATA_SIZED_OPS = ("bincount", "nonzero", "unique", "masked_select")


@dataclass
class SyncCount:
    r"""The host reads seen in a :func:`count_host_syncs` block."""

    by_method: Counter = field(default_factory=Counter)
    by_site: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_method.values())

    def library(self) -> int:
        r"""Reads made by code of the package (not by the test itself)."""
        return sum(n for site, n in self.by_site.items() if site != "<outside the package>")

    def __str__(self) -> str:
        sites = ", ".join(f"{site} x{n}" for site, n in self.by_site.most_common())
        return f"{self.total} host reads ({dict(self.by_method)}): {sites}"


# Shared value checkers: a read inside one is attributed to the line that called it, so that a
# test still tells the model's boundary check from a check inside a layer.
CHECKERS = {"check_nodes"}


def _site() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(PACKAGE) and frame.f_code.co_name not in CHECKERS:
            return f"{Path(name).relative_to(Path(PACKAGE).parent)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<outside the package>"


@contextlib.contextmanager
def count_host_syncs() -> Iterator[SyncCount]:
    r"""Counts the host reads of tensor values inside the block (see the module docstring)."""
    count = SyncCount()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str, original):
        def counted(self, *args, **kwargs):
            count.by_method[name] += 1
            count.by_site[_site()] += 1
            return original(self, *args, **kwargs)

        return counted

    def wrap_getitem(original):
        def getitem(self, index):
            items = index if isinstance(index, tuple) else (index,)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items):
                count.by_method["bool-mask index"] += 1
                count.by_site[_site()] += 1
            return original(self, index)

        return getitem

    patched = [(torch.Tensor, name, wrap(name, original)) for name, original in originals.items()]
    for owner in (torch, torch.Tensor):
        for name in DATA_SIZED_OPS:
            if hasattr(owner, name):
                patched.append((owner, name, wrap(name, getattr(owner, name))))
    patched.append((torch.Tensor, "__getitem__", wrap_getitem(torch.Tensor.__getitem__)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    for owner, name, function in patched:
        setattr(owner, name, function)
    try:
        yield count
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
