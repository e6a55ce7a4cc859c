"""Tests of the encoder of functions (issue 15, item 1): shapes on every kind of discretisation,
the exact invariances, and the discretisation invariance of the latent vector.

Measured with random weights (every zero-initialised layer re-drawn) on random smooth inputs
(``max_freq=3``), relative differences of z between a lattice and its 2x refinement, over 12
seeds: preset 28, 28² -> 56², median 0.25%, largest 0.35% (issue target 1%); preset 32,
32² -> 64², median 0.27%, largest 0.43%; the 1-D model, 32 -> 64, largest 0.15%. The same
encoder with the U-Net's kernels (2.5 pixels, 8 basis functions) gave a median of 1.5%, largest
2.6%, hence the wider, smoother kernels of the presets. Random halves of the pixels: one half
gives z 5.8% off the full lattice's (median), the mean over 32 halves 1.8%: what remains is the
bias of a nonlinear model fed Monte-Carlo estimates, which shrinks with the density (0.5% for
halves of the 56² render; in 1-D, with ~5 nodes per kernel ball, from 1.4-3.0% at 32 points
to 0.5-1.7% at 128).
"""
from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import LatticeIndex, lattice, subsample
from pyg_infdiff.models import EncoderConfig, FunctionEncoder
from pyg_infdiff.testing import (
    assert_discretization_invariant,
    assert_permutation_invariant,
    random_smooth_function,
    redraw_zero_layers,
)

CONFIGS = {
    "preset28": lambda: EncoderConfig.preset(28),
    "preset32": lambda: EncoderConfig.preset(32),
    "1d": lambda: EncoderConfig(
        in_channels=2, latent_dim=16, operator_channels=16, radius=5 / 32, kernel_num_basis=4,
        kernel_hidden_channels=16, grid_shape=(16,), channels=16, channel_mults=(1, 2),
        num_heads=2,
    ),
}
# The training resolution of each configuration (the coarse side of the comparisons).
SIDE = {"preset28": 28, "preset32": 32, "1d": 32}
# The target for z between a lattice and its 2x render; the measured largest
# difference is 0.43% (module docstring).
RTOL_REFINE = 0.01


def speaking_encoder(name: str, seed: int) -> FunctionEncoder:
    """The encoder with random weights and every zero-initialised layer re-drawn."""
    torch.manual_seed(seed)
    encoder = FunctionEncoder(CONFIGS[name]())
    redraw_zero_layers(encoder, generator=torch.Generator().manual_seed(seed))
    return encoder.eval()


def tiny_encoder(**overrides) -> FunctionEncoder:
    base = dict(in_channels=2, latent_dim=8, operator_channels=8, radius=0.2,
                kernel_num_basis=4, kernel_hidden_channels=8, grid_shape=(6, 6), channels=8,
                channel_mults=(1, 2), num_heads=2)
    return FunctionEncoder(EncoderConfig(**{**base, **overrides})).eval()


def full_lattice_fn(encoder: FunctionEncoder):
    """``fn(x, pos, batch)`` for the checker: z of the full lattice that ``pos`` holds (dense
    path)."""
    ndim = encoder.config.ndim

    def fn(x, pos, batch):
        side = round(pos.size(0) ** (1 / ndim))
        return encoder(x, pos, batch, lattice=LatticeIndex.full((side,) * ndim, 1))

    return fn


def test_shapes_on_every_discretisation():
    encoder = tiny_encoder()
    gen = torch.Generator().manual_seed(0)
    f = random_smooth_function(2, 2, generator=gen)
    with torch.no_grad():
        for shape in ((12, 12), (17, 23)):  # full lattices, not multiples of the grid too
            pos = lattice(shape)
            z = encoder(f(pos), pos)
            assert z.shape == (1, 8) and bool(torch.isfinite(z).all())
        # a batch of graphs of different sizes: irregular points and a subsampled lattice
        irregular = torch.rand(70, 2, generator=gen)
        pixels = subsample((16, 16), rate=4, generator=gen)
        sub = LatticeIndex.full((16, 16)).pos()[pixels]
        pos = torch.cat([irregular, sub])
        batch = torch.cat([torch.zeros(70), torch.ones(pixels.numel())]).long()
        z = encoder(f(pos), pos, batch)
        assert z.shape == (2, 8) and bool(torch.isfinite(z).all())
        alone = encoder(f(sub), sub)
    torch.testing.assert_close(z[1:], alone, atol=1e-5, rtol=1e-5)


def test_dense_and_graph_paths_agree():
    encoder = tiny_encoder()
    f = random_smooth_function(2, 2, generator=torch.Generator().manual_seed(1))
    index = LatticeIndex.full((12, 12), 2)
    pos = index.pos()
    with torch.no_grad():
        dense = encoder(f(pos), pos, index.batch, lattice=index)
        graph = encoder(f(pos), pos, index.batch)
    assert dense.shape == (2, 8)
    torch.testing.assert_close(dense, graph, atol=1e-4, rtol=1e-4)


def test_exact_invariances():
    # Node order, duplicated batches and other graphs in the batch change nothing.
    encoder = tiny_encoder()
    gen = torch.Generator().manual_seed(2)
    pos = torch.rand(120, 2, generator=gen)
    batch = torch.cat([torch.zeros(50), torch.ones(70)]).long()
    x = random_smooth_function(2, 2, generator=gen)(pos)
    with torch.no_grad():
        assert_permutation_invariant(encoder, x, pos, batch, level="graph", atol=1e-5,
                                     rtol=1e-4, generator=gen)


@given(name=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**16))
@settings(max_examples=8, deadline=None)
def test_z_of_a_lattice_and_its_2x_render_agree(name, seed):
    # The check: z from a 28² image and from its 56² render agree to 1%.
    encoder = speaking_encoder(name, seed)
    config = encoder.config
    f = random_smooth_function(config.ndim, config.in_channels, max_freq=3,
                               generator=torch.Generator().manual_seed(seed + 1))
    side = SIDE[name]
    assert_discretization_invariant(full_lattice_fn(encoder), f, resolutions=[side, 2 * side],
                                    ndim=config.ndim, rtol=RTOL_REFINE)


def test_z_converges_on_refined_lattices():
    encoder = speaking_encoder("preset28", 0)
    f = random_smooth_function(2, 1, max_freq=3, generator=torch.Generator().manual_seed(1))
    report = assert_discretization_invariant(full_lattice_fn(encoder), f,
                                             resolutions=[28, 56, 112], ndim=2,
                                             rtol=RTOL_REFINE, require_convergence=True)
    assert report.errors[1] < report.errors[0], report.errors


def halves_errors(name: str, seed: int, side: int, num_halves: int = 32) -> tuple[float, float]:
    """Relative errors against z of the full lattice: the median of single random halves of
    the pixels, and the mean of z over ``num_halves`` halves (one batch of graphs)."""
    encoder = speaking_encoder(name, seed)
    config = encoder.config
    shape = (side,) * config.ndim
    f = random_smooth_function(config.ndim, config.in_channels, max_freq=3,
                               generator=torch.Generator().manual_seed(seed + 1))
    pos = lattice(shape)
    x = f(pos)
    gen = torch.Generator().manual_seed(seed + 2)
    pixels = [subsample(shape, rate=2, generator=gen) for _ in range(num_halves)]
    pixel = torch.cat(pixels)
    batch = torch.cat([torch.full_like(p, k) for k, p in enumerate(pixels)])
    with torch.no_grad():
        full = encoder(x, pos, lattice=LatticeIndex.full(shape))
        index = LatticeIndex(shape, pixel, batch, num_halves)
        halves = encoder(x[pixel], pos[pixel], batch, lattice=index)
    scale = float(full.norm())
    single = float((halves - full).norm(dim=1).median()) / scale
    mean = float((halves.mean(0, keepdim=True) - full).norm()) / scale
    return single, mean


@given(name=st.sampled_from(["preset28", "preset32"]), seed=st.integers(0, 2**16))
@settings(max_examples=4, deadline=None)
def test_z_of_random_halves_agrees_in_expectation(name, seed):
    single, mean = halves_errors(name, seed, SIDE[name])
    # measured: single halves 5.8%, the mean of 32 halves 1.8% (median over seeds)
    assert mean < 0.5 * single, (single, mean)
    assert mean < 0.04, (single, mean)


def test_halves_bias_shrinks_with_density():
    # The mean over halves keeps the bias of a nonlinear model fed Monte-Carlo estimates; it
    # shrinks when the same function is rendered at twice the resolution.
    _, coarse = halves_errors("preset28", 0, 28)
    _, fine = halves_errors("preset28", 0, 56)
    assert fine < 0.6 * coarse, (coarse, fine)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_halves_in_one_dimension(seed):
    # In 1-D a half of 32 points leaves ~5 nodes per kernel ball: the bias dominates the mean
    # over halves (measured 1.4-3.0% against 2.6-4.1% for single halves) and shrinks with the
    # density (0.5-1.7% at 128 points, 0.26-0.6 times the 32-point bias).
    single, coarse = halves_errors("1d", seed, 32)
    _, fine = halves_errors("1d", seed, 128)
    assert coarse < single and fine < 0.8 * coarse, (single, coarse, fine)


def test_checker_on_random_halves_across_resolutions():
    # One random half of each lattice, through the public checker: single subsets agree
    # loosely (Monte-Carlo noise of ~6% at 28², ~2.5% at 56²).
    encoder = speaking_encoder("preset28", 3)
    f = random_smooth_function(2, 1, max_freq=3, generator=torch.Generator().manual_seed(4))
    report = assert_discretization_invariant(
        encoder, f, resolutions=[28, 56], ndim=2, rate=2,
        generator=torch.Generator().manual_seed(5), rtol=0.15)
    assert report.num_points == [392, 1568]


def test_other_dimensions():
    for grid_shape, shape in (((8,), (40,)), ((4, 4, 4), (8, 8, 8))):
        encoder = tiny_encoder(in_channels=1, grid_shape=grid_shape, radius=0.25)
        pos = lattice(shape)
        x = random_smooth_function(len(shape), 1,
                                   generator=torch.Generator().manual_seed(0))(pos)
        with torch.no_grad():
            dense = encoder(x, pos, lattice=LatticeIndex.full(shape))
            graph = encoder(x, pos)
        assert dense.shape == (1, 8)
        torch.testing.assert_close(dense, graph, atol=1e-4, rtol=1e-4)


def test_config_round_trip_presets_and_errors():
    config = EncoderConfig.preset(32, latent_dim=32)
    assert config.latent_dim == 32 and config.in_channels == 3 and config.ndim == 2
    data = config.to_dict()
    assert isinstance(data["grid_shape"], list)
    buffer = io.BytesIO()
    torch.save({"config": data}, buffer)
    buffer.seek(0)
    assert EncoderConfig.from_dict(torch.load(buffer, weights_only=True)["config"]) == config
    assert EncoderConfig() == EncoderConfig.preset(28)
    for resolution in (28, 32):
        encoder = FunctionEncoder(EncoderConfig.preset(resolution))
        assert 0.3e6 < encoder.num_parameters() < 0.45e6
        assert math.isclose(encoder.config.radius * resolution, 5.0)
    assert repr(FunctionEncoder(EncoderConfig())).startswith(
        "FunctionEncoder(1, latent_dim=64, ")
    with pytest.raises(ValueError, match="resolution 64"):
        EncoderConfig.preset(64)
    with pytest.raises(ValueError, match="Unknown"):
        EncoderConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="latent_dim"):
        EncoderConfig(latent_dim=0)
    with pytest.raises(ValueError, match="radius"):
        EncoderConfig(radius=1.5)
    with pytest.raises(ValueError, match="attention_levels"):
        EncoderConfig(attention_levels=(3,))
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="x of shape"):
        encoder(torch.randn(10, 3), torch.rand(10, 2))
    with pytest.raises(ValueError, match="pos of shape"):
        encoder(torch.randn(10, 2), torch.rand(10, 3))


def test_gradients_reach_every_parameter():
    encoder = tiny_encoder()
    redraw_zero_layers(encoder, generator=torch.Generator().manual_seed(0))  # as if trained
    encoder.train()
    pos = torch.rand(80, 2, generator=torch.Generator().manual_seed(0))
    x = random_smooth_function(2, 2, generator=torch.Generator().manual_seed(1))(pos)
    encoder(x, pos).square().sum().backward()
    # The conditioning weights of the blocks see a zero input (no diffusion time): only their
    # biases learn.
    missing = [name for name, p in encoder.named_parameters()
               if p.grad is None or (not bool(p.grad.any()) and "time_proj.weight" not in name)]
    assert not missing, missing
