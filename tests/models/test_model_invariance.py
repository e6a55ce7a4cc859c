"""Property tests of the whole MultiscaleOperatorUNet across discretisations (issue 12, item 4).

With random weights and every zero-initialised layer re-drawn (the head included, so the model
says something), the model's output on one smooth input function must

* converge as a full lattice refines: read at shared pixel centres (3x refinements such as
  28 -> 84 -> 252 share the centres of the coarsest lattice), the relative change between
  consecutive resolutions falls, checked with the public
  :func:`pyg_infdiff.testing.assert_discretization_invariant`; 2x refinements (28 -> 56 -> 112)
  likewise after average pooling onto the coarsest lattice;
* agree, on subsampled training graphs, with the full lattice in expectation: averaged over many
  random subsets (every pixel covered about 16 times), the output at each pixel is much closer
  to the full lattice's than that of a single subset (what remains is the bias of a nonlinear
  model fed Monte-Carlo estimates, which shrinks with the density);
* compute the same outside 2-D on subsampled lattices, with or without the lattice index.

Hypothesis draws the configuration (the small presets 28 and 32, and small 1-D and 3-D models),
the seeds of weights and input, the time step, the subsampling method and rate (up to where the
kernel balls still hold ``MIN_NODES_PER_BALL`` nodes). The model is called through
:func:`pyg_infdiff.diffusion.call_denoiser`, as training and sampling call it, so the tests hold
for any pooling the model uses. The ``test_real_input_*`` tests check the issue's targets on
the model's real input (a mollified noise field), on the mean over fixed seeds.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.diffusion import call_denoiser
from pyg_infdiff.graph import LatticeIndex, knn, lattice, subsample
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig, monte_carlo_density
from pyg_infdiff.models.density import MIN_NODES_PER_BALL
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.testing import (
    assert_discretization_invariant,
    random_smooth_function,
    redraw_zero_layers,
)
from pyg_infdiff.testing import strategies as pst

# Small models of every dimension: (config, coarsest lattice side, refinement factor).
# 3x refinements of an odd multiple of the grid share pixel centres with the coarsest lattice.
CONFIGS = {
    "preset28": lambda: UNetConfig.preset(28),
    "preset32": lambda: UNetConfig.preset(32),
    "1d": lambda: UNetConfig(
        in_channels=2, out_channels=2, operator_channels=16, radius=4 / 32,
        kernel_hidden_channels=16, grid_shape=(16,), channels=16, channel_mults=(1, 2),
        attention_levels=(1,), num_heads=2, time_embed_dim=16,
    ),
    "3d": lambda: UNetConfig(
        in_channels=1, out_channels=1, operator_channels=8, radius=2.5 / 8,
        kernel_hidden_channels=8, grid_shape=(4, 4, 4), channels=8, channel_mults=(1, 2),
        attention_levels=(1,), num_heads=2, time_embed_dim=8,
    ),
}
# The full-lattice ladders: 3x refinements from the training resolution (odd multiples of the
# grid, pixel centres shared with the coarsest lattice); the 3-D one of the default suite starts
# at the grid, the slow suite's at the training resolution.
LADDERS = {"preset28": [28, 84, 252], "preset32": [32, 96, 288], "1d": [32, 96, 288],
           "3d": [4, 12, 36]}
SLOW_LADDERS = {**LADDERS, "3d": [8, 24, 72]}
# The training resolution of each model, for the subsampling test.
TRAINING_SIDE = {"preset28": 28, "preset32": 32, "1d": 64, "3d": 12}


def speaking_model(name: str, seed: int) -> MultiscaleOperatorUNet:
    """The model of configuration ``name`` with random weights, every zero-initialised layer
    re-drawn (the head, the last layers of the residual branches)."""
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(CONFIGS[name]())
    redrawn = redraw_zero_layers(model, generator=torch.Generator().manual_seed(seed))
    assert "proj" in redrawn
    return model.eval()


def lattice_fn(model: MultiscaleOperatorUNet, step: int):
    """``fn(x, pos, batch, query)`` for the checker: the model on the full lattice that ``pos``
    holds, read at the query points (which must be nodes: shared pixel centres)."""
    ndim = model.config.ndim

    def fn(x, pos, batch, query):
        side = round(pos.size(0) ** (1 / ndim))
        index = LatticeIndex.full((side,) * ndim, 1)
        assert torch.equal(index.pos(), pos)
        t = torch.full((1,), step, dtype=torch.long)
        out = call_denoiser(model, x, pos, t, batch, lattice=index)
        src, dst = knn(pos, query, 1)
        assert float((pos[src] - query[dst]).abs().max()) < 1e-6, "query points are not nodes"
        return out[src[torch.argsort(dst)]]

    return fn


def full_lattice_errors(name: str, seed: int, step: int, ladder: list[int]) -> list[float]:
    model = speaking_model(name, seed)
    config = model.config
    f = random_smooth_function(config.ndim, config.in_channels, max_freq=2,
                               generator=torch.Generator().manual_seed(seed + 1))
    query = lattice((ladder[0],) * config.ndim)  # shared by every lattice of the ladder
    report = assert_discretization_invariant(
        lattice_fn(model, step), f, resolutions=ladder, query_points=query, rtol=1.0,
        require_convergence=True,
    )
    return report.errors


@given(name=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**16),
       step=st.integers(0, 999))
@settings(max_examples=10, deadline=None)
def test_full_lattices_converge(name, seed, step):
    errors = full_lattice_errors(name, seed, step, LADDERS[name])
    assert errors[1] < errors[0], errors  # the error falls with the resolution
    assert errors[1] < 0.06, errors


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_full_lattices_converge_more_seeds(name, seed):
    errors = full_lattice_errors(name, seed, 100 + 250 * seed, SLOW_LADDERS[name])
    assert errors[1] < errors[0] and errors[1] < 0.06, errors


@pytest.mark.parametrize("name,ladder", [("preset28", [28, 56, 112]), ("preset32", [32, 64, 128])])
def test_twofold_refinements_converge_after_average_pooling(name, ladder):
    # 28² -> 56² -> 112² share no pixel centres: compare the outputs average-pooled onto the
    # coarsest lattice (a per-graph summary of fixed shape for the checker).
    model = speaking_model(name, 0)
    config = model.config
    pool = torch.nn.functional.avg_pool2d

    def pooled(x, pos, batch):
        side = round(math.sqrt(pos.size(0)))
        index = LatticeIndex.full((side, side), 1)
        out = call_denoiser(model, x, pos, torch.tensor([300]), batch, lattice=index)
        image = out.t().reshape(1, -1, side, side)
        return pool(image, side // ladder[0]).reshape(-1, config.out_channels)

    f = random_smooth_function(2, config.in_channels, max_freq=2,
                               generator=torch.Generator().manual_seed(1))
    report = assert_discretization_invariant(pooled, f, resolutions=ladder, ndim=2, rtol=0.5,
                                             require_convergence=True)
    assert report.errors[1] < report.errors[0] and report.errors[1] < 0.05, report.errors


def real_input_errors(seed: int, resolutions: list[int]) -> list[float]:
    """The issue's protocol for one seed of weights and input: preset 32, random weights with
    only the head re-drawn, t = 300, one mollified noise field (3 channels, sigma half a training
    pixel) on full lattices of :obj:`resolutions` (3x refinements), compared at the 32² pixel
    centres by the public checker. Returns its relative errors."""
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(UNetConfig.preset(32)).eval()
    model.proj.reset_parameters()
    field = MollifiedNoise(0.5 / 32, 2).draw(1, 3, torch.Generator().manual_seed(seed))

    def f(pos):
        return field.evaluate(pos.float(), torch.zeros(pos.size(0), dtype=torch.long))

    report = assert_discretization_invariant(
        lattice_fn(model, 300), f, resolutions=resolutions, query_points=lattice((32, 32)),
        rtol=0.2,
    )
    return report.errors


def test_real_input_meets_the_issue_12_target_at_the_training_resolution():
    # Target: <= 5% between 32² and 96². One seed's error varies with its weights and field
    # (1.8% to 6.5% over seeds 0-15 at the preset radius; bench/model_consistency.py), so the
    # target is on the mean over 8 fixed seeds (3.7% here; 5.9% with the former 2.5 pixels).
    errors = [real_input_errors(seed, [32, 96])[0] for seed in range(8)]
    assert sum(errors) / len(errors) <= 0.05, errors


def test_real_input_meets_the_issue_12_target_between_finer_lattices():
    # Target: <= 0.5% between 96² and 288² (0.17% on average over seeds 0-15).
    for seed in range(2):
        errors = real_input_errors(seed, [32, 96, 288])
        assert errors[1] < errors[0] and errors[1] <= 0.005, errors


def subset_average(name: str, seed: int, step: int, rate: float, method: str,
                   covers: int) -> dict[str, float]:
    """The model on the full training lattice and on enough random subsets (one batch of
    graphs) that every pixel is covered about ``covers`` times; relative errors of single subsets
    and of the average over subsets, against the full lattice, at the pixels covered at least
    ``covers // 2`` times."""
    model = speaking_model(name, seed)
    config = model.config
    shape = (TRAINING_SIDE[name],) * config.ndim
    f = random_smooth_function(config.ndim, config.in_channels, max_freq=2,
                               generator=torch.Generator().manual_seed(seed + 1))
    num_pixels = math.prod(shape)
    values = f(lattice(shape))
    with torch.no_grad():
        full = LatticeIndex.full(shape, 1)
        reference = call_denoiser(model, values, full.pos(), torch.tensor([step]), full.batch,
                                  lattice=full)
        num_graphs = math.ceil(covers * rate)
        gen = torch.Generator().manual_seed(seed + 2)
        pixels = [subsample(shape, rate=rate, method=method, generator=gen)
                  for _ in range(num_graphs)]
        pixel = torch.cat(pixels)
        batch = torch.cat([torch.full_like(p, k) for k, p in enumerate(pixels)])
        index = LatticeIndex(shape, pixel, batch, num_graphs)
        t = torch.full((num_graphs,), step, dtype=torch.long)
        out = call_denoiser(model, values[pixel], index.pos(), t, batch, lattice=index)
    total = torch.zeros_like(reference).index_add_(0, pixel, out)
    count = torch.bincount(pixel, minlength=num_pixels)
    keep = count >= max(covers // 2, 1)
    mean = total[keep] / count[keep, None]
    scale = float(reference[keep].norm())
    single = [float((out[batch == k] - reference[pixels[k]]).norm()
                    / reference[pixels[k]].norm()) for k in range(num_graphs)]
    return dict(single=sum(single) / len(single),
                mean=float((mean - reference[keep]).norm()) / scale,
                covered=float(keep.double().mean()))


@given(name=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**16),
       step=st.integers(0, 999), data=st.data())
@settings(max_examples=10, deadline=None)
def test_subsampled_graphs_agree_with_the_full_lattice_in_expectation(name, seed, step, data):
    # Rates from 2 up to where the kernel balls still hold MIN_NODES_PER_BALL nodes (at most 8).
    config = CONFIGS[name]()
    level = monte_carlo_density(config, TRAINING_SIDE[name]).levels[0]
    rate = data.draw(pst.rates(2.0, min(8.0, level.expected / MIN_NODES_PER_BALL)), "rate")
    # In 1-D, Halton subsets are regular sublattices with a random offset (the first 2^k
    # van der Corput points are a grid): every pixel has one value, nothing to average.
    methods = ["uniform", "stratified"] if config.ndim == 1 else list(pst.SubsampleMethods)
    method = data.draw(st.sampled_from(methods), "method")
    result = subset_average(name, seed, step, rate, method, covers=16)
    assert result["covered"] > 0.9, result
    # Averaging over subsets removes most of the difference: it is mostly zero-mean noise.
    assert result["mean"] < 0.75 * result["single"], result
    assert result["mean"] < 0.25, result


def test_the_checker_refuses_the_untrained_model():
    torch.manual_seed(0)
    model = MultiscaleOperatorUNet(CONFIGS["preset28"]()).eval()  # zero-initialised head
    f = random_smooth_function(2, 1, max_freq=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="all zero.*re-initialise"):
        assert_discretization_invariant(lattice_fn(model, 100), f, resolutions=[14, 42],
                                        query_points=lattice((14, 14)))


@pytest.mark.parametrize("name", ["1d", "3d"])
def test_subsampled_lattices_and_point_clouds_agree_outside_2d(name):
    # The model outside 2-D on subsampled lattices: with the lattice index (dense paths where
    # they pay) and as bare point clouds (radius graph, neighbour search) it computes the same.
    model = speaking_model(name, 0)
    config = model.config
    shape = (TRAINING_SIDE[name],) * config.ndim
    gen = torch.Generator().manual_seed(0)
    pixels = [subsample(shape, rate=3, method="stratified", generator=gen) for _ in range(2)]
    pixel = torch.cat(pixels)
    batch = torch.cat([torch.full_like(p, k) for k, p in enumerate(pixels)])
    index = LatticeIndex(shape, pixel, batch, 2)
    pos = index.pos()
    f = random_smooth_function(config.ndim, config.in_channels, generator=gen)
    t = torch.tensor([10, 800])
    with torch.no_grad():
        on_lattice = call_denoiser(model, f(pos), pos, t, batch, lattice=index)
        points = call_denoiser(model, f(pos), pos, t, batch)
    assert on_lattice.shape == (pixel.numel(), config.out_channels)
    assert float(on_lattice.abs().max()) > 0
    torch.testing.assert_close(on_lattice, points, atol=1e-4, rtol=1e-4)
