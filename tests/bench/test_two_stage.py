"""Smoke test of bench/two_stage.py (issue 15): its ``--smoke`` configuration (a tiny autoencoder
trained for seconds, the latent model of examples/latent_train.py for 20 steps, the tiny
single-stage model in a worker process for the same CPU time, 8 samples of 2 DDIM steps, SWD)
runs end to end, caches its arms and writes its section and figure into temporary copies. No
scores are asserted: only that both arms ran and the section reports them and the goal."""
import math

import pytest
from _publish import read_section
from bench_scripts import load_script

two_stage = load_script("two_stage")


def test_cli():
    full = two_stage.parse_args([])
    assert (full.latent_minutes, full.num_samples, full.sample_steps, full.num_real) == (
        3, 1000, 50, 2000)
    assert full.metrics == "fid" and full.threads == 1 and full.autoencoder == two_stage.AUTOENCODER
    smoke = two_stage.parse_args(["--smoke"])
    assert smoke.metrics == "swd" and smoke.autoencoder is None


@pytest.mark.usefixtures("fashion_mnist")
def test_smoke(tmp_path):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    argv = ["--smoke", "--out", str(out)]
    result = two_stage.main([*argv, "--write", "--doc", str(doc), "--figures", str(figures)])
    ae, latent, single = result["autoencoder"], result["latent"], result["single"]
    assert ae["steps"] > 0 and latent["steps"] > 0 and single["steps"] > 0
    assert latent["encode_seconds"] > 0 and latent["train_seconds"] > 0
    total = ae["seconds"] + latent["encode_seconds"] + latent["train_seconds"]
    assert single["settings"]["budget_seconds"] == pytest.approx(total)
    assert single["train_seconds"] >= total - 1  # trained for the two-stage total
    for arm in ("two_stage", "single"):
        assert math.isfinite(result[arm]["metrics"]["swd"])
        assert result[arm]["sample_cpu_per_image"] > 0 and (out / f"{arm}.json").exists()
    body = read_section("two_stage", doc)
    assert "| arm | training (CPU) | optimiser steps | SWD ×10³ | KID ×10³ |" in body
    assert "| two-stage | " in body and "| single-stage | " in body
    assert ("- Goal (issue 15): two-stage SWD ×10³ not worse than single-stage at equal total "
            "CPU time: ") in body
    assert "**met**" in body or "**NOT met**" in body
    assert "Command: `python bench/two_stage.py --smoke" in body
    assert (figures / "bench_two_stage.png").stat().st_size > 0
    again = two_stage.main(argv)  # cached: nothing trains or samples again
    assert again["single"] == single and again["two_stage"] == result["two_stage"]
