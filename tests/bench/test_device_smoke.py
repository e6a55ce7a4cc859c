"""Smoke test of bench/device_smoke.py (issue 16, item 4): its ``--smoke`` configuration (a tiny
model at 16², one repeat, ``torch.compile`` with the ``eager`` backend) runs end to end on this
machine's device and writes its section into a temporary copy of the docs. No timings are
asserted: only that every case runs and the report says what it measured."""
import math

import pytest
from _publish import read_section
from bench_scripts import load_script

from pyg_infdiff.nn import KernelIntegralConv

device_smoke = load_script("device_smoke")


def test_cli(capsys):
    with pytest.raises(SystemExit) as info:
        device_smoke.parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--smoke", "--threads", "--repeats", "--device", "--write", "--doc",
                   "--resolutions", "--backend", "--preset"):
        assert option in text, option
    full = device_smoke.parse_args([])
    assert full.resolutions == (64, 128) and full.backend == "inductor" and full.preset is None
    smoke = device_smoke.parse_args(["--smoke"])
    assert smoke.resolutions == (16,) and smoke.backend == "eager" and smoke.repeats == 1


def test_set_path_forces_every_kernel_conv():
    step = device_smoke.build_step("tiny", 16, "dense", "eager", batch_size=1)
    convs = [m for m in step.model.modules() if isinstance(m, KernelIntegralConv)]
    assert convs and all(m.path == "dense" for m in convs)
    assert math.isfinite(step())


def test_smoke(tmp_path):
    doc = tmp_path / "benchmarks.md"
    result = device_smoke.main(["--smoke", "--write", "--doc", str(doc)])
    rows = result["rows"]
    assert [(r["resolution"], r["path"], r["mode"]) for r in rows] == [
        (16, path, mode) for path in ("graph", "dense") for mode in ("eager", "compiled")]
    for r in rows:
        assert r["ms"] > 0 and r["first_s"] > 0 and r["nodes"] == 16 * 16 // 4
        assert r["speedup"] > 0
        on_cpu = result["device"] == "cpu"
        assert (r["peak"] is None) if on_cpu else r["peak"] > 0
    assert all(r["speedup"] == 1.0 for r in rows if r["mode"] == "eager")
    body = read_section("device_smoke", doc)
    assert body.startswith(device_smoke.TITLE)
    assert "| 16² | dense | compiled | 64 | " in body
    assert f"Command: `python bench/device_smoke.py --smoke --write --doc {doc}`" in body
    assert "Machine: " in body and "backend `eager`" in body
