r"""The skeleton every benchmark script shares: its argument parser, its ``main`` and the
closing lines of its report.

A benchmark script is then its own parts only:

* ``parse_args(argv)``: :func:`bench_parser`, the script's flags (with :func:`add_device_arg`,
  :func:`add_threads_arg` and :func:`_publish.add_publish_args`; counts and budgets typed
  :func:`_args.positive_int` and :func:`_args.positive_float`, so that ``argparse`` rejects a
  bad value with its usage line and no script checks them by hand) and what ``--smoke``
  changes;
* ``run(args) -> dict``: the measurement;
* ``report(args, result)`` (``report(args, result, figure)`` when it draws one): the markdown
  section, ending in :func:`report_footer` or :func:`machine_note`;
* ``main``::

      def main(argv: list[str] | None = None) -> dict:
          return bench_main(__file__, "section", parse_args, run, report, argv)

:func:`bench_main` records the command line (:func:`command_line`), sets torch's CPU threads,
runs, draws the figure with ``--write`` and publishes the section (:func:`_publish.publish`).
A script whose arms run in worker processes starts them with :func:`run_jobs`.

Import it as ``from _skeleton import bench_main, ...`` (``bench/`` is on ``sys.path`` when a
script runs as ``python bench/<script>.py``).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from _args import positive_int
from _common import ROOT, machine_description, relative_to_root
from _publish import publish

from pyg_infdiff.training.allocator import keep_freed_memory

__all__ = [
    "DEVICE_HELP",
    "apply_allocator",
    "THREADS_HELP",
    "TERMINATE_GRACE",
    "add_device_arg",
    "add_threads_arg",
    "bench_main",
    "bench_parser",
    "command_line",
    "device_line",
    "machine_note",
    "report_footer",
    "run_jobs",
]

DEVICE_HELP = "cpu or cuda (default: cuda when present)"
#: Seconds a worker process gets to end after SIGTERM (trainers checkpoint on it) before SIGKILL.
TERMINATE_GRACE = 30.0
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
    parser.add_argument("--threads", type=positive_int, default=1, help=help)


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
    section: str | Callable[[argparse.Namespace], str],
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
        section (str or Callable): The name of its section in the docs
            (``<!-- bench:NAME -->``), or ``section(args) -> str`` for a script whose options
            choose it.
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
    publish(section(args) if callable(section) else section, body, args.doc, args.write, path)
    return result


# --------------------------------------------------------------------------- worker processes
def run_jobs(
    jobs: Mapping[str, Sequence[str]],
    *,
    slots: int | None = None,
    logs: Path | None = None,
    poll: float = 2.0,
    what: str = "job",
) -> None:
    r"""Runs the commands of :obj:`jobs` as worker processes side by side, at most
    :obj:`slots` at once, in the order given, each from the repository root, and waits for all
    of them (a failed job does not stop the others).

    If this process is interrupted or an exception is raised while it waits (or while it
    starts a job), the jobs still running are terminated (SIGTERM, then SIGKILL after
    :data:`TERMINATE_GRACE` seconds; the trainers checkpoint on SIGTERM, so a rerun resumes)
    instead of being left orphaned. Every log file is closed.

    Args:
        jobs (Mapping[str, Sequence[str]]): The command line of each job, by its name.
        slots (int, optional): Jobs running at once. (default: :obj:`None`, all of them)
        logs (Path, optional): The folder of the jobs' logs: the output of a job (stdout and
            stderr) is appended to ``logs/<name>.log``. (default: :obj:`None`, the jobs write
            to this process's stdout and stderr)
        poll (float, optional): Seconds between two looks at the running jobs.
            (default: :obj:`2.0`)
        what (str, optional): What a job is, in the error message (``"arm"``: ``"1 of 2 arms
            failed: ..."``). (default: :obj:`"job"`)

    Raises:
        RuntimeError: When a job exits with a non-zero status, once all have ended: every
            failed job, its exit status and where its output is.
    """
    slots = max(len(jobs), 1) if slots is None else slots
    if slots < 1 or poll < 0:
        raise ValueError(f"need slots >= 1 and poll >= 0, got {slots} and {poll}")
    queue = list(jobs.items())
    running: dict[str, tuple[subprocess.Popen, IO | None]] = {}
    failed: dict[str, int] = {}
    try:
        while queue or running:
            while queue and len(running) < slots:
                name, cmd = queue.pop(0)
                running[name] = _start_job(cmd, None if logs is None else logs / f"{name}.log")
            time.sleep(poll)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    if log is not None:
                        log.close()
                    if proc.returncode:
                        failed[name] = proc.returncode
    finally:  # running is empty unless this process was interrupted or an exception was raised
        _terminate(running.values())
    if failed:
        where = {name: "its output above" if logs is None
                 else relative_to_root(logs / f"{name}.log") for name in failed}
        raise RuntimeError(f"{len(failed)} of {len(jobs)} {what}s failed: " + "; ".join(
            f"{name} (exit status {code}; see {where[name]})" for name, code in failed.items()))


def _start_job(cmd: Sequence[str], log_path: Path | None) -> tuple[subprocess.Popen, IO | None]:
    r"""Starts one job of :func:`run_jobs`; its output appended to :obj:`log_path` if given."""
    if log_path is None:
        return subprocess.Popen(list(cmd), cwd=ROOT), None
    log = open(log_path, "a")  # noqa: SIM115 - closed by run_jobs when the job ends
    try:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log
    except BaseException:
        log.close()
        raise


def _terminate(running: Iterable[tuple[subprocess.Popen, IO | None]]) -> None:
    r"""Terminates the still running jobs of :func:`run_jobs` (killed when interrupted again
    meanwhile) and closes their logs."""
    running = list(running)
    try:
        for proc, _ in running:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in running:
            try:
                proc.wait(timeout=TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    except BaseException:  # a second Ctrl-C: no more grace
        for proc, _ in running:
            if proc.poll() is None:
                proc.kill()
        raise
    finally:
        for _, log in running:
            if log is not None:
                log.close()


# --------------------------------------------------------------------------- the report's end
def device_line(args: argparse.Namespace, result: dict) -> str:
    r"""``"Device: cpu; torch threads: 1. Machine: ...."``: where a benchmark ran."""
    return (f"Device: {result['device']}; torch threads: {args.threads}. Machine: "
            f"{result['machine']}.")


def report_footer(args: argparse.Namespace, result: dict, extra: str = "") -> list[str]:
    r"""The last two lines of a report: ``- Device: ...; torch threads: .... Machine: ....``
    (:func:`device_line`, followed by :obj:`extra`) and ``- Command: `...```."""
    return [f"- {device_line(args, result)}{extra}", f"- Command: `{args.command}`"]


def figure_and_footer(args: argparse.Namespace, result: dict, picture: Path | None, alt: str,
                      cached: str = "Arms") -> list[str]:
    r"""The tail of a report whose runs are cached in ``args.out``: the figure :obj:`picture`
    (if any) as ``![alt](_static/figures/<name>)``, then :func:`report_footer` saying
    ``"<cached> cached in `<args.out>`."``, each after a blank line."""
    lines = [] if picture is None else ["", f"![{alt}](_static/figures/{picture.name})"]
    return [*lines, "", *report_footer(args, result, f" {cached} cached in "
                                       f"`{relative_to_root(args.out)}`.")]


def machine_note(result: dict, load: bool = True) -> str:
    r"""``"Machine: ... (load average at the end; shared machine). Command: `...`."``, the last
    note of a micro-benchmark's report (from ``result["machine"]`` and ``result["command"]``,
    see :func:`bench_main`'s ``stamp``; without the load remark when not :obj:`load`)."""
    remark = " (load average at the end; shared machine)" if load else ""
    return f"Machine: {result['machine']}{remark}. Command: `{result['command']}`."
