"""Smoke test of bench/spectral_grid.py (issue 16, item 6): its ``--smoke`` configuration (the
tiny model, a 3 s budget per arm, the two arms as two worker processes side by side, 8 samples
of 2 DDIM steps, SWD) runs end to end, caches its arms and writes its section into a temporary
copy of the docs. No timings or scores are asserted: only that both arms ran and report what
the section promises."""
import math

import pytest
from _publish import read_section
from bench_scripts import load_script

spectral_grid = load_script("spectral_grid")


def test_cli(capsys):
    with pytest.raises(SystemExit) as info:
        spectral_grid.parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--smoke", "--minutes", "--num-samples", "--sample-steps", "--num-real",
                   "--arms", "--worker", "--threads", "--write", "--doc", "--out"):
        assert option in text, option
    full = spectral_grid.parse_args([])
    assert (full.minutes, full.num_samples, full.sample_steps, full.num_real) == (25, 1000, 50,
                                                                                  2000)
    assert full.metrics == "fid" and full.threads == 1 and full.arms == ["conv", "spectral"]
    with pytest.raises(SystemExit):
        spectral_grid.parse_args(["--arms", "fourier"])


def test_arm_configs_differ_only_in_the_grid_convolutions():
    args = spectral_grid.parse_args([])
    conv, spectral = (spectral_grid.arm_config(args, arm).to_dict() for arm in ("conv",
                                                                                   "spectral"))
    assert conv.pop("grid_conv") == "conv" and spectral.pop("grid_conv") == "spectral"
    assert conv == spectral and conv["grid_shape"] == [14, 14]


@pytest.mark.usefixtures("fashion_mnist")
def test_smoke(tmp_path):
    out, doc = tmp_path / "arms", tmp_path / "benchmarks.md"
    results = spectral_grid.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc)])
    assert list(results) == ["conv", "spectral"]
    for arm, r in results.items():
        assert r["config"]["grid_conv"] == arm and r["steps"] > 0
        assert r["median_step_seconds"] > 0 and r["parameters"] > r["dense_parameters"] > 0
        assert set(r["metrics"]) == {"mollified", "deblurred"}
        assert all(math.isfinite(m["swd"]) for m in r["metrics"].values())
        assert (out / f"arm_{arm}.json").exists() and (out / f"arm_{arm}" / "samples.png").exists()
    assert results["spectral"]["parameters"] > results["conv"]["parameters"]
    body = read_section("spectral", doc)
    assert body.startswith(spectral_grid.TITLE)
    assert "| spectral convolutions (4 modes) | deblurred |" in body
    assert "Spectral against conv: SWD ×10³ ratio" in body and "--smoke" in body
    # a rerun reads the cached arms back (no worker runs: nothing changes)
    again = spectral_grid.main(["--smoke", "--out", str(out)])
    assert again == results
