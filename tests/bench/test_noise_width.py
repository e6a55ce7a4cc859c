"""Tests of bench/noise_width.py (issues 12 and 13): the defaults, the PSNR and goal lines against
hand-made numbers, and (slow: worker processes) ``--smoke`` end to end into a temporary doc (both
arms' noise recorded in their checkpoints, a rerun reusing the arms). No scores are asserted."""
import math

import pytest
import torch
from _publish import read_section
from bench_scripts import load_script

noise_width = load_script("noise_width")


def test_defaults_and_bad_arguments():
    args = noise_width.parse_args([])
    assert args.noise_pixels == [0.5, 1.0, 2.0]
    assert (args.steps, args.num, args.threads) == (2000, 16, 1)
    for bad in (["--noise-pixels", "0"], ["--steps", "0"], ["--num", "0"], ["--batch", "0"]):
        with pytest.raises(SystemExit):
            noise_width.parse_args(bad)


def test_psnr():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.2  # MSE 0.04, peak 2: 10 log10(4 / 0.04) = 20 dB
    value = noise_width.psnr(a, b)
    assert value[1].item() == pytest.approx(20.0) and value[0].item() > 100


def test_goal_lines():
    def arm(psnr64, psnr128, spread):
        return {"plain": {"psnr_64": {"mean": psnr64, "min": 0.0},
                          "psnr_128": {"mean": psnr128, "min": 0.0}, "spread": spread}}

    result = {"real_spread": 0.2, "arms": {0.5: arm(40.0, 40.0, 0.05), 2.0: arm(27.0, 25.5, 0.15),
                                           4.0: arm(30.0, 24.0, 0.15)}}
    flat, met, low = noise_width.goal_lines(result)
    assert flat.endswith("**NOT met**") and "spread 0.050" in flat  # a flat field agrees trivially
    assert met.endswith("**met**") and "25.5 dB at worst" in met
    assert low.endswith("**NOT met**")


@pytest.mark.slow  # worker processes end to end: 30-65 s on 2 cores
def test_smoke(tmp_path):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = noise_width.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc),
                               "--figures", str(figures)])
    for pixels, arm in result["arms"].items():
        # the noise is the arm's, the data keep half a 128² pixel
        assert arm["noise_sigma"] == pytest.approx(pixels / 128)
        assert arm["data_sigma"] == pytest.approx(0.5 / 128)
        for reading in noise_width.READINGS:
            assert math.isfinite(arm[reading]["psnr_128"]["mean"]) and arm[reading]["swd_128"] > 0
            assert arm[reading]["detail"] >= 0
    body = read_section("noise_width", doc)
    assert "spread at 128²" in body and "detail at 128²" in body and "--smoke" in body
    assert len(list(figures.glob("bench_noise_width.*"))) == 1  # a PNG, or a JPEG if large
    again = noise_width.main(["--smoke", "--out", str(out), "--doc", str(doc)])
    assert again["arms"] == result["arms"]
