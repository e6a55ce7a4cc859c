"""Shared benchmark utilities (bench/_common.py, _publish.py, _skeleton.py): interleaved timing,
peak memory in a fresh subprocess, markdown sections rewritten in place and read back, the
skeleton of every script's ``main``."""
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import (  # noqa: E402
    Timing,
    format_bytes,
    machine_description,
    peak_memory,
    time_cases,
)
from _publish import compact_figure, markdown_table, read_section, write_section  # noqa: E402
from _skeleton import (  # noqa: E402
    bench_main,
    bench_parser,
    command_line,
    machine_note,
    report_footer,
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
