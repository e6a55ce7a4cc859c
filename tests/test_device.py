"""The pipeline end to end on an accelerator: collate, a training step, checkpoint, resume and
sample, on every device this machine has (issue 16, item 4).

Each test runs on the CPU (so the test code itself is exercised everywhere) and on ``cuda``
when :func:`torch.cuda.is_available`; without a GPU the ``cuda`` cases are reported as SKIPPED
with the reason. Select them with ``pytest -m device``. Nothing here is timed.
"""
import warnings
from functools import partial

import pytest
import torch

from pyg_infdiff.data import ContinuousShapes, GraphCollator, ShapesConfig
from pyg_infdiff.diffusion import MollifiedDiffusion, sample
from pyg_infdiff.graph import radius_graph
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import (
    Trainer,
    TrainerConfig,
    load_checkpoint,
    load_pretrained,
    run_config,
)

NO_CUDA = "no CUDA device: torch.cuda.is_available() is False on this machine"
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.device),
    pytest.param("cuda", marks=[pytest.mark.device,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]),
]
# Checkpoints written on one device and read on another: CPU -> CPU always, the rest with a GPU.
PAIRS = [
    pytest.param("cpu", "cpu", marks=pytest.mark.device),
    *[pytest.param(a, b, marks=[pytest.mark.device, pytest.mark.skipif(
        not torch.cuda.is_available(), reason=NO_CUDA)])
      for a, b in [("cpu", "cuda"), ("cuda", "cpu"), ("cuda", "cuda")]],
]
RES, CHANNELS = 16, 3


def _config() -> UNetConfig:
    return UNetConfig(in_channels=CHANNELS, out_channels=CHANNELS, operator_channels=8,
                      radius=2.5 / RES, kernel_hidden_channels=8, kernel_num_basis=4,
                      grid_shape=(8, 8), channels=8, channel_mults=(1, 2), attention_levels=(1,),
                      num_heads=2, time_embed_dim=8)


def _diffusion() -> MollifiedDiffusion:
    return MollifiedDiffusion(MollifiedNoise(0.5 / RES, 2), parametrization="x0")


def _batches(device: str, num: int = 2, batch_size: int = 2) -> list:
    # Collation on the device: images there, so mollifier, node positions and radius graph are
    # computed there too.
    config, diffusion = _config(), _diffusion()
    data = ContinuousShapes(num * batch_size, RES, ShapesConfig(channels=CHANNELS), seed=0)
    collator = GraphCollator(diffusion.mollifier, rate=2.0, radius=config.radius)
    out = []
    for b in range(num):
        items = [data[i].to(device) for i in range(b * batch_size, (b + 1) * batch_size)]
        out.append(collator(items, generator=torch.Generator().manual_seed(b)))
    return out


def _trainer(tmp_path, device: str, max_steps: int) -> Trainer:
    torch.manual_seed(0)
    config, diffusion = _config(), _diffusion()
    cfg = TrainerConfig(lr=1e-3, warmup_steps=0, max_steps=max_steps, ema_decay=0.9,
                        log_every=1, sample_every=None, checkpoint_every=1, keep_last=3,
                        out_dir=str(tmp_path), device=device, progress=False, verbose=False,
                        plot_loss=False)
    return Trainer(MultiscaleOperatorUNet(config), partial(diffusion.training_loss), cfg,
                   model_config=run_config(config, diffusion, resolution=RES),
                   pass_generator=True)


def _on(tensor: torch.Tensor, device: str) -> bool:
    return tensor.device.type == torch.device(device).type


@pytest.mark.parametrize("device", DEVICES)
def test_collate_on_device(device):
    (batch, _) = _batches(device)
    for key in ("x", "pos", "pixel", "edge_index", "batch"):
        assert _on(batch[key], device), key
    assert batch.num_graphs == 2 and batch.num_nodes == 2 * RES * RES // 2
    assert torch.isfinite(batch.x).all()


@pytest.mark.parametrize("device", DEVICES)
def test_train_checkpoint_resume_sample(tmp_path, device):
    batches = _batches(device)
    trainer = _trainer(tmp_path, device, max_steps=2)
    assert trainer.generator.device.type == torch.device(device).type  # draws on the device
    result = trainer.fit(batches)
    assert result.step == 2 and result.bad_steps == 0 and result.loss > 0
    assert all(_on(p, device) for p in trainer.model.parameters())

    # The checkpoint is read on the CPU by default and onto the device when asked.
    state = load_checkpoint(result.checkpoint)
    assert all(v.device.type == "cpu" for v in state["model"].values())
    state = load_checkpoint(result.checkpoint, map_location=device)
    assert all(_on(v, device) for v in state["model"].values())

    # Resume in a new trainer on the same device; it continues from step 2.
    resumed = _trainer(tmp_path, device, max_steps=3)
    assert resumed.resume("latest") == result.checkpoint and resumed.step == 2
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters(), strict=True):
        assert _on(b, device) and torch.equal(a, b)
    assert resumed.fit(batches).step == 3

    # Sample with the EMA weights: a DDPM chain (stochastic at every step) drawing every noise
    # field from a generator on the device, which is consumed; the global CPU RNG is untouched.
    model = resumed.ema.module.eval()
    generator = torch.Generator(device).manual_seed(0)
    before_gen, before_cpu = generator.get_state(), torch.get_rng_state()
    out = sample(model, _diffusion(), shape=(RES, RES), num_samples=2, channels=CHANNELS,
                 steps=3, sampler="ddpm", generator=generator, progress=False, device=device)
    assert not torch.equal(generator.get_state(), before_gen)
    assert torch.equal(torch.get_rng_state(), before_cpu)
    assert _on(out.images, device) and out.images.shape == (2, CHANNELS, RES, RES)
    assert torch.isfinite(out.images).all()

    # On irregular points with a radius graph built once on the device.
    pos = torch.rand(100, 2, generator=torch.Generator().manual_seed(1)).to(device)
    radius = _config().radius
    out = sample(model, _diffusion(), pos=pos, num_samples=2, channels=CHANNELS, steps=2,
                 generator=torch.Generator(device).manual_seed(0), progress=False,
                 edge_fn=lambda p, b: radius_graph(p, radius, b, loop=True))
    assert _on(out.values, device) and out.values.shape == (200, CHANNELS)
    assert torch.isfinite(out.values).all()


@pytest.mark.parametrize("written_on,read_on", PAIRS)
def test_checkpoint_moves_between_devices(tmp_path, monkeypatch, written_on, read_on):
    # A run trained on one device samples on another: load_pretrained(device=...) (the file is
    # read onto the CPU first, map_location="cpu", then the model is moved).
    # float32 convolutions on both devices (cuDNN defaults to TF32; matmuls do not)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    trainer = _trainer(tmp_path, written_on, max_steps=1)
    result = trainer.fit(_batches(written_on, num=1))
    run = load_pretrained(result.checkpoint, weights="model", device=read_on)
    assert all(_on(p, read_on) for p in run.model.parameters())
    for a, b in zip(trainer.model.parameters(), run.model.parameters(), strict=True):
        assert torch.equal(a.cpu(), b.cpu())
    kwargs = dict(shape=(RES, RES), num_samples=1, channels=CHANNELS, steps=2, progress=False)
    here = sample(run.model, run.diffusion, generator=torch.Generator().manual_seed(0),
                  device=read_on, **kwargs).images
    there = sample(trainer.model.eval(), run.diffusion,
                   generator=torch.Generator().manual_seed(0), device=written_on,
                   **kwargs).images
    # A CPU generator gives the same noise fields on every device: the samples agree up to the
    # devices' float rounding.
    torch.testing.assert_close(here.cpu(), there.cpu(), atol=5e-3, rtol=5e-3)

    # Trainer.resume on the other device: weights and optimiser state are read onto the CPU
    # (map_location="cpu") and copied to the parameters' device by load_state_dict.
    if written_on == read_on:
        other = _trainer(tmp_path, read_on, max_steps=2)
        other.resume(result.checkpoint)
        assert other.step == 1
        opt_state = other.optimizer.state[next(iter(other.model.parameters()))]
        assert _on(opt_state["exp_avg"], read_on)
        assert other.fit(_batches(read_on, num=1)).step == 2


@pytest.mark.device
def test_trainer_resumes_a_checkpoint_of_another_device(tmp_path):
    # Simulated on the CPU: a checkpoint whose trainer generator was a CUDA one (its state is
    # the 8-byte seed and 8-byte offset of the Philox generator).
    trainer = _trainer(tmp_path, "cpu", max_steps=1)
    path = trainer.fit(_batches("cpu", num=1)).checkpoint
    state = load_checkpoint(path)
    state["rng"][0]["generators"]["trainer"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(state, path)
    other = _trainer(tmp_path, "cpu", max_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other.resume(path)
    assert other.step == 1
    assert any("generator" in str(w.message) for w in caught)
