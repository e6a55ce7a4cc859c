"""Tests of bench/demo_data.py (issue 13, #3): its defaults and its ``--smoke`` configuration
end to end (the demo's own ``--smoke`` as each arm, 8 samples of 2 steps, SWD), written into a
temporary doc. No scores are asserted."""
import json

import pytest
import torch
from _publish import read_section
from bench_scripts import load_script

demo_data = load_script("demo_data")


def test_defaults_and_bad_arguments():
    args = demo_data.parse_args([])
    assert (args.steps, args.threads, args.num_samples, args.metrics) == (1000, 1, 128, "kid")
    assert demo_data.parse_args(["--smoke"]).metrics == "swd"
    for bad in (["--steps", "0"], ["--num-samples", "0"], ["--metrics", "fid"]):
        with pytest.raises(SystemExit):
            demo_data.parse_args(bad)


def test_smoke(tmp_path):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = demo_data.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc),
                             "--figures", str(figures)])
    assert list(result["arms"]) == ["simple", "demo"]
    for shapes, arm in result["arms"].items():
        assert arm["steps"] == 3 and arm["metrics"]["swd"] > 0
        info = torch.load(out / f"arm_{shapes}" / "checkpoints" / "ckpt_00000003.pt",
                          weights_only=True)["model_config"]["data"]
        assert info["shapes"] == shapes  # each arm trained on its own data
        assert json.loads((out / f"arm_{shapes}.json").read_text())["shapes"] == shapes
    body = read_section("demo_data", doc)
    assert "| random colours (simple) | 3 |" in body and "| five colours (demo) | 3 |" in body
    assert "--smoke" in body and "Machine:" in body
    assert any(figures.glob("bench_demo_data.*"))
    # a rerun reuses the finished arms
    again = demo_data.main(["--smoke", "--out", str(out), "--doc", str(doc)])
    assert again["arms"] == result["arms"]
