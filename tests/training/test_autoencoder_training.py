"""Training a diffusion autoencoder (issue 15, #3) through the generic Trainer: the encoder reads
its own random subset of each image's pixels (GraphCollator's ``encoder_rate``), AutoencoderLoss
encodes inside the model's forward; the loss falls, the encoder learns, a resumed run matches an
uninterrupted one, and two DDP processes reduce the encoder's gradients like the U-Net's."""
from __future__ import annotations

import gc
import os
import socket
import sys
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from pyg_infdiff.data import GraphCollator, make_loader
from pyg_infdiff.diffusion import AutoencoderLoss, MollifiedDiffusion
from pyg_infdiff.models import DiffusionAutoencoder, EncoderConfig, UNetConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.testing import redraw_zero_layers
from pyg_infdiff.training import (
    Trainer,
    TrainerConfig,
    barrier,
    cleanup_distributed,
    init_distributed,
    load_checkpoint,
)

SIDE = 12


def tiny_autoencoder(seed: int = 0, redraw: bool = False) -> DiffusionAutoencoder:
    # redraw: give the zero-initialised output layers random weights, so that the gradient
    # reaches the latent (and the encoder) from the first step.
    torch.manual_seed(seed)
    encoder = EncoderConfig(in_channels=1, latent_dim=6, operator_channels=8, radius=0.2,
                            kernel_num_basis=4, kernel_hidden_channels=8, grid_shape=(6, 6),
                            channels=8, channel_mults=(1, 2), num_heads=2)
    unet = UNetConfig(in_channels=1, out_channels=1, operator_channels=8, radius=0.15,
                      kernel_hidden_channels=8, grid_shape=(6, 6), channels=8,
                      channel_mults=(1, 2), attention_levels=(1,), num_heads=2,
                      time_embed_dim=8, cond_dim=6)
    model = DiffusionAutoencoder(encoder, unet)
    if redraw:
        redraw_zero_layers(model, gain=0.5, generator=torch.Generator().manual_seed(seed))
    return model


def images(num: int = 8) -> torch.Tensor:
    # Smooth images that differ by a few parameters: something for the latent to carry.
    gen = torch.Generator().manual_seed(0)
    u = (torch.arange(SIDE) + 0.5) / SIDE
    freq = 1 + 3 * torch.rand(num, 1, 1, 1, generator=gen)
    phase = 6 * torch.rand(num, 1, 1, 1, generator=gen)
    return torch.sin(freq * 6 * u.view(1, 1, -1, 1) + phase) * torch.cos(3 * u.view(1, 1, 1, -1))


def diffusion() -> MollifiedDiffusion:
    return MollifiedDiffusion(MollifiedNoise(0.5 / SIDE, 2), parametrization="x0")


def loader(batch_size: int = 4, **kwargs):
    collate = GraphCollator(diffusion().mollifier, rate=2, encoder_rate=2)
    return make_loader(images(), collate, batch_size=batch_size, seed=1, drop_last=True,
                       **kwargs)


def config(out, **kwargs) -> TrainerConfig:
    base = dict(lr=3e-3, warmup_steps=2, max_steps=8, ema_decay=0.9, log_every=2,
                checkpoint_every=3, sample_every=None, keep_last=5, out_dir=str(out),
                device="cpu", progress=False, verbose=False, plot_loss=False)
    base.update(kwargs)
    return TrainerConfig(**base)


def fixed_loss(model, batch) -> float:
    gen = torch.Generator().manual_seed(123)
    t = torch.randint(0, 1000, (batch.num_graphs,), generator=gen)
    with torch.no_grad():
        return float(AutoencoderLoss(diffusion())(model, batch, t=t, generator=gen))


def test_training_lowers_the_loss_and_moves_the_encoder(tmp_path):
    model = tiny_autoencoder()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    batch = next(iter(loader(batch_size=8)))
    start = fixed_loss(model, batch)
    trainer = Trainer(model, AutoencoderLoss(diffusion()), config(tmp_path, max_steps=120,
                      ema_decay=None, checkpoint_every=0), pass_generator=True)
    trainer.fit(loader())
    end = fixed_loss(trainer.model, batch)
    assert end < 0.7 * start, (start, end)
    moved = [k for k, v in trainer.model.encoder.state_dict().items()
             if not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2, moved


def test_encoder_gradients_are_nonzero():
    model = tiny_autoencoder(redraw=True)
    batch = next(iter(loader()))
    loss = AutoencoderLoss(diffusion())(model, batch, generator=torch.Generator())
    loss.backward()
    grads = {n: p.grad for n, p in model.encoder.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert sum(bool(g.abs().sum() > 0) for g in grads.values()) > 0.8 * len(grads)
    # the latent changes the prediction: the loss depends on the encoder's inputs
    other = batch.clone()
    other.enc_x = -other.enc_x
    gen = torch.Generator()
    t = torch.tensor([500] * batch.num_graphs)
    a = AutoencoderLoss(diffusion())(model, batch, t=t, generator=gen.manual_seed(0))
    b = AutoencoderLoss(diffusion())(model, other, t=t, generator=gen.manual_seed(0))
    assert not torch.isclose(a, b)


def test_forward_needs_exactly_one_source_of_the_latent():
    model = tiny_autoencoder()
    batch = next(iter(loader()))
    z = torch.zeros(batch.num_graphs, 6)
    t = torch.zeros(batch.num_graphs, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one"):
        model(batch.x, batch.pos, t, batch.batch)
    with pytest.raises(ValueError, match="exactly one"):
        model(batch.x, batch.pos, t, batch.batch, cond=z, enc_x=batch.enc_x,
              enc_pos=batch.enc_pos)
    with pytest.raises(ValueError, match="enc_pos"):
        model(batch.x, batch.pos, t, batch.batch, enc_x=batch.enc_x)
    # encoding inside forward is encoding first, then conditioning
    with torch.no_grad():
        z = model.encode(batch.enc_x, batch.enc_pos, batch.enc_batch)
        torch.testing.assert_close(
            model(batch.x, batch.pos, t, batch.batch, enc_x=batch.enc_x, enc_pos=batch.enc_pos,
                  enc_batch=batch.enc_batch),
            model(batch.x, batch.pos, t, batch.batch, cond=z))


def _crash_after(steps: int):
    inner = AutoencoderLoss(diffusion())
    calls = [0]

    def loss_fn(model, batch, generator):
        calls[0] += 1
        if calls[0] > steps:
            raise RuntimeError("crash")
        return inner(model, batch, generator=generator)

    return loss_fn


def test_resume_matches_an_uninterrupted_run(tmp_path):
    # 2 batches per epoch: the crash at step 5 falls in epoch 2, mid-epoch.
    def run(out, loss_fn, seed=0, resume=None):
        trainer = Trainer(tiny_autoencoder(seed), loss_fn, config(out), pass_generator=True)
        trainer.fit(loader(), resume=resume)
        return trainer

    straight = run(tmp_path / "a", AutoencoderLoss(diffusion()))
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path / "b", _crash_after(5))
    resumed = run(tmp_path / "b", AutoencoderLoss(diffusion()), seed=1, resume="latest")
    assert resumed.step == straight.step == 8
    for mine, theirs in ((resumed.model, straight.model), (resumed.ema, straight.ema)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(),
                                strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


# ------------------------------------------------------------------ distributed data parallel
def _ddp_config(out: str) -> TrainerConfig:
    return config(out, max_steps=1, warmup_steps=1, ema_decay=None, grad_clip=None,
                  checkpoint_every=1)


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    if sys.platform == "linux":
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    init_distributed("gloo", timeout=timedelta(seconds=120))
    trainer = Trainer(tiny_autoencoder(redraw=True), AutoencoderLoss(diffusion()),
                      _ddp_config(out), pass_generator=True)
    assert isinstance(trainer.ddp_model, torch.nn.parallel.DistributedDataParallel)
    trainer.fit(loader(batch_size=2))  # make_loader gives each process its share
    del trainer
    gc.collect()
    barrier()
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_reduces_the_encoder_gradients(tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = load_checkpoint(out / "checkpoints" / "ckpt_00000001.pt")["model"]

    # By hand, in one process: each rank's batch and generator (seed + rank), the mean of the
    # two losses, one AdamW step as the trainer takes it.
    model = tiny_autoencoder(redraw=True)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = AutoencoderLoss(diffusion())
    losses = []
    for rank in range(2):
        batch = next(iter(loader(batch_size=2, num_replicas=2, rank=rank)))
        losses.append(loss_fn(model, batch, generator=torch.Generator().manual_seed(rank)))
    (sum(losses) / 2).backward()
    cfg = _ddp_config(str(tmp_path / "unused"))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    opt.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # and the encoder did take the step
    assert not torch.equal(ddp["encoder.out.weight"], initial["encoder.out.weight"])
