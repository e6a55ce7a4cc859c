"""Tests of bench/dense_tuning.py (issue 14 #3, #4) and of the resumable dense trainer it uses
(bench/train_dense_ddpm.py): the defaults, the held-out losses against oracles, the probe's choice,
a dense run resumed after an interruption, and (slow: worker processes) ``--smoke`` end to end into
a temporary doc. No scores are asserted."""
import json
import math
import sys

import pytest
import torch
from _publish import read_section
from bench_scripts import load_script

from pyg_infdiff.diffusion import MollifiedDiffusion
from pyg_infdiff.noise import MollifiedNoise

pytest.importorskip("diffusers")  # the dense baseline (the "bench" extra)
dense_tuning = load_script("dense_tuning")
train_dense_ddpm = load_script("train_dense_ddpm")


def test_defaults_and_bad_arguments():
    args = dense_tuning.parse_args([])
    assert (args.minutes, args.probe_minutes, args.threads) == (25.0, 6.0, 1)
    assert args.lrs == [1.5e-4, 5e-4, 1.5e-3] and args.batches == [32, 128]
    assert args.steps == [10, 25, 50, 100] and (args.num_samples, args.num_real) == (1000, 2000)
    assert dense_tuning.parse_args(["--steps", "50,10"]).steps == [10, 50]
    for bad in (["--lrs", "0,1e-3"], ["--batches", "0"], ["--steps", "0"], ["--minutes", "0"],
                ["--probe-minutes", "-1"]):
        with pytest.raises(SystemExit):
            dense_tuning.parse_args(bad)
    # the held-out images are test images outside the FID reference (the first 2,000)
    assert min(dense_tuning.HELD_OUT) >= args.num_real
    # the midpoints of 8 equal bins of the 1000 time steps
    assert [t + 0.5 for t in dense_tuning.HELD_OUT_STEPS] == [125 * (i + 0.5) for i in range(8)]


@pytest.mark.parametrize("script", ["train_dense_ddpm", "baseline_ddpm"])
def test_dense_scripts_reject_counts_and_budgets_below_one(script, monkeypatch, capsys):
    main = load_script(script).main
    cases = {"train_dense_ddpm": (["--minutes", "0"], ["--lr", "-1"], ["--warmup-steps", "0"],
                                  ["--batch-size", "x"], ["--num-samples", "0"]),
             "baseline_ddpm": (["--steps", "0"], ["--resolution", "-8"], ["--repeats", "0"])}
    for bad in cases[script]:
        monkeypatch.setattr(sys, "argv", [f"{script}.py", *bad])
        with pytest.raises(SystemExit) as exit_info:
            main()  # argparse stops before anything is built or trained
        assert exit_info.value.code == 2 and f"argument {bad[0]}" in capsys.readouterr().err


class _Out:
    def __init__(self, sample):
        self.sample = sample


def test_dense_held_out_loss_of_oracles():
    images = torch.rand(70, 1, 8, 8) * 2 - 1
    scheduler = dense_tuning.make_scheduler("ddpm")
    abar = scheduler.alphas_cumprod

    def oracle(x_t, t):  # knows x0, so recovers the noise exactly
        a = abar[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
        x0 = images[:x_t.size(0)] if x_t.size(0) == 64 else images[64:]
        return _Out((x_t - a * x0) / s)

    assert dense_tuning.dense_held_out_loss(oracle, images, seed=0) < 1e-8
    zero = dense_tuning.dense_held_out_loss(lambda x_t, t: _Out(torch.zeros_like(x_t)), images,
                                            seed=0)
    assert zero == pytest.approx(1.0, abs=0.03)  # E[eps^2] = 1
    # fixed seeds: the same loss twice
    assert zero == dense_tuning.dense_held_out_loss(lambda x_t, t: _Out(torch.zeros_like(x_t)),
                                                    images, seed=0)


def test_infdiff_held_out_loss_of_a_zero_model():
    # x0 prediction: a model answering zeros scores the mean square of the mollified image at
    # the nodes, at every step, so about the mean over all pixels for a quarter of them.
    diffusion = MollifiedDiffusion(MollifiedNoise(0.5 / 16, 2), parametrization="x0")
    images = torch.rand(8, 1, 16, 16) * 2 - 1

    def zero(x_t, pos, t, batch, edge_index=None, lattice=None):
        return torch.zeros_like(x_t)

    loss = dense_tuning.infdiff_held_out_loss(zero, diffusion, None, images, seed=0)
    expected = diffusion.mollifier.apply(images, 2).pow(2).mean().item()
    assert loss == pytest.approx(expected, rel=0.1)
    assert loss == dense_tuning.infdiff_held_out_loss(zero, diffusion, None, images, seed=0)


def test_choose_keeps_the_lowest_held_out_loss(tmp_path):
    args = dense_tuning.parse_args(["--out", str(tmp_path), "--lrs", "1e-4,1e-3",
                                    "--batches", "32"])
    losses = {"infdiff": {1e-4: 0.3, 1e-3: 0.2}, "dense": {1e-4: 0.5, 1e-3: 0.7}}
    for family, by_lr in losses.items():
        for lr, loss in by_lr.items():
            folder = tmp_path / family / "probe" / dense_tuning.run_name(lr, 32)
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(json.dumps(
                {"lr": lr, "batch_size": 32, "held_out_loss": loss, "steps": 1}))
    probes = dense_tuning.choose(args)
    assert [len(runs) for runs in probes.values()] == [2, 2]
    assert json.loads((tmp_path / "infdiff" / "chosen.json").read_text())["lr"] == 1e-3
    assert json.loads((tmp_path / "dense" / "chosen.json").read_text())["lr"] == 1e-4
    # a changed probe does not silently reuse a final run of the old choice
    (tmp_path / "dense" / "probe" / "lr0.001_b32" / "result.json").write_text(json.dumps(
        {"lr": 1e-3, "batch_size": 32, "held_out_loss": 0.1, "steps": 1}))
    with pytest.raises(ValueError, match="another choice"):
        dense_tuning.choose(args)


def test_extensions_leave_the_edge_of_the_grid():
    def run(lr, batch, loss):
        return {"lr": lr, "batch_size": batch, "held_out_loss": loss}

    lrs = [1e-4, 1e-3]
    bottom = [run(1e-4, 8, 0.5), run(1e-3, 8, 0.7)]
    runs = [run(1e-4, 8, 0.5), run(1e-3, 8, 0.3)]
    assert next(dense_tuning.extensions(lrs, bottom)) == 1e-5  # best at the bottom edge
    added = []
    for lr in dense_tuning.extensions(lrs, runs):  # best at the top edge, then still better
        added.append(lr)
        runs.append(run(lr, 8, 0.2 / len(added)))
    assert added == pytest.approx([1e-2, 1e-1])  # at most MAX_EXTENSIONS = 2
    runs = [run(1e-4, 8, 0.5), run(1e-3, 8, 0.3)]
    added = []
    for lr in dense_tuning.extensions(lrs, runs):  # the first extension is worse: stop
        added.append(lr)
        runs.append(run(lr, 8, 0.9))
    assert added == pytest.approx([1e-2])
    # a grid of one learning rate extends upwards only
    assert next(dense_tuning.extensions([1e-3], [run(1e-3, 8, 0.1)])) == \
        pytest.approx(1e-3 * 10 ** 0.5)


def test_goal_lines():
    args = dense_tuning.parse_args([])

    def row(fid, seconds):
        return {"fid": fid, "cpu_seconds_per_image": seconds}

    scores = {"infdiff/10/deblurred": row(130.0, 0.03), "infdiff/100/deblurred": row(100.0, 0.3),
              "infdiff/100/mollified": row(120.0, 0.3), "dense/10/as sampled": row(90.0, 0.1),
              "dense/100/as sampled": row(130.0, 1.0)}
    goal, best = dense_tuning.goal_lines(args, {"scores": scores})
    assert "FID 100.0 vs 130.0 (0.77×)" in goal and goal.endswith("**met**")
    assert "FID 100.0 (100 DDIM steps, deblurred" in best and "FID 90.0 (10 DDIM steps" in best
    scores["infdiff/100/deblurred"] = row(110.0, 0.3)  # only 15% lower
    assert dense_tuning.goal_lines(args, {"scores": scores})[0].endswith("**NOT met**")
    assert dense_tuning.goal_lines(dense_tuning.parse_args(["--smoke"]),
                                   {"scores": scores}) == []


def test_lr_factor():
    assert train_dense_ddpm.lr_factor(0, 0.0, 10.0, 4) == 0.25
    assert train_dense_ddpm.lr_factor(10, 5.0, 10.0, 4) == pytest.approx(0.5)
    assert train_dense_ddpm.lr_factor(10, 5.0, 10.0, 4, "constant") == 1.0
    assert train_dense_ddpm.lr_factor(10, 20.0, 10.0, 4) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule"):
        train_dense_ddpm.DenseRecipe(schedule="linear")
    with pytest.raises(ValueError, match="ema"):
        train_dense_ddpm.DenseRecipe(ema="none")


def test_train_dense_resumes_after_an_interruption(tmp_path, fashion_mnist, monkeypatch):
    recipe = train_dense_ddpm.DenseRecipe(batch_size=4, lr=1e-3, warmup=2, ema="warmup",
                                          ema_decay=0.9)
    calls, real_step = [], train_dense_ddpm.dense_train_step

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_dense_ddpm, "dense_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_dense_ddpm.train_dense(tmp_path, recipe, 0.02, target_params=20_000, clock="cpu",
                                     save_minutes=0.0, log_every=1)
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert state["step"] == 3 and len(state["log"]) == 3
    monkeypatch.setattr(train_dense_ddpm, "dense_train_step", real_step)
    model, result = train_dense_ddpm.train_dense(tmp_path, recipe, 0.02, target_params=20_000,
                                                 clock="cpu", save_minutes=0.0, log_every=1)
    assert result["steps"] > 3 and [e["step"] for e in result["loss_log"]][:3] == [1, 2, 3]
    assert not (tmp_path / "state.pt").exists() and not model.training
    assert math.isfinite(result["final_loss"])
    # the finished run is loaded, not trained again; another recipe is refused
    again, same = train_dense_ddpm.train_dense(tmp_path, recipe, 0.02, target_params=20_000,
                                               clock="cpu")
    assert same == result
    for p, q in zip(again.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="another budget or recipe"):
        train_dense_ddpm.train_dense(tmp_path, train_dense_ddpm.DenseRecipe(lr=2e-3), 0.02,
                                     target_params=20_000)


def test_train_dense_on_given_images_with_snapshots(tmp_path):
    # any images (here colour 16²) replace Fashion-MNIST, and the EMA weights at given minutes
    # of the budget are kept: the last one, due at the very end, holds the final weights
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    recipe = train_dense_ddpm.DenseRecipe(batch_size=4, lr=1e-3, warmup=2, ema="warmup",
                                          ema_decay=0.9)
    model, result = train_dense_ddpm.train_dense(tmp_path, recipe, 0.01, target_params=20_000,
                                                 clock="cpu", images=images,
                                                 snapshot_minutes=[0.01, 0.001])
    assert (model.config.sample_size, model.config.in_channels) == (16, 3)
    assert [s["minutes"] for s in result["snapshots"]] == [0.001, 0.01]
    first, last = result["snapshots"]
    assert 1 <= first["steps"] <= last["steps"] == result["steps"]
    final = type(model).from_pretrained(last["path"])
    for p, q in zip(final.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="snapshot_minutes"):
        train_dense_ddpm.train_dense(tmp_path / "late", recipe, 0.01, images=images,
                                     snapshot_minutes=[0.02])
    with pytest.raises(ValueError, match="images"):
        train_dense_ddpm.train_dense(tmp_path / "flat", recipe, 0.01, images=images[:, 0])


@pytest.mark.slow  # worker processes end to end: 30-65 s on 2 cores
def test_smoke(tmp_path, fashion_mnist):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = dense_tuning.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc),
                                "--figures", str(figures)])
    for runs in result["probes"].values():  # the grid of two, and any extensions
        assert 2 <= len(runs) <= 2 + dense_tuning.MAX_EXTENSIONS
        assert {1e-3, 3e-3} <= {r["lr"] for r in runs}
    assert set(result["scores"]) == {"infdiff/2/deblurred", "infdiff/3/deblurred",
                                     "infdiff/3/mollified", "dense/2/as sampled",
                                     "dense/3/as sampled"}
    assert all(s["swd"] > 0 and s["cpu_seconds_per_image"] > 0
               for s in result["scores"].values())
    for family in ("infdiff", "dense"):
        chosen = json.loads((out / family / "chosen.json").read_text())
        assert result["finals"][family]["lr"] == chosen["lr"]
    body = read_section("dense_tuning", doc)
    assert "held-out loss" in body and "**" in body and "--smoke" in body
    assert (figures / "bench_dense_tuning.png").stat().st_size > 0
    # a rerun reuses every finished part
    again = dense_tuning.main(["--smoke", "--out", str(out), "--doc", str(doc)])
    assert again["scores"] == result["scores"]
