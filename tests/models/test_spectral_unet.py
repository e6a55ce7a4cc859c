"""The multiscale operator U-Net with spectral convolutions on its lattice
(``UNetConfig(grid_conv="spectral")``, the official code's ``conv_type="spectral"``): which
convolutions change and with how many modes per level, forward and backward on subsampled
graphs and full lattices, the configuration's round trip and legacy dictionaries, one graph
under ``torch._dynamo``, and the encoder's conv-only configuration."""
from __future__ import annotations

import pytest
import torch
from test_unet import smooth_field, tiny_config  # the small configuration of the U-Net tests

from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import DenseUNet, EncoderConfig, MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.nn import SpectralConv
from pyg_infdiff.nn.dense import Downsample, ResBlock, Upsample


def spectral_model(seed: int = 0, **overrides) -> MultiscaleOperatorUNet:
    # grid 6x6 then 3x3: the default 4 modes become 3 and 2
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(tiny_config(grid_conv="spectral", **overrides))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the zero-initialised layers, so that outputs are not all zero
        model.proj.weight.normal_(0.0, 0.5, generator=gen)
        for module in model.modules():
            if isinstance(module, SpectralConv) and not module.weight.any():
                module.weight.normal_(0.0, 0.3, generator=gen)
    return model


def test_which_convolutions_are_spectral_and_their_modes():
    model = spectral_model()
    dense = model.dense
    blocks = [m for m in dense.modules() if isinstance(m, ResBlock)]
    assert blocks and all(isinstance(b.conv1, SpectralConv) and isinstance(b.conv2, SpectralConv)
                          for b in blocks)
    # the 1x1 skips stay pointwise convolutions; in and out are pointwise, with coordinates in
    skips = [b.skip for b in blocks if not isinstance(b.skip, torch.nn.Identity)]
    assert skips and all(isinstance(s, torch.nn.Conv2d) and s.kernel_size == (1, 1)
                         for s in skips)
    assert dense.conv_in.kernel_size == (1, 1) and dense.conv_in.in_channels == 8 + 2
    assert dense.conv_out.kernel_size == (1, 1)
    (down,) = [m for m in dense.modules() if isinstance(m, Downsample)]
    (up,) = [m for m in dense.modules() if isinstance(m, Upsample)]
    assert isinstance(down.conv, SpectralConv) and isinstance(up.conv, SpectralConv)
    # 4 modes fitted per level: 6x6 holds 3 (2 * 3 - 1 <= 6), 3x3 holds 2
    assert blocks[0].conv1.modes == (3, 3) and down.conv.modes == up.conv.modes == (2, 2)
    assert {b.conv1.modes for b in blocks} == {(3, 3), (2, 2)}
    # with 1 mode every spectral convolution keeps only the mean
    one = MultiscaleOperatorUNet(tiny_config(grid_conv="spectral", spectral_modes=1))
    assert {m.modes for m in one.modules() if isinstance(m, SpectralConv)} == {(1, 1)}
    assert "(spectral, 4 modes)" in model.summary()
    assert "spectral" not in MultiscaleOperatorUNet(tiny_config()).summary()


@pytest.mark.parametrize("where", ["subsampled", "full"])
def test_forward_and_backward(where):
    model = spectral_model().train()
    index = LatticeIndex.full((12, 12), 2)
    if where == "subsampled":
        keep = torch.randperm(index.pixel.numel(), generator=torch.Generator().manual_seed(0))
        keep = keep[:100].sort().values
        index = LatticeIndex((12, 12), index.pixel[keep], index.batch[keep], 2)
    pos = index.pos()
    out = model(smooth_field(pos), pos, torch.tensor([10, 600]), index.batch, lattice=index)
    assert out.shape == (pos.size(0), 2) and bool(torch.isfinite(out).all())
    assert float(out.detach().abs().max()) > 0
    out.square().mean().backward()
    spectral = [m for m in model.modules() if isinstance(m, SpectralConv)]
    for module in spectral:
        assert module.weight.grad is not None and bool(torch.isfinite(module.weight.grad).all())
    assert all(float(m.weight.grad.abs().max()) > 0 for m in spectral)


def test_any_resolution_and_paths_agree():
    model = spectral_model().eval()
    t = torch.tensor([7, 300])
    for side in (12, 24):
        index = LatticeIndex.full((side, side), 2)
        pos = index.pos()
        with torch.no_grad():
            dense = model(smooth_field(pos), pos, t, index.batch, lattice=index)
            graph = model(smooth_field(pos), pos, t, index.batch)
        assert bool(torch.isfinite(dense).all())
        torch.testing.assert_close(dense, graph, atol=1e-4, rtol=1e-4)


def test_config_round_trip_and_legacy_dicts(tmp_path):
    config = tiny_config(grid_conv="spectral", spectral_modes=3)
    assert UNetConfig.from_dict(config.to_dict()) == config
    model = spectral_model(spectral_modes=3)
    path = tmp_path / "model.pt"
    torch.save({"config": config.to_dict(), "model": model.state_dict()}, path)
    blob = torch.load(path, weights_only=True)  # real tensors and plain types only
    again = MultiscaleOperatorUNet(UNetConfig.from_dict(blob["config"]))
    again.load_state_dict(blob["model"])
    pos = torch.rand(60, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(smooth_field(pos), pos, torch.tensor([5])),
                                   model.eval()(smooth_field(pos), pos, torch.tensor([5])))
    # A dictionary saved before the fields existed: the 3^d convolutions, same state-dict keys.
    legacy = tiny_config().to_dict()
    del legacy["grid_conv"], legacy["spectral_modes"]
    loaded = UNetConfig.from_dict(legacy)
    assert loaded == tiny_config() and loaded.grid_conv == "conv"
    old_keys = set(MultiscaleOperatorUNet(tiny_config()).state_dict())
    assert set(MultiscaleOperatorUNet(loaded).state_dict()) == old_keys
    assert UNetConfig().grid_conv == "conv" and UNetConfig.preset(64).grid_conv == "conv"
    with pytest.raises(ValueError, match="'grid_conv'"):
        tiny_config(grid_conv="fourier")
    with pytest.raises(ValueError, match="spectral_modes"):
        tiny_config(grid_conv="spectral", spectral_modes=0)


def test_dense_unet_needs_its_lattice_for_spectral_convolutions():
    args = (4, 4, 8, (1, 2), 1, (1,), 16, 2)
    with pytest.raises(ValueError, match="grid_shape"):
        DenseUNet(*args, num_heads=2, grid_conv="spectral")
    with pytest.raises(ValueError, match="'grid_conv'"):
        DenseUNet(*args, num_heads=2, grid_conv="fft", grid_shape=(8, 8))
    dense = DenseUNet(*args, num_heads=2, grid_conv="spectral", grid_shape=(8, 8))
    x = torch.randn(2, 4, 8, 8)
    assert dense(x, torch.randn(2, 16)).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("ndim", [1, 3])
def test_other_dimensions(ndim):
    config = tiny_config(grid_conv="spectral", grid_shape=(6,) * ndim, radius=0.3)
    torch.manual_seed(0)
    model = MultiscaleOperatorUNet(config)
    index = LatticeIndex.full((8,) * ndim, 1)
    pos = index.pos()
    out = model(torch.randn(pos.size(0), 2), pos, torch.tensor([100]), index.batch,
                lattice=index)
    assert out.shape == (pos.size(0), 2)
    out.sum().backward()


def test_encoder_keeps_three_by_three_convolutions():
    # EncoderConfig has no grid_conv: spectral encoders are refused, with the key named.
    with pytest.raises(ValueError, match="grid_conv"):
        EncoderConfig.from_dict({**EncoderConfig().to_dict(), "grid_conv": "spectral"})
    with pytest.raises(TypeError, match="grid_conv"):
        EncoderConfig(grid_conv="spectral")


def test_full_lattice_forward_is_one_graph():
    model = spectral_model().eval()
    index = LatticeIndex.full((12, 12), 2)
    pos = index.pos()
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            explained = torch._dynamo.explain(model)(smooth_field(pos), pos,
                                                     torch.tensor([5, 900]), index.batch,
                                                     lattice=index)
    finally:
        torch._dynamo.reset()
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), reasons


def test_bfloat16_autocast_forward():
    # The FFTs run in float32 inside bfloat16 autocast; the model output stays close to float32.
    model = spectral_model().eval()
    index = LatticeIndex.full((12, 12), 2)
    pos = index.pos()
    args = (smooth_field(pos), pos, torch.tensor([10, 600]), index.batch)
    with torch.no_grad():
        reference = model(*args, lattice=index)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(*args, lattice=index)
    assert bool(torch.isfinite(low).all())
    error = float((low.float() - reference).norm() / reference.norm())
    assert error < 0.02, error  # measured 0.6%
