r"""The skeleton every benchmark script shares: its argument parser, its ``main`` and the
closing lines of its report.

A benchmark script is then its own parts only:

* ``parse_args(argv)``: :func:`bench_parser`, the script's flags (with :func:`add_device_arg`,
  :func:`add_threads_arg` and :func:`_publish.add_publish_args`) and what ``--smoke`` changes;
* ``run(args) -> dict``: the measurement;
* ``report(args, result)`` (``report(args, result, figure)`` when it draws one): the markdown
  section, ending in :func:`report_footer` or :func:`machine_note`;
* ``main``::

      def main(argv: list[str] | None = None) -> dict:
          return bench_main(__file__, "section", parse_args, run, report, argv)

:func:`bench_main` records the command line (:func:`command_line`), sets torch's CPU threads,
runs, draws the figure with ``--write`` and publishes the section (:func:`_publish.publish`).

Import it as ``from _skeleton import bench_main, ...`` (``bench/`` is on ``sys.path`` when a
script runs as ``python bench/<script>.py``).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import ROOT, machine_description
from _publish import publish

from pyg_infdiff.training.allocator import keep_freed_memory

__all__ = [
    "DEVICE_HELP",
    "apply_allocator",
    "THREADS_HELP",
    "add_device_arg",
    "add_threads_arg",
    "bench_main",
    "bench_parser",
    "command_line",
    "device_line",
    "machine_note",
    "report_footer",
]

DEVICE_HELP = "cpu or cuda (default: cuda when present)"
THREADS_HELP = "torch CPU threads (1 is the steadiest on a loaded, shared machine)"


def command_line(script: str, argv: list[str] | None = None) -> str:
    r"""The command that ran a benchmark script (``python bench/<name>.py ...``), for the docs;
    :obj:`argv` defaults to :obj:`sys.argv`."""
    args = sys.argv[1:] if argv is None else argv
    name = Path(script).resolve()
    try:
        name = name.relative_to(ROOT)
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in [name.as_posix(), *args])


# --------------------------------------------------------------------------- the parser
def bench_parser(doc: str, epilog: str | None = None) -> argparse.ArgumentParser:
    r"""The parser of a benchmark script: the first line of :obj:`doc` (the module docstring)
    as its description, :obj:`epilog` under the options, defaults shown in ``--help``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], epilog=epilog,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (by default a run keeps freed "
                        "memory in the process, keep_freed_memory(), as the examples do; "
                        "--smoke runs never change it)")
    return parser


def add_device_arg(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    r"""``--device`` (default :obj:`None`: :func:`_infdiff.resolve_device` picks CUDA when
    present)."""
    parser.add_argument("--device", default=None, help=help)


def add_threads_arg(parser: argparse.ArgumentParser, help: str = THREADS_HELP) -> None:
    r"""``--threads``: torch's CPU threads, one by default (steadiest on a shared machine)."""
    parser.add_argument("--threads", type=int, default=1, help=help)


def apply_allocator(args: argparse.Namespace) -> bool:
    r"""Makes glibc keep freed memory in this process (:func:`keep_freed_memory`, the regime of
    the examples, where loops over large tensors do not pay for fresh pages at every step),
    unless ``--smoke`` or ``--default-allocator``. :func:`bench_main` calls it, in worker
    processes too. Returns whether the memory is kept."""
    if getattr(args, "smoke", False) or getattr(args, "default_allocator", False):
        return False
    return keep_freed_memory()


# --------------------------------------------------------------------------- main
def bench_main(
    script: str,
    section: str,
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Any],
    report: Callable[..., str],
    argv: list[str] | None = None,
    *,
    figure: Callable[[argparse.Namespace, Any], Path | None] | None = None,
    stamp: bool = False,
    threads: bool = True,
    worker: Callable[[argparse.Namespace], Any] | None = None,
) -> Any:
    r"""The ``main`` of a benchmark script.

    Parses :obj:`argv`, records the command line as ``args.command``, makes glibc keep freed
    memory in the process (:func:`pyg_infdiff.training.allocator.keep_freed_memory`, as the
    examples do; not with ``--smoke`` or ``--default-allocator``; the machine line then says
    so), sets
    ``torch.set_num_threads(args.threads)``, measures (``result = run(args)``), with ``--write``
    draws the figure, and prints the section ``report(args, result)`` (``report(args, result,
    figure)`` when the script has a :obj:`figure`), writing it into ``args.doc`` with
    ``--write``.

    Args:
        script (str): The script's ``__file__`` (for the command line).
        section (str): The name of its section in the docs (``<!-- bench:NAME -->``).
        parse_args (Callable): ``parse_args(argv) -> argparse.Namespace``.
        run (Callable): ``run(args) -> result``.
        report (Callable): ``report(args, result[, figure]) -> str``, the markdown section.
        argv (list[str], optional): The arguments. (default: :obj:`None`, :obj:`sys.argv`)
        figure (Callable, optional): ``figure(args, result) -> Path | None``, called with
            ``--write`` only; its path goes to :obj:`report`. (default: :obj:`None`, no figure)
        stamp (bool, optional): Records ``result["machine"]``
            (:func:`_common.machine_description` of ``result["device"]``, when there is one)
            and ``result["command"]`` after the run, as :func:`machine_note` reads them.
            (default: :obj:`False`)
        threads (bool, optional): Set torch's thread count from ``args.threads`` (off for a
            script that compares thread counts itself). (default: :obj:`True`)
        worker (Callable, optional): ``worker(args) -> result``, the job of a worker process
            of the script: when the arguments hold ``--worker``, the process parses them, sets
            the allocator and the threads as above and returns ``worker(args)`` instead of
            measuring and publishing. (default: :obj:`None`, no worker processes)

    Returns:
        The result of :obj:`run` (of :obj:`worker` in a worker process).
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.command = command_line(script, argv)
    apply_allocator(args)
    if threads:
        torch.set_num_threads(args.threads)
    if worker is not None and "--worker" in argv:
        return worker(args)
    result = run(args)
    if stamp:
        result["machine"] = machine_description(result.get("device"))
        result["command"] = args.command
    path = None
    if figure is None:
        body = report(args, result)
    else:
        path = figure(args, result) if args.write else None
        body = report(args, result, path)
    publish(section, body, args.doc, args.write, path)
    return result


# --------------------------------------------------------------------------- the report's end
def device_line(args: argparse.Namespace, result: dict) -> str:
    r"""``"Device: cpu; torch threads: 1. Machine: ...."``: where a benchmark ran."""
    return (f"Device: {result['device']}; torch threads: {args.threads}. Machine: "
            f"{result['machine']}.")


def report_footer(args: argparse.Namespace, result: dict, extra: str = "") -> list[str]:
    r"""The last two lines of a report: ``- Device: ...; torch threads: .... Machine: ....``
    (:func:`device_line`, followed by :obj:`extra`) and ``- Command: `...```."""
    return [f"- {device_line(args, result)}{extra}", f"- Command: `{args.command}`"]


def machine_note(result: dict, load: bool = True) -> str:
    r"""``"Machine: ... (load average at the end; shared machine). Command: `...`."``, the last
    note of a micro-benchmark's report (from ``result["machine"]`` and ``result["command"]``,
    see :func:`bench_main`'s ``stamp``; without the load remark when not :obj:`load`)."""
    remark = " (load average at the end; shared machine)" if load else ""
    return f"Machine: {result['machine']}{remark}. Command: `{result['command']}`."
