"""The dense DDPM baseline of the benchmarks (bench/baseline_ddpm.py): size, one training step,
a short sampling run. Needs ``diffusers`` (the ``bench`` extra); skipped without it."""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from baseline_ddpm import (  # noqa: E402
    build_dense_unet,
    count_parameters,
    dense_sample,
    dense_train_step,
    dense_unet_config,
    make_scheduler,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_dense_unet(28, 1, 1_100_000)


def test_size_at_28(model):
    assert abs(count_parameters(model) / 1.1e6 - 1) < 0.15
    cfg = model.config
    assert cfg.sample_size == 28 and cfg.in_channels == cfg.out_channels == 1
    assert cfg.layers_per_block == 2
    # 28 -> 14 -> 7, attention at 14² and 7² only
    assert list(cfg.down_block_types) == ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    assert all(c % cfg.norm_num_groups == 0 for c in cfg.block_out_channels)


@pytest.mark.parametrize(
    "resolution, channels, target", [(32, 3, 1_000_000), (64, 3, 40_000_000), (64, 1, 2_000_000)]
)
def test_config_hits_target(resolution, channels, target):
    from diffusers import UNet2DModel

    cfg = dense_unet_config(resolution, channels, target)
    with torch.device("meta"):
        n = count_parameters(UNet2DModel(**cfg))
    assert abs(n / target - 1) < 0.15, (cfg["block_out_channels"], n)
    assert cfg["in_channels"] == channels
    assert resolution // 2 ** (len(cfg["block_out_channels"]) - 1) == 8


def test_config_errors():
    with pytest.raises(ValueError, match="not both"):
        dense_unet_config(28, 1, 1_000_000, width=32)
    with pytest.raises(ValueError, match="divisible"):
        dense_unet_config(30, 1)
    with pytest.raises(ValueError, match="ddpm"):
        make_scheduler("euler")


def test_train_step_updates_weights(model):
    scheduler = make_scheduler("ddpm")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.rand(4, 1, 28, 28) * 2 - 1
    loss = dense_train_step(
        model, scheduler, images, optimizer, generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(loss, float) and 0 < loss < 10
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_sample_shape_and_reproducible(model):
    scheduler = make_scheduler("ddim")
    out = dense_sample(model, scheduler, 2, 28, 3, torch.Generator().manual_seed(1))
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    again = dense_sample(model, scheduler, 2, 28, 3, torch.Generator().manual_seed(1),
                         batch_size=1)
    torch.testing.assert_close(out[:1], again[:1])
    assert scheduler.num_inference_steps is None  # the caller's scheduler is left untouched


def test_ddpm_sampling_runs(model):
    out = dense_sample(model, make_scheduler("ddpm"), 1, 28, 2, torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 28, 28) and torch.isfinite(out).all()
