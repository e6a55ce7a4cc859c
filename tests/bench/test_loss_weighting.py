"""Tests of bench/loss_weighting.py (issue 13, #3): its defaults, the denoiser error on a model
that knows the answer, and its ``--smoke`` configuration end to end (the demo's own ``--smoke``
as each arm, 8 samples of 2 steps, SWD), written into a temporary doc. No scores are
asserted."""
import json
from types import SimpleNamespace

import pytest
import torch
from _publish import read_section
from bench_scripts import load_script

from pyg_infdiff.diffusion import MollifiedDiffusion
from pyg_infdiff.noise import MollifiedNoise

loss_weighting = load_script("loss_weighting")


def test_defaults_and_bad_arguments():
    args = loss_weighting.parse_args([])
    assert args.gammas == [0.0, 5.0] and args.minutes == 6 and args.threads == 1
    assert (args.num_samples, args.sample_steps, args.metrics) == (256, 50, "fid")
    smoke = loss_weighting.parse_args(["--smoke", "--gammas", "0", "5", "0"])
    assert smoke.gammas == [0.0, 5.0] and smoke.metrics == "swd"
    with pytest.raises(SystemExit):
        loss_weighting.parse_args(["--gammas", "-1"])
    with pytest.raises(SystemExit):
        loss_weighting.parse_args(["--minutes", "0"])


def test_denoiser_errors_of_an_oracle():
    # A model that returns the clean mollified image (x0 prediction) has zero error at every
    # step, and one that returns zeros has the mean square of the mollified image.
    diffusion = MollifiedDiffusion(MollifiedNoise(1 / 64, 2), parametrization="x0")
    images = loss_weighting.main_job_held_out(2, 8)
    x0 = diffusion.mollifier.apply(images, 2).flatten(2).transpose(1, 2).reshape(-1, 3)

    def oracle(x_t, pos, t, batch, edge_index=None, lattice=None):
        assert lattice is not None and lattice.is_full()
        return x0

    def zero(x_t, pos, t, batch, edge_index=None, lattice=None):
        return torch.zeros_like(x_t)

    errors = loss_weighting.denoiser_errors(SimpleNamespace(model=oracle, diffusion=diffusion),
                                            images, seed=0)
    assert list(errors) == [str(s) for s in loss_weighting.STEPS]
    assert max(errors.values()) < 1e-10
    errors = loss_weighting.denoiser_errors(SimpleNamespace(model=zero, diffusion=diffusion),
                                            images, seed=0)
    assert all(e == pytest.approx(x0.pow(2).mean().item()) for e in errors.values())


def test_smoke(tmp_path):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = loss_weighting.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc),
                                  "--figures", str(figures)])
    assert list(result["arms"]) == [0.0, 5.0]
    for gamma, arm in result["arms"].items():
        assert arm["steps"] == 3 and arm["metrics"]["swd"] > 0
        assert set(arm["denoiser_mse"]) == {str(s) for s in loss_weighting.STEPS}
        info = torch.load(out / f"arm_g{gamma:g}" / "checkpoints" / "ckpt_00000003.pt",
                          weights_only=True)["model_config"]["diffusion"]
        assert info.get("snr_gamma") == (gamma or None)
        assert json.loads((out / f"arm_g{gamma:g}.json").read_text())["gamma"] == gamma
    body = read_section("loss_weighting", doc)
    assert "| uniform weights | 3 |" in body and "| Min-SNR, gamma 5 | 3 |" in body
    assert "--smoke" in body and "Machine:" in body
    assert (figures / "bench_loss_weighting.png").stat().st_size > 0
    # a rerun reuses the finished arms
    again = loss_weighting.main(["--smoke", "--out", str(out), "--doc", str(doc)])
    assert again["arms"] == result["arms"]
