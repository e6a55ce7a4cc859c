"""Smoke test of bench/beyond_training.py (issue 13): the four arms with the tiny model, trained
for seconds each, sampled, scored and written into a temporary copy of the docs. No quality or
timing is asserted: only that the script runs and reports what it promises."""
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # appended: bench/kernel_conv.py must not shadow the standard module

import beyond_training  # noqa: E402
from _publish import read_section  # noqa: E402


def _run(tmp_path: Path, *extra: str, section: str = "beyond_training") -> tuple[dict, str, Path]:
    doc, figures = tmp_path / "benchmarks.md", tmp_path / "figures"
    argv = ["--smoke", "--minutes", "0.02", "--out", str(tmp_path / "bt"), "--write",
            "--doc", str(doc), "--figures", str(figures), *extra]
    result = beyond_training.main(argv)
    return result, read_section(section, doc), figures


def test_beyond_training_smoke(tmp_path):
    result, body, figures = _run(tmp_path)
    assert result["sides"] == [16, 32, 64] and (result["base"], result["high"]) == (16, 64)
    names = {name for (_, name) in result["scores"]}
    assert names == {"(i) 16² lattice model", "(ii) bicubic ×2 of (i)'s 16² samples",
                     "(ii) bicubic ×4 of (i)'s 16² samples", "(iii) 64² renders, 16× subsampled",
                     "(iv) 64² renders, all pixels", beyond_training.FLOOR}
    for (side, name), m in result["scores"].items():
        assert m["swd"] > 0 and m["swd_raw"] > 0, (side, name)
        assert "kid" not in m  # --smoke: no KID unless asked
    assert set(result["steps"]) == {"i", "iii", "iv"} and min(result["steps"].values()) >= 1
    # every arm's checkpoint records its data: resolution, rate and the mollifier of its data
    for arm, (side, rate) in {"i": (16, 1.0), "iii": (64, 16.0), "iv": (64, 1.0)}.items():
        info = torch.load(result["trained"][arm]["checkpoint"], weights_only=True)["model_config"]
        assert (info["data"]["resolution"], info["data"]["subsample"]) == (side, rate)
        assert info["diffusion"]["sigma"] == pytest.approx(0.5 / side)
    assert set(result["caches"]) == {16, 64}
    assert "| 64² | (iii) 64² renders, 16× subsampled | " in body
    assert "Goal: at 64², (iii) beats (i) and (ii) on SWD" in body
    assert "Goal: (iii) within 1.5× of (iv)'s SWD" in body
    assert "Command: `python bench/beyond_training.py --smoke" in body
    assert "Machine: " in body
    assert (figures / "bench_beyond_training.png").stat().st_size > 0
    assert json.loads((tmp_path / "bt" / "result.json").read_text())
    # a rerun reuses the caches, the spent budgets and the samples: nothing is trained or
    # sampled again, and the scores are the same
    assert len(list((tmp_path / "bt" / "samples").glob("arm_*.pt"))) == 3 * 3
    with mock.patch.object(beyond_training, "draw_samples", side_effect=AssertionError("drawn")):
        again, _, _ = _run(tmp_path)
    assert again["steps"] == result["steps"]
    assert again["scores"] == result["scores"]


@pytest.mark.slow
def test_beyond_training_smoke_with_kid(tmp_path):
    from pyg_infdiff.metrics import find_inception_weights

    try:
        find_inception_weights()
    except FileNotFoundError:
        pytest.skip("no FID Inception weights")
    result, body, _ = _run(tmp_path, "--kid")
    assert all("kid" in m for m in result["scores"].values())
    assert "KID ×10³ (deblurred)" in body and "on SWD and KID" in body


def test_arguments():
    args = beyond_training.parse_args(["--no-kid"])  # KID is on by default (needs the weights)
    assert (args.preset, args.base, args.factor, args.minutes, args.kid) == (32, 32, 4, 10.0, False)
    args = beyond_training.parse_args(["--smoke"])
    assert (args.preset, args.kid, args.base) == ("tiny", False, 16)
    with pytest.raises(SystemExit):
        beyond_training.parse_args(["--factor", "3"])


def test_recipe_options():
    # the main job's recipe by default: Min-SNR-5, DDIM eta 1, the preset's kernel radius
    args = beyond_training.parse_args(["--no-kid"])
    assert (args.snr_gamma, args.eta) == (5.0, 1.0)
    assert beyond_training.recipe_of(args)["snr_gamma"] == 5.0
    assert beyond_training.config_radius_px(args) == pytest.approx(
        beyond_training.unet_config(32).radius * 32)
    args = beyond_training.parse_args(["--no-kid", "--snr-gamma", "0", "--radius-px", "2.5",
                                       "--eta", "0"])
    assert beyond_training.recipe_of(args)["snr_gamma"] is None  # uniform weights
    assert beyond_training.config_radius_px(args) == 2.5
    for bad in (["--eta", "1.5"], ["--eta", "nan"], ["--snr-gamma", "-1"],
                ["--snr-gamma", "nan"], ["--radius-px", "0"]):
        with pytest.raises(SystemExit):
            beyond_training.parse_args(["--no-kid", *bad])


def test_radius_reaches_every_arm(tmp_path):
    result, body, _ = _run(tmp_path, "--radius-px", "3", "--snr-gamma", "0", "--eta", "0")
    for arm in ("i", "iii", "iv"):
        info = torch.load(result["trained"][arm]["checkpoint"], weights_only=True)["model_config"]
        assert info["unet"]["radius"] == pytest.approx(3 / 16)
    assert "uniform loss weights" in body and "kernel radius 3 pixels of 16²" in body
    assert "(DDIM η = 0, 2 steps)" in body


def test_noise_at_the_node_spacing(tmp_path):
    # --noise-at nodes: (iii)'s noise at half its node spacing (4 px of 64² at rate 16), its
    # data still mollified at half a pixel, in a folder of its own; (i) and (iv) unchanged
    result, body, figures = _run(tmp_path, "--noise-at", "nodes",
                                 section="beyond_training_noise_nodes")
    assert (figures / "bench_beyond_training_noise_nodes.png").stat().st_size > 0
    info = torch.load(result["trained"]["iii"]["checkpoint"], weights_only=True)["model_config"]
    assert info["diffusion"]["sigma"] == pytest.approx(2 / 64)
    assert info["diffusion"]["data_sigma"] == pytest.approx(0.5 / 64)
    assert "arm_iii_noise_nodes" in result["trained"]["iii"]["checkpoint"]
    for arm in ("i", "iv"):
        info = torch.load(result["trained"][arm]["checkpoint"], weights_only=True)["model_config"]
        assert "data_sigma" not in info["diffusion"]
    assert "noise at the node spacing" in body and "noise σ = 2/64" in body
