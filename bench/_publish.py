r"""How the benchmark scripts publish their results: the sections of ``docs/benchmarks.md``, their
markdown tables and figures, and the command-line flags every script shares for them.

* :func:`write_section`: replaces ``<!-- bench:NAME -->...<!-- /bench:NAME -->`` in
  ``docs/benchmarks.md``, re-reading the file under an exclusive lock right before writing
  (several scripts write their own sections); :func:`publish` prints a section and writes it;
  :func:`read_section` reads one back.
* :func:`markdown_table`, :func:`save_figure`, :func:`compact_figure`: the pieces of a section.
* :func:`add_publish_args`: ``--write``, ``--doc``, ``--figures`` and ``--smoke``.

Import it as ``from _publish import publish, ...`` (``bench/`` is on ``sys.path`` when a script
runs as ``python bench/<script>.py``).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import DOC

__all__ = [
    "add_publish_args",
    "compact_figure",
    "markdown_table",
    "publish",
    "read_section",
    "save_figure",
    "write_goal_row",
    "write_section",
]


def add_publish_args(parser: argparse.ArgumentParser, smoke: str,
                     figures: Path | None = None, figure: str = "figure") -> None:
    r"""Adds the flags every benchmark script shares: ``--write`` (the section into ``--doc``,
    and the :obj:`figure` into ``--figures`` when the script draws one), ``--doc``,
    ``--figures`` (defaulting to :obj:`figures`, only when given) and ``--smoke`` (help
    :obj:`smoke`: what the tiny configuration runs)."""
    target = f" and the {figure} into --figures" if figures is not None else ""
    parser.add_argument("--write", action="store_true",
                        help=f"write the section into --doc{target}")
    parser.add_argument("--doc", type=Path, default=DOC)
    if figures is not None:
        parser.add_argument("--figures", type=Path, default=figures)
    parser.add_argument("--smoke", action="store_true", help=smoke)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    r"""A GitHub markdown table; cells are formatted with :func:`str`."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"every row needs {len(headers)} cells, got {[len(r) for r in rows]}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: str | os.PathLike = DOC) -> None:
    r"""Replaces the section ``<!-- bench:NAME -->...<!-- /bench:NAME -->`` of a markdown file
    with :obj:`body` (appends it, markers included, when the markers are missing; creates the
    file when needed). The file is locked (``flock``) and re-read right before writing, so
    scripts writing other sections at the same time lose nothing.

    Args:
        name (str): The section name (letters, digits, ``_``, ``-``).
        body (str): The markdown between the markers.
        path (str or os.PathLike, optional): The file. (default: ``docs/benchmarks.md``)
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"section name must be letters, digits, '_' or '-', got {name!r}")
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{begin}\n{body.strip()}\n{end}"

    def edit(text: str) -> str:
        start, stop = text.find(begin), text.find(end)
        if start >= 0 and stop > start:
            return text[:start] + section + text[stop + len(end):]
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + section + "\n"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _edit_locked(path, edit, create=True)


def write_goal_row(prefix: str, row: str, path: str | os.PathLike = DOC) -> bool:
    r"""Replaces the first line of a markdown file that starts with :obj:`prefix` (a row of
    "Goals at a glance", found by the start of its first cell) by :obj:`row`, under the lock
    that :func:`write_section` takes; returns whether the file had such a line."""
    found = False

    def edit(text: str) -> str | None:
        nonlocal found
        lines = text.split("\n")
        hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        if not hits:
            return None
        found = True
        lines[hits[0]] = row
        return "\n".join(lines)

    _edit_locked(Path(path), edit, create=False)
    return found


def _edit_locked(path: Path, edit, *, create: bool) -> None:
    # Reads the file under an exclusive flock, rewrites it with edit(text) (None: leave it
    # alone) and fsyncs before unlocking, so concurrent writers of other parts lose nothing.
    with open(path, "a+" if create else "r+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = edit(f.read())
        if text is not None:
            f.seek(0)
            f.truncate()
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        fcntl.flock(f, fcntl.LOCK_UN)


def read_section(name: str, path: str | os.PathLike = DOC) -> str:
    r"""The markdown between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` of a file,
    as :func:`write_section` wrote it (a :class:`ValueError` when the file has no such
    section)."""
    text = Path(path).read_text(encoding="utf-8")
    begin, end = f"<!-- bench:{name} -->\n", f"\n<!-- /bench:{name} -->"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if stop < 0:
        raise ValueError(f"{path} has no section {name!r}:\n{text}")
    return text[start + len(begin):stop]


def publish(name: str, body: str, doc: str | os.PathLike, write: bool,
            figure: str | os.PathLike | None = None) -> None:
    r"""Prints a benchmark's markdown section and, with :obj:`write`, writes it into
    :obj:`doc` (:func:`write_section`), saying where it went (and where its figure is)."""
    print(body)
    if write:
        write_section(name, body, doc)
        extra = f" and {figure}" if figure is not None else ""
        print(f"wrote the '{name}' section of {doc}{extra}")


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    r"""Saves a matplotlib figure as the docs' PNGs are saved (tight layout, 110 dpi), creating
    the folder, and closes it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compact_figure(path: str | os.PathLike, max_bytes: int = 200_000) -> Path:
    """Keeps a figure under ``max_bytes``: a PNG that is larger is replaced by a JPEG of the
    same name, at the best quality (92, 88, ..., 60; no chroma subsampling) that fits; returns
    the file's path now.

    The docs keep every figure under 200 KB (``tests/docs/test_build.py`` checks it). Sample
    grids are photograph-like: a palette PNG of them shows contour bands that are in neither
    the samples nor the data, a good JPEG shows what was sampled.
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png" or path.stat().st_size <= max_bytes:
        return path
    target = path.with_suffix(".jpg")
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    for quality in range(92, 59, -4):
        rgb.save(target, quality=quality, subsampling=0)
        if target.stat().st_size <= max_bytes:
            break
    else:
        raise ValueError(f"{path} does not fit in {max_bytes} bytes even as a JPEG of quality "
                         f"60: draw fewer or smaller cells")
    path.unlink()
    return target
