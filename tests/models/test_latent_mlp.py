"""The latent denoiser of the two-stage model (issue 15): the official MLPSkipNet layout, written
out here as a reference, its parameter count, its configuration."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from pyg_infdiff.models import LatentMLP, LatentMLPConfig


def reference_forward(model: LatentMLP, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``MLPSkipNet.forward`` of the official code (models/latent_model.py), in functional form
    on the weights of :obj:`model`."""
    p = dict(model.named_parameters())
    dim = model.config.time_embed_dim
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    cond = F.linear(F.gelu(F.linear(emb, p["time_mlp.0.weight"], p["time_mlp.0.bias"])),
                    p["time_mlp.2.weight"], p["time_mlp.2.bias"])

    def mlp_ln_act(i, x):  # MLPLNAct: linear, x * (1 + cond_layers(cond)), norm, act
        x = F.linear(x, p[f"layers.{i}.linear.weight"], p[f"layers.{i}.linear.bias"])
        x = x * (1.0 + F.linear(F.gelu(cond), p[f"layers.{i}.cond.weight"],
                                p[f"layers.{i}.cond.bias"]))
        x = F.layer_norm(x, x.shape[-1:], p[f"layers.{i}.norm.weight"],
                         p[f"layers.{i}.norm.bias"])
        return F.gelu(x)

    h = mlp_ln_act(0, z)
    for i in range(1, model.config.num_layers - 1):
        h = mlp_ln_act(i, torch.cat((h, z), dim=1))
    return F.linear(torch.cat((h, z), dim=1), p["out.weight"], p["out.bias"])


@given(latent_dim=st.integers(1, 12), hidden=st.integers(1, 24), layers=st.integers(2, 5),
       time_dim=st.integers(2, 17), seed=st.integers(0, 1000))
@settings(max_examples=20)
def test_matches_the_official_layout(latent_dim, hidden, layers, time_dim, seed):
    torch.manual_seed(seed)
    config = LatentMLPConfig(latent_dim, hidden, layers, time_dim)
    model = LatentMLP(config).eval()
    for param in model.parameters():  # LayerNorm starts at (1, 0): perturb it too
        param.data.add_(0.1 * torch.randn_like(param))
    z, t = torch.randn(5, latent_dim), torch.tensor([0, 1, 17, 500, 999])
    torch.testing.assert_close(model(z, t), reference_forward(model, z, t), rtol=1e-5,
                               atol=1e-5)
    d, h, e = latent_dim, hidden, time_dim
    expected = (e * d + d + d * d + d  # time MLP
                + 2 * (d * h + h) + 2 * h  # first layer: linear, conditioning, LayerNorm
                + (layers - 2) * ((d + h) * h + h + d * h + h + 2 * h)  # skip layers
                + (d + h) * d + d)  # output layer
    assert model.num_parameters() == expected


def test_official_size_repr_and_time_dependence():
    model = LatentMLP(LatentMLPConfig(latent_dim=256))  # the official 128^2 / 256^2 latent size
    assert (model.config.hidden_channels, model.config.num_layers,
            model.config.time_embed_dim) == (2048, 10, 128)
    assert repr(model) == f"LatentMLP(256, hidden_channels=2048, num_layers=10, " \
                          f"{model.num_parameters()} parameters)"
    small = LatentMLP(LatentMLPConfig(4, 16, 3)).eval()
    z = torch.randn(3, 4)
    with torch.no_grad():
        out = small(z, torch.tensor([1, 1, 1]))
        assert not torch.allclose(out, small(z, torch.tensor([900, 900, 900])))
        # the skip connections: every layer reads z_t, so the output moves with it
        assert not torch.allclose(out, small(z + 0.1, torch.tensor([1, 1, 1])))
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        small(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="one time step per row"):
        small(z, torch.zeros(2))


def test_dropout_only_in_training():
    model = LatentMLP(LatentMLPConfig(4, 32, 3, dropout=0.5))
    z, t = torch.randn(6, 4), torch.full((6,), 3)
    model.train()
    assert not torch.equal(model(z, t), model(z, t))
    model.eval()
    assert torch.equal(model(z, t), model(z, t))


@given(latent_dim=st.integers(1, 2048), hidden=st.integers(1, 4096),
       layers=st.integers(2, 40), time_dim=st.integers(2, 512),
       dropout=st.floats(0.0, 0.99))
@settings(max_examples=30)
def test_config_round_trip(latent_dim, hidden, layers, time_dim, dropout):
    config = LatentMLPConfig(latent_dim, hidden, layers, time_dim, dropout)
    data = config.to_dict()
    assert data == {"latent_dim": latent_dim, "hidden_channels": hidden, "num_layers": layers,
                    "time_embed_dim": time_dim, "dropout": dropout}
    assert LatentMLPConfig.from_dict(data) == config


def test_config_errors():
    with pytest.raises(ValueError, match="num_layers"):
        LatentMLPConfig(4, num_layers=1)
    with pytest.raises(ValueError, match="latent_dim"):
        LatentMLPConfig(0)
    with pytest.raises(ValueError, match="time_embed_dim"):
        LatentMLPConfig(4, time_embed_dim=1)
    with pytest.raises(ValueError, match="dropout"):
        LatentMLPConfig(4, dropout=1.0)
    with pytest.raises(ValueError, match="Unknown"):
        LatentMLPConfig.from_dict({"latent_dim": 4, "width": 3})
    a, b = LatentMLP(LatentMLPConfig(4, 8, 3)), LatentMLP(LatentMLPConfig(4, 8, 3))
    b.load_state_dict(a.state_dict())  # same config, same parameter names
