r"""The example scripts: every ``--help`` works, and the main job runs end to end (a few steps),
with examples/sample.py reading its checkpoint. Heavier runs are marked slow."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NAMES = ["shapes_demo", "celebahq_train", "sample", "inpaint", "custom_pyg_model"]



def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("name", NAMES)
def test_help(name, capsys):
    # In-process (the imports take ~10 s per interpreter on a busy machine); the end-to-end
    # test below runs the scripts as real processes.
    module = _load(name)
    entry = module.parse_args if hasattr(module, "parse_args") else module.main
    with pytest.raises(SystemExit) as exc:
        entry(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--" in out


def _set_up() -> bool:
    """Whether ``scripts/setup.sh`` finds everything installed (it installs nothing here)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--check"], cwd=ROOT,
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                          text=True, timeout=120)
    return proc.returncode == 0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    # The README's first command itself (set-up check, then the demo) when set-up is complete,
    # as in CI after scripts/test.sh; otherwise the example script directly.
    out = tmp_path_factory.mktemp("demo")
    args = ("--smoke", "--threads", "1", "--out", str(out))
    if _set_up():
        env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "[setup] pyg_infdiff" in proc.stdout and "already installed" in proc.stdout
        return out, proc.stdout
    return out, _run(EXAMPLES / "shapes_demo.py", *args)


def test_shapes_demo_smoke(demo_run):
    out, stdout = demo_run
    assert str((out / "samples.png").resolve()) in stdout
    img = Image.open(out / "samples.png")
    assert img.mode == "RGB" and img.size[1] > 6 * 128  # 3 sample rows + 3 data rows of 128
    assert (out / "loss.png").is_file() and (out / "log.jsonl").is_file()
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert [tuple(v.shape) for v in samples.values()] == [(2, 3, 32, 32), (2, 3, 64, 64),
                                                          (2, 3, 128, 128)]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_00000003.pt"]
    # the checkpoint names the shapes it learnt (ShapesConfig.named), for the benchmarks
    from pyg_infdiff.training import load_pretrained
    run = load_pretrained(out / "checkpoints" / "ckpt_00000003.pt")
    assert run.info["data"]["shapes"] == run.shapes == "demo"
    # the demo's kernel radius: 2.5 pixels of 32², not preset 32's (--radius-px)
    assert run.model.config.radius == pytest.approx(2.5 / 32)


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["model"]


def test_shapes_demo_same_seed_same_model(demo_run, tmp_path):
    # --seed seeds the initial weights too: a second run of the smoke demo (in this process)
    # ends with the very weights of the first (a subprocess), also when it keeps a checkpoint
    # of every step
    out, _ = demo_run
    _load("shapes_demo").main(["--smoke", "--threads", "1", "--out", str(tmp_path),
                               "--checkpoint-every", "1", "--keep-checkpoints", "0"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        f"ckpt_0000000{i}.pt" for i in (1, 2, 3)]
    first = _weights(out / "checkpoints" / "ckpt_00000003.pt")
    again = _weights(tmp_path / "checkpoints" / "ckpt_00000003.pt")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_sample_from_the_demo_checkpoint_at_twice_the_resolution(demo_run, capsys):
    out, _ = demo_run
    png = out / "s" / "x2.png"
    _run(EXAMPLES / "sample.py", "--checkpoint", out, "--resolution", "64", "--num", "2",
         "--steps", "2", "--threads", "1", "--deblur", "--no-progress", "--out", png)
    assert Image.open(png).size == (2 * (64 + 2) + 2, 64 + 4)
    saved = torch.load(png.with_suffix(".pt"), weights_only=True)
    assert saved["images"]["64x64"].shape == (2, 3, 64, 64)
    assert saved["deblur"] == 0.05

    # --zoom: the same seeds at 1x and 2x, in-process, DDPM, the raw weights
    module = _load("sample")
    module.main(["--checkpoint", str(out / "checkpoints" / "ckpt_00000003.pt"), "--num", "2",
                 "--steps", "2", "--resolution", "32", "--zoom", "1,2", "--sampler", "ddpm",
                 "--weights", "model", "--no-progress"])
    zoom = torch.load(out / "samples" / "sample_32_zoom.pt", weights_only=True)["images"]
    assert {k: tuple(v.shape) for k, v in zoom.items()} == {
        "32x32": (2, 3, 32, 32), "64x64": (2, 3, 64, 64)}
    assert "64x64 average-pooled to 32x32 against the 32x32 samples: PSNR mean" in \
        capsys.readouterr().out

    # --context: the demo trained on 1,024 nodes of 128x128 renders, so on a 64x64 lattice
    # (4,096 pixels) 'auto' reads through 1,024 random pixels of 128x128; 'none' samples the
    # plain lattice; a number reads through that many uniform points
    args = ["--checkpoint", str(out), "--num", "1", "--steps", "2", "--no-progress",
            "--resolution", "64"]
    for option, said in [("auto", "context of 1024 random pixels of the 128x128 training"),
                         ("none", None), ("40", "context of 40 random points")]:
        module.main([*args, "--context", option, "--out", str(out / "s" / f"{option}.png")])
        printed = capsys.readouterr().out
        assert (said in printed) if said else "context" not in printed.split("\n")[1]
    with pytest.raises(SystemExit):
        module.main([*args, "--context", "many"])
    # --context-until above every step: the plain lattice's samples (DDIM draws nothing after
    # the initial field, which comes before the context's points)
    module.main([*args, "--context-until", "1000", "--out", str(out / "s" / "until.png")])
    until, plain = (torch.load(out / "s" / f"{name}.pt", weights_only=True)["images"]["64x64"]
                    for name in ("until", "none"))
    torch.testing.assert_close(until, plain, atol=1e-5, rtol=1e-4)


def test_celebahq_train_on_shapes_then_resume(tmp_path):
    module = _load("celebahq_train")
    args = ["--dataset", "shapes", "--steps", "2", "--batch-size", "2", "--num-items", "8",
            "--sample-every", "0", "--checkpoint-every", "1", "--num-samples", "2",
            "--sample-steps", "2", "--out", str(tmp_path), "--device", "cpu",
            "--snr-gamma", "5"]
    module.main(args)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt_00000001.pt", "ckpt_00000002.pt"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["samples_00000002.png"]
    state = torch.load(tmp_path / "checkpoints" / "ckpt_00000002.pt", weights_only=True)
    info = state["model_config"]
    assert info["diffusion"]["sigma"] == pytest.approx(0.5 / 32)
    assert info["diffusion"]["snr_gamma"] == 5.0
    assert info["data"] == {"dataset": "shapes", "resolution": 32, "channels": 3,
                            "subsample": 4.0, "seed": 0, "shapes": "full"}
    module.main([*args[:3], "3", *args[4:], "--resume", "latest"])
    assert (tmp_path / "checkpoints" / "ckpt_00000003.pt").is_file()
    # the same --seed, the same model: weights, data and noise are all seeded
    again = tmp_path / "again"
    module.main([*args[:-5], str(again), *args[-4:]])
    first = _weights(tmp_path / "checkpoints" / "ckpt_00000002.pt")
    second = _weights(again / "checkpoints" / "ckpt_00000002.pt")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_sample_rejects_an_output_that_is_not_an_image_file():
    module = _load("sample")
    with pytest.raises(SystemExit):
        module.parse_args(["--checkpoint", "runs/x", "--out", "runs/x/samples"])
    assert module.parse_args(["--checkpoint", "runs/x", "--out", "a/b.png"]).out == "a/b.png"


def test_celebahq_train_defaults():
    module = _load("celebahq_train")
    a = module.parse_args(["--data-dir", "faces", "--resolution", "128"])
    assert (a.dataset, a.preset, a.batch_size, a.subsample) == ("folder", 128, 32, 4)
    assert a.sigma == pytest.approx(0.5 / 128) and a.sample_resolutions == [128, 256]
    a = module.parse_args(["--data-dir", "faces", "--resolution", "256", "--bf16"])
    assert (a.preset, a.subsample, a.bf16) == (256, 8, True)
    assert module.parse_args(["--dataset", "shapes"]).shapes == "full"
    assert module.parse_args(["--dataset", "shapes", "--shapes", "demo"]).shapes == "demo"
    with pytest.raises(SystemExit):
        module.parse_args(["--dataset", "shapes", "--shapes", "toy"])
    a = module.parse_args(["--dataset", "fashion-mnist"])
    assert (a.resolution, a.preset, a.out) == (28, 28, "runs/fashion-mnist28")
    assert a.parametrization == "x0"  # short CPU presets predict T x0, GPU presets T eps
    assert module.parse_args(["--data-dir", "x"]).parametrization == "mollified_eps"
    assert module.parse_args(["--dataset", "mnist", "--parametrization", "v"]).parametrization \
        == "v"
    assert module.parse_args(["--data-dir", "x", "--resolution", "48"]).preset == 64
    with pytest.raises(SystemExit):
        module.parse_args(["--dataset", "folder"])  # no --data-dir


@pytest.mark.slow
def test_celebahq_train_on_an_image_folder(tmp_path):
    images = tmp_path / "faces" / "nested"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    _run(EXAMPLES / "celebahq_train.py", "--data-dir", tmp_path / "faces", "--resolution", "32",
         "--steps", "2", "--batch-size", "2", "--sample-every", "0", "--num-samples", "2",
         "--sample-steps", "2", "--threads", "1", "--out", tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "ckpt_00000002.pt").is_file()


@pytest.mark.slow
def test_inpaint_and_superres_smoke(demo_run, tmp_path):
    out, _ = demo_run
    _load("inpaint").main(["--checkpoint", str(out), "--num", "2", "--steps", "4",
                           "--jump-length", "2", "--out", str(tmp_path)])
    from pyg_infdiff.training import load_pretrained
    res = load_pretrained(out).resolution  # the demo's training data: 128x128 renders
    inpaint = torch.load(tmp_path / "inpaint.pt", weights_only=True)
    assert inpaint["inpainted"].shape == (2, 3, res, res)
    # the test images are held-out items of the shapes the demo learnt (ShapesConfig.demo())
    from pyg_infdiff.data import ContinuousShapes, ShapesConfig
    held_out = ContinuousShapes(2, resolution=res, seed=1, config=ShapesConfig.demo())
    torch.testing.assert_close(inpaint["truth"], torch.stack([held_out[0], held_out[1]]))
    superres = torch.load(tmp_path / "superres.pt", weights_only=True)
    assert superres[f"infdiff {3 * res}x{3 * res}"].shape == (2, 3, 3 * res, 3 * res)
    assert (tmp_path / "superres.png").is_file()
    # --guidance reaches the sampler: the same seed, another result
    guided = tmp_path / "guided"
    _load("inpaint").main(["--checkpoint", str(out), "--num", "2", "--steps", "4",
                           "--jump-length", "2", "--task", "inpaint", "--guidance", "1",
                           "--out", str(guided)])
    pulled = torch.load(guided / "inpaint.pt", weights_only=True)["inpainted"]
    assert pulled.shape == inpaint["inpainted"].shape
    assert not torch.equal(pulled, inpaint["inpainted"])
    with pytest.raises(SystemExit, match="guidance"):
        _load("inpaint").main(["--checkpoint", str(out), "--guidance", "-1"])


@pytest.mark.slow
def test_custom_pyg_model_learns(capsys):
    _load("custom_pyg_model").main(["--steps", "60"])
    out = capsys.readouterr().out
    errors = [float(line.split()[-1]) for line in out.splitlines() if "points per field" in line]
    assert len(errors) == 2 and all(e < 0.9 for e in errors)


def test_shapes_demo_arguments():
    module = _load("shapes_demo")
    a = module.parse_args([])
    assert a.threads in (1, os.cpu_count()) and a.resolutions == [32, 64, 128]
    assert (a.minutes, a.parametrization, a.deblur, a.eta) == (10.0, "x0", None, 1.0)
    assert a.shapes == "demo"  # ShapesConfig.demo(): five colours on light grey
    assert a.radius_px == 2.5 and module.parse_args(["--radius-px", "3.5"]).radius_px == 3.5
    assert module.parse_args(["--shapes", "simple"]).shapes == "simple"
    a = module.parse_args(["--smoke", "--threads", "3", "--deblur"])
    assert (a.threads, a.steps, a.sample_steps, a.deblur) == (3, 3, 2, 0.05)
    assert a.noise_sigma is None  # the noise as wide as the data's mollifier
    assert module.parse_args(["--noise-sigma", "0.015625"]).noise_sigma == 0.015625
    assert (a.checkpoint_every, a.keep_checkpoints) == (250, 2)
    assert module.parse_args(["--keep-checkpoints", "0"]).keep_checkpoints == 0  # keep all
    for bad in (["--noise-sigma", "0"], ["--sigma", "-1"], ["--checkpoint-every", "0"],
                ["--keep-checkpoints", "-1"], ["--shapes", "toy"], ["--eta", "-0.5"],
                ["--radius-px", "0"], ["--radius-px", "40"]):
        with pytest.raises(SystemExit):
            module.parse_args(bad)


def test_time_budget_moves_max_steps_to_the_expected_end(monkeypatch):
    # A clock that ticks one second per loss call: the budget of 10 s ends at the 11th call.
    # Until then max_steps is the steps so far plus the remaining seconds at the mean rate
    # (so a decaying learning rate ends with the budget), then the current step.
    module = _load("shapes_demo")
    clock = iter(range(100))
    monkeypatch.setattr(module.time, "perf_counter", lambda: float(next(clock)))
    trainer = SimpleNamespace(step=0, config=SimpleNamespace(max_steps=10**9))
    budget = module.TimeBudget(lambda model, batch: torch.tensor(0.5), 10.0, None)
    budget.begin(trainer)
    ends = []
    while trainer.step < trainer.config.max_steps:
        budget(None, None)
        trainer.step += 1
        ends.append(trainer.config.max_steps)
    budget.close()
    assert trainer.step == 11 and ends[-1] == 11
    assert ends[5] == 6 + round(5 * 6 / 5)  # step 6 at 5 s: 1.2 steps/s, 5 s left
    assert all(end > step for step, end in enumerate(ends[:-1], start=1))
