"""Smoke test of bench/compile_sampling.py (issue 16, item 2): its ``--smoke`` configuration (a
tiny model at 16², ``torch.compile`` with the ``eager`` backend) runs end to end and writes its
section into a temporary copy of the docs. No timings are asserted: only that both cases run,
that the compiled full-lattice forward has no graph break and computes what eager does."""
import math
import re

import pytest
import torch
from bench_scripts import load_script

compile_sampling = load_script("compile_sampling")


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # the script sets torch's thread count
    yield
    torch.set_num_threads(threads)


def test_cli(capsys):
    with pytest.raises(SystemExit) as info:
        compile_sampling.parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--smoke", "--threads", "--repeats", "--device", "--write", "--doc",
                   "--resolutions", "--backend", "--preset", "--steps", "--batch-size"):
        assert option in text, option
    full = compile_sampling.parse_args([])
    assert full.resolutions == (32, 64) and full.backend == "inductor" and full.preset == 32


def test_smoke(tmp_path):
    doc = tmp_path / "benchmarks.md"
    result = compile_sampling.main(["--smoke", "--write", "--doc", str(doc)])
    rows = result["rows"]
    assert [(r["resolution"], r["mode"]) for r in rows] == [(16, "eager"), (16, "compiled")]
    for r in rows:
        assert math.isfinite(r["ms"]) and r["ms"] > 0 and r["first_s"] > 0
        assert r["breaks"] == 0 and r["error"] < 1e-5
    body = re.search(r"<!-- bench:compile_sampling -->\n(.*)\n<!-- /bench:compile_sampling -->",
                     doc.read_text(), re.S).group(1)
    assert body.startswith(compile_sampling.TITLE)
    assert "| 16² | compiled |" in body and "goal ≥ 1.3×" in body
    assert f"Command: `python bench/compile_sampling.py --smoke --write --doc {doc}`" in body
