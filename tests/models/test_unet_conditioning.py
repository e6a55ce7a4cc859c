"""Conditioning of MultiscaleOperatorUNet on a vector per graph (issue 15, item 2), and that
unconditioned models, configurations and checkpoints keep working unchanged."""
from __future__ import annotations

import pytest
import torch
from test_unet import tiny_config  # the small configuration of the U-Net's own tests

from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.testing import redraw_zero_layers


def speaking_model(seed: int = 0, **overrides) -> MultiscaleOperatorUNet:
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(tiny_config(**overrides))
    redraw_zero_layers(model, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def inputs(num_nodes=(40, 50), seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(sum(num_nodes), 2, generator=gen)
    batch = torch.cat([torch.full((n,), k) for k, n in enumerate(num_nodes)])
    x = torch.randn(pos.size(0), 2, generator=gen)
    return x, pos, batch, torch.tensor([100, 700])


def test_unconditioned_model_is_unchanged():
    # cond_dim=0: no new parameters, the state-dict keys of models saved before the field.
    config = tiny_config()
    assert config.cond_dim == 0 and UNetConfig.preset(28).cond_dim == 0
    model = MultiscaleOperatorUNet(config)
    assert model.cond_embed is None
    assert not [key for key in model.state_dict() if "cond" in key]
    conditioned = MultiscaleOperatorUNet(tiny_config(cond_dim=5))
    extra = set(conditioned.state_dict()) - set(model.state_dict())
    assert extra and all(key.startswith("cond_embed.") for key in extra)
    assert set(model.state_dict()) <= set(conditioned.state_dict())
    # a dictionary saved before the field existed loads as unconditioned
    old = config.to_dict()
    del old["cond_dim"]
    assert UNetConfig.from_dict(old) == config
    assert UNetConfig.from_dict(tiny_config(cond_dim=5).to_dict()).cond_dim == 5
    assert "cond" not in model.summary() and "cond" in conditioned.summary()


def test_old_checkpoint_loads_unconditioned(tmp_path):
    from pyg_infdiff.diffusion import MollifiedDiffusion
    from pyg_infdiff.noise import MollifiedNoise
    from pyg_infdiff.training import CheckpointManager, load_pretrained, run_config

    old = speaking_model()
    info = run_config(old.config, MollifiedDiffusion(MollifiedNoise(1 / 24, 2)), resolution=12)
    del info["unet"]["cond_dim"]  # what every checkpoint before the field holds
    CheckpointManager(tmp_path).save({"model": old.state_dict(), "step": 1,
                                      "model_config": info}, 1)
    loaded = load_pretrained(tmp_path, weights="model")
    assert loaded.config.cond_dim == 0
    x, pos, batch, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, pos, t, batch), old(x, pos, t, batch))


def test_condition_reaches_each_graph_through_its_row():
    model = speaking_model(cond_dim=4)
    x, pos, batch, t = inputs()
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x, pos, t, batch, cond=z)
        again = model(x, pos, t, batch, cond=z.clone())
        other = z.clone()
        other[1] = -other[1]
        changed = model(x, pos, t, batch, cond=other)
    assert out.shape == (90, 2) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, again)
    first = batch == 0
    torch.testing.assert_close(changed[first], out[first])  # graph 0 keeps its output
    assert float((changed[~first] - out[~first]).abs().max()) > 1e-3


def test_conditioned_model_trains_the_condition():
    model = speaking_model(cond_dim=3)
    model.train()
    x, pos, batch, t = inputs()
    z = torch.randn(2, 3, requires_grad=True)
    model(x, pos, t, batch, cond=z).square().mean().backward()
    assert z.grad is not None and bool(z.grad.any())
    assert all(p.grad is not None for p in model.cond_embed.parameters())


def test_condition_errors():
    x, pos, batch, t = inputs()
    plain = speaking_model()
    with pytest.raises(ValueError, match="unconditioned"):
        plain(x, pos, t, batch, cond=torch.zeros(2, 3))
    conditioned = speaking_model(cond_dim=3)
    with pytest.raises(ValueError, match=r"cond.*\[2, 3\]"):
        conditioned(x, pos, t, batch)
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        conditioned(x, pos, t, batch, cond=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="cond_dim"):
        tiny_config(cond_dim=-1)
