"""The diffusion autoencoder module (issue 15): an encoder and a U-Net conditioned on its z."""
from __future__ import annotations

import pytest
import torch

from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import (
    DiffusionAutoencoder,
    EncoderConfig,
    FunctionEncoder,
    MultiscaleOperatorUNet,
    UNetConfig,
)


def tiny_autoencoder(latent_dim: int = 6) -> DiffusionAutoencoder:
    encoder = EncoderConfig(in_channels=1, latent_dim=latent_dim, operator_channels=8,
                            radius=0.2, kernel_num_basis=4, kernel_hidden_channels=8,
                            grid_shape=(6, 6), channels=8, channel_mults=(1, 2), num_heads=2)
    unet = UNetConfig(in_channels=1, out_channels=1, operator_channels=8, radius=0.15,
                      kernel_hidden_channels=8, grid_shape=(6, 6), channels=8,
                      channel_mults=(1, 2), attention_levels=(1,), num_heads=2,
                      time_embed_dim=8, cond_dim=latent_dim)
    return DiffusionAutoencoder(encoder, unet)


def test_parts_and_round_trip():
    torch.manual_seed(0)
    model = tiny_autoencoder()
    assert isinstance(model.encoder, FunctionEncoder)
    assert isinstance(model.unet, MultiscaleOperatorUNet) and model.latent_dim == 6
    assert repr(model).startswith("DiffusionAutoencoder(latent_dim=6, encoder ")
    copy = DiffusionAutoencoder.from_dict(model.to_dict())
    assert copy.to_dict() == model.to_dict()
    copy.load_state_dict(model.state_dict())  # the same parameter names
    preset = DiffusionAutoencoder.preset(28)
    assert preset.unet.config.cond_dim == preset.latent_dim == 64
    assert preset.unet.config.grid_shape == preset.encoder.config.grid_shape == (14, 14)


def test_encode_then_denoise():
    torch.manual_seed(0)
    model = tiny_autoencoder().eval()
    index = LatticeIndex.full((12, 12), 2)
    pos = index.pos()
    x = torch.sin(5 * pos[:, :1]) * pos[:, 1:]
    with torch.no_grad():
        z = model.encode(x, pos, index.batch, lattice=index)
        out = model(x, pos, torch.tensor([5, 500]), index.batch, lattice=index, cond=z)
    assert z.shape == (2, 6) and out.shape == (288, 1) and bool(torch.isfinite(out).all())


def test_configuration_errors():
    encoder = EncoderConfig(latent_dim=8)
    with pytest.raises(ValueError, match="cond_dim"):
        DiffusionAutoencoder(encoder, UNetConfig(cond_dim=4))
    with pytest.raises(ValueError, match="in_channels"):
        DiffusionAutoencoder(encoder, UNetConfig.preset(32, cond_dim=8))
    with pytest.raises(ValueError, match="keys"):
        DiffusionAutoencoder.from_dict({"unet": {}})
