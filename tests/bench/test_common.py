"""Shared benchmark utilities (bench/_common.py, _publish.py, _skeleton.py): interleaved timing,
peak memory in a fresh subprocess, markdown sections rewritten in place and read back, the
skeleton of every script's ``main``, worker processes run side by side."""
import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _args import positive_float, positive_int  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    Timing,
    cached_timed,
    format_bytes,
    machine_description,
    peak_memory,
    time_cases,
)
from _publish import compact_figure, markdown_table, read_section, write_section  # noqa: E402
from _scoring import kid_cell  # noqa: E402
from _skeleton import (  # noqa: E402
    add_threads_arg,
    bench_main,
    bench_parser,
    command_line,
    machine_note,
    report_footer,
    run_jobs,
)

ALLOC = 48 * 2**20


def make_alloc_step(nbytes: int):
    """Factory for the peak-memory test: each step holds ``nbytes`` of tensors at once."""
    held = torch.ones(nbytes // 4)  # part of the baseline, not of the step

    def step():
        x = torch.empty(nbytes // 4)
        x.fill_(1.0)
        return float(x[-1] + held[0])

    return step


def test_cached_timed_computes_again_only_when_the_settings_change(tmp_path):
    path, calls = tmp_path / "s.pt", []

    def draw():
        calls.append(1)
        return torch.full((1, 3, 2, 2), float(len(calls)))

    first, seconds = cached_timed(path, {"eta": 1.0}, draw)
    same, same_seconds = cached_timed(path, {"eta": 1.0}, draw)
    other, _ = cached_timed(path, {"eta": 0.0}, draw)
    assert len(calls) == 2 and torch.equal(first, same) and not torch.equal(first, other)
    assert same_seconds == seconds >= 0  # the time of the computation, not of the read


def test_time_cases_interleaves_and_counts():
    calls = []
    cases = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.01))}
    result = time_cases(cases, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert len(result["a"].times) == 3 and result["b"].median >= 0.01 > result["a"].median
    assert Timing((1.0, 2.0, 3.0, 4.0, 100.0)).median == 3.0
    with pytest.raises(ValueError, match="repeats"):
        time_cases(cases, repeats=0)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_measures_the_step_only():
    peak = peak_memory(f"{__file__}:make_alloc_step", args=[ALLOC], warmup=1, threads=1)
    assert peak.method == "rss-hwm"
    assert 0.9 * ALLOC < peak.peak_bytes < 1.25 * ALLOC, format_bytes(peak.peak_bytes)
    assert peak.baseline_bytes > ALLOC  # the held tensor (and the interpreter) are baseline
    with pytest.raises(RuntimeError, match="no_such_function"):
        peak_memory(f"{__file__}:no_such_function")


def test_write_section_replaces_only_its_own(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    write_section("one", "first", doc)
    write_section("two", "second", doc)
    write_section("one", "FIRST\n", doc)
    text = doc.read_text()
    assert text.count("<!-- bench:one -->") == 1 and "FIRST" in text and "first" not in text
    assert text.index("FIRST") < text.index("second")
    doc.write_text("# Title\n\nhand-written\n\n" + text)
    threads = [
        threading.Thread(target=write_section, args=(f"s{i}", f"body {i}", doc)) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = doc.read_text()
    assert text.startswith("# Title") and "hand-written" in text and "second" in text
    assert all(text.count(f"body {i}\n") == 1 for i in range(8))
    assert read_section("one", doc) == "FIRST" and read_section("s3", doc) == "body 3"
    with pytest.raises(ValueError, match="section name"):
        write_section("bad name", "x", doc)
    with pytest.raises(ValueError, match="no section 'three'"):
        read_section("three", doc)


def test_formatting_helpers():
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(3 * 2**30) == "3.00 GiB"
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError, match="cells"):
        markdown_table(["a", "b"], [[1]])
    desc = machine_description()
    assert "torch " + torch.__version__ in desc and "UTC" in desc
    # KID: a spread only where there was one (one subset of a few hundred images has none)
    assert kid_cell({"kid": 0.0123, "kid_std": 0.0011}) == "12.3 ± 1.1"
    assert kid_cell({"kid": 0.0123, "kid_std": 4e-16}) == "12.3"
    assert kid_cell({"kid": 0.0123, "kid_std": 4e-16}, digits=2) == "12.30"
    assert kid_cell({"swd": 1.0}) == "—"


def test_compact_figure_keeps_small_pngs_and_fits_large_ones(tmp_path):
    from PIL import Image

    noise = (torch.rand(3, 400, 600, generator=torch.Generator().manual_seed(0)) * 255).byte()
    big = tmp_path / "grid.png"
    Image.fromarray(noise.permute(1, 2, 0).numpy()).save(big)
    small = tmp_path / "plot.png"
    Image.new("RGB", (50, 50), "white").save(small)
    assert compact_figure(small, max_bytes=big.stat().st_size) == small and small.exists()
    out = compact_figure(big, max_bytes=300_000)
    assert out == tmp_path / "grid.jpg" and not big.exists()
    assert out.stat().st_size <= 300_000
    with Image.open(out) as image:  # true colour, not a palette
        assert image.mode == "RGB" and image.size == (600, 400)
    again = tmp_path / "again.png"
    Image.fromarray(noise.permute(1, 2, 0).numpy()).save(again)
    with pytest.raises(ValueError, match="does not fit"):
        compact_figure(again, max_bytes=1_000)


def test_positive_types_reject_what_no_count_or_budget_can_be(capsys):
    assert positive_int("1") == 1 and positive_int("16") == 16
    assert positive_float("0.05") == 0.05 and positive_float("2") == 2.0
    assert positive_float("1e-3") == 1e-3
    for bad in ("0", "-3", "1.5", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
    for bad in ("0", "-0.5", "x", "", "inf", "-inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)
    assert math.isfinite(positive_float("1e300"))
    parser = bench_parser("a script")
    add_threads_arg(parser)
    assert parser.parse_args([]).threads == 1
    assert parser.parse_args(["--threads", "4"]).threads == 4
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["--threads", bad])
        assert info.value.code == 2
    assert "argument --threads" in capsys.readouterr().err


def test_bench_main_runs_the_skeleton(tmp_path, capsys):
    # the skeleton of every script: parse, command line, threads, run, figure, publish
    def parse_args(argv):
        p = bench_parser("A toy benchmark.\n\nMore text.")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--write", action="store_true")
        p.add_argument("--doc", type=Path)
        return p.parse_args(argv)

    def report(args, result, figure=None):
        return "\n".join([f"## Toy {result['value']} {figure}",
                          *report_footer(args, result, " Extra."), f"- {machine_note(result)}"])

    threads = torch.get_num_threads()
    doc = tmp_path / "doc.md"
    argv = ["--threads", "2", "--write", "--doc", str(doc)]
    try:
        result = bench_main(__file__, "toy", parse_args,
                            lambda args: {"value": 7, "device": "cpu"}, report, argv,
                            figure=lambda args, result: tmp_path / "fig.png", stamp=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    command = command_line(__file__, argv)
    assert command.startswith("python tests/bench/test_common.py --threads 2 --write --doc ")
    assert result["value"] == 7 and result["command"] == command and result["machine"]
    body = read_section("toy", doc)
    assert body.splitlines() == [
        f"## Toy 7 {tmp_path / 'fig.png'}",
        f"- Device: cpu; torch threads: 2. Machine: {result['machine']}. Extra.",
        f"- Command: `{command}`",
        f"- Machine: {result['machine']} (load average at the end; shared machine). "
        f"Command: `{command}`.",
    ]
    assert body in capsys.readouterr().out
    # without --write: no figure drawn, nothing written; without a figure: report(args, result)
    bench_main(__file__, "toy", parse_args, lambda args: {"value": 8, "device": "cpu"},
               report, ["--doc", str(doc)], figure=lambda args, result: 1 / 0, stamp=True,
               threads=False)
    bench_main(__file__, "toy", parse_args, lambda args: {"value": 9}, lambda a, r: "## Nine",
               ["--doc", str(doc)])
    assert read_section("toy", doc).startswith("## Toy 7")
    # a section named by the options (a script with one section per data set)
    bench_main(__file__, lambda args: f"toy_{args.threads}", parse_args,
               lambda args: {"value": 10}, lambda a, r: "## Ten", ["--threads", "1", "--write",
                                                                   "--doc", str(doc)])
    assert read_section("toy_1", doc) == "## Ten" and read_section("toy", doc).startswith("## T")


# --------------------------------------------------------------------------- run_jobs
def python_job(code: str, *argv: object) -> list[str]:
    """A job that runs :obj:`code` in a fresh interpreter, with :obj:`argv` as ``sys.argv[1:]``."""
    return [sys.executable, "-c", code, *map(str, argv)]


SPAN = ("import json, os, sys, time\nstart = time.time()\ntime.sleep(float(sys.argv[2]))\n"
        "open(sys.argv[1], 'w').write(json.dumps([start, time.time(), os.getcwd()]))")
SLEEPER = ("import os, sys, time\nopen(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
           "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\ntime.sleep(60)")


def open_files() -> set[str]:
    """The paths of this process's open file descriptors (empty without Linux's /proc)."""
    paths = set()
    folder = Path("/proc/self/fd")
    for fd in os.listdir(folder) if folder.exists() else []:
        try:
            paths.add(os.readlink(folder / fd))
        except OSError:  # the descriptor of the listing itself, closed by now
            pass
    return paths


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_jobs_runs_every_job_at_most_slots_at_once(tmp_path):
    jobs = {f"j{i}": python_job(SPAN, tmp_path / f"j{i}.json", 0.3) for i in range(5)}
    run_jobs(jobs, slots=2, poll=0.02)
    spans = [json.loads((tmp_path / f"j{i}.json").read_text()) for i in range(5)]
    assert all(cwd == str(ROOT) for _, _, cwd in spans)  # from the repository root
    for start, _, _ in spans:  # the jobs running when each one started, itself included
        assert sum(s <= start < e for s, e, _ in spans) <= 2
    # slots=None: all at once; each job waits for the other two to have started
    barrier = ("import pathlib, sys, time\nfolder = pathlib.Path(sys.argv[1])\n"
               "(folder / sys.argv[2]).touch()\ndeadline = time.time() + 60\n"
               "while len(list(folder.glob('b*'))) < 3:\n"
               "    if time.time() > deadline: sys.exit(1)\n    time.sleep(0.02)")
    run_jobs({f"b{i}": python_job(barrier, tmp_path, f"b{i}") for i in range(3)}, poll=0.02)
    run_jobs({}, poll=0.02)  # nothing to run
    with pytest.raises(ValueError, match="slots"):
        run_jobs(jobs, slots=0)


def test_run_jobs_logs_and_names_every_failed_job(tmp_path, capfd):
    jobs = {"ok": python_job("print('fine')"),
            "bad": python_job("import sys; print('oops'); sys.exit(3)"),
            "worse": python_job("import sys; sys.stderr.write('boom\\n'); sys.exit(4)")}
    (tmp_path / "ok.log").write_text("earlier\n")  # appended to
    with pytest.raises(RuntimeError) as info:
        run_jobs(jobs, slots=2, logs=tmp_path, poll=0.02, what="arm")
    message = str(info.value)
    assert message.startswith("2 of 3 arms failed: ") and "ok (exit status" not in message
    assert f"bad (exit status 3; see {tmp_path / 'bad.log'})" in message
    assert f"worse (exit status 4; see {tmp_path / 'worse.log'})" in message
    assert (tmp_path / "ok.log").read_text() == "earlier\nfine\n"
    assert (tmp_path / "bad.log").read_text() == "oops\n"
    assert (tmp_path / "worse.log").read_text() == "boom\n"
    assert not {str(tmp_path / f"{name}.log") for name in jobs} & open_files()
    assert "fine" not in capfd.readouterr().out
    # without logs the jobs write to this process's output
    with pytest.raises(RuntimeError, match=r"^1 of 2 jobs failed: b \(exit status 1; see its "
                       r"output above\)$"):
        run_jobs({"a": python_job("print('from a')"),
                  "b": python_job("import sys; print('from b'); sys.exit(1)")}, poll=0.02)
    out = capfd.readouterr().out
    assert "from a" in out and "from b" in out


def test_run_jobs_terminates_the_running_jobs_on_an_interruption(tmp_path, monkeypatch):
    jobs = {f"j{i}": python_job(SLEEPER, tmp_path / f"j{i}.pid") for i in range(3)}
    sleep, deadline, pressed = time.sleep, time.monotonic() + 60, []

    def interrupted(seconds: float) -> None:  # Ctrl-C once, when the first two jobs are up
        sleep(seconds)  # (Popen.wait sleeps too while run_jobs terminates the jobs)
        if not pressed and all((tmp_path / f"j{i}.pid").exists() for i in range(2)):
            pressed.append(True)
            raise KeyboardInterrupt
        assert pressed or time.monotonic() < deadline, "the jobs did not start"

    monkeypatch.setattr(time, "sleep", interrupted)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, slots=2, logs=tmp_path, poll=0.05)
    monkeypatch.undo()
    assert time.monotonic() - start < 50  # not the jobs' 60 s
    pids = [int((tmp_path / f"j{i}.pid").read_text()) for i in range(2)]
    assert not any(alive(pid) for pid in pids)  # terminated and reaped
    assert not (tmp_path / "j2.pid").exists() and not (tmp_path / "j2.log").exists()
    assert not {str(tmp_path / f"{name}.log") for name in jobs} & open_files()
    # a job that cannot start: the exception comes through, the started job is terminated
    jobs = {"sleeper": python_job(SLEEPER, tmp_path / "sleeper.pid"),
            "missing": [str(tmp_path / "no_such_program")]}
    with pytest.raises(FileNotFoundError):
        run_jobs(jobs, logs=tmp_path, poll=0.05)
    time.sleep(1.0)  # a sleeper left running would have written its pid by now
    pid = tmp_path / "sleeper.pid"
    assert not pid.exists() or not alive(int(pid.read_text()))
    assert not {str(tmp_path / f"{name}.log") for name in jobs} & open_files()
