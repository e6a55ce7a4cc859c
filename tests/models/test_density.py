import importlib.util
import math
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import pixel_to_pos, radius, radius_graph, subsample
from pyg_infdiff.models import (
    DensityReport,
    LowDensityWarning,
    UNetConfig,
    check_monte_carlo_density,
    monte_carlo_density,
)
from pyg_infdiff.models.config import SMALL_PRESET_RADIUS_PX
from pyg_infdiff.models.density import MIN_NODES_PER_BALL, ball_volume, window_moment
from pyg_infdiff.nn.kernel import bump, bump_mean
from pyg_infdiff.testing import strategies as pst

BENCH = Path(__file__).resolve().parents[2] / "bench"


def config(ndim: int, radius: float) -> UNetConfig:
    return UNetConfig(radius=radius, grid_shape=(4,) * ndim)


def test_formula_and_constants():
    assert ball_volume(1) == pytest.approx(2.0)
    assert ball_volume(2) == pytest.approx(math.pi)
    assert ball_volume(3) == pytest.approx(4 * math.pi / 3)
    for ndim in (1, 2, 3):
        assert window_moment(ndim) == pytest.approx(bump_mean(ndim), rel=1e-6)
        assert window_moment(ndim, 2) < window_moment(ndim)
    report = monte_carlo_density(UNetConfig.preset(28), 28, rate=4)
    assert isinstance(report, DensityReport) and report.resolution == (28, 28)
    (level,) = report.levels
    r = SMALL_PRESET_RADIUS_PX
    assert level.name == "operator blocks" and level.radius == pytest.approx(r / 28)
    assert level.pixels == pytest.approx(r)
    assert level.expected == pytest.approx(10.0)  # the preset's choice: pi r^2 / 4 = 10
    assert level.at_node == pytest.approx(1 + (math.pi * r**2 - 1) / 4)
    assert 1 < level.effective < level.at_node
    assert "10.00 nodes per ball" in str(report)
    assert report.nodes_per_cell == pytest.approx(1.0)  # 196 nodes on a 14 x 14 grid
    assert "1.00 nodes per grid cell" in str(report)
    # Rates and resolutions scale the count as they should; non-square lattices work.
    assert monte_carlo_density(UNetConfig.preset(28), 56, 16).levels[0].expected == \
        pytest.approx(level.expected)
    assert monte_carlo_density(UNetConfig.preset(28), (28, 56), 2).levels[0].expected == \
        pytest.approx(level.expected * 4)
    assert monte_carlo_density(UNetConfig(num_operator_blocks=0), 28, 4).levels == []


def test_argument_errors():
    with pytest.raises(ValueError, match="rate"):
        monte_carlo_density(UNetConfig(), 28, rate=0.5)
    with pytest.raises(ValueError, match="resolution"):
        monte_carlo_density(UNetConfig(), (28, 28, 28))
    with pytest.raises(ValueError, match="threshold"):
        check_monte_carlo_density(UNetConfig(), 28, 4, threshold=0)


def _interior_count(ndim, side, r, rate, method, seed, points=3000):
    gen = torch.Generator().manual_seed(seed)
    shape = (side,) * ndim
    pos = pixel_to_pos(subsample(shape, rate=rate, method=method, generator=gen), shape)
    query = r + (1 - 2 * r) * torch.rand(points, ndim, generator=gen)
    edges = radius(pos, query, r)
    counts = torch.bincount(edges[1], minlength=points).double()
    return float(counts.mean()), float(counts.std() / math.sqrt(points))


@given(ndim=pst.dims(), rate=pst.rates(1.0, 16.0), method=pst.subsample_methods(),
       seed=pst.seeds())
@settings(max_examples=10, deadline=None)
def test_expected_count_matches_radius_neighbours_of_a_subsampled_lattice(ndim, rate, method,
                                                                          seed):
    side, px = {1: (20000, 6.5), 2: (200, 3.5), 3: (40, 2.5)}[ndim]
    r = px / side
    expected = monte_carlo_density(config(ndim, r), side, rate).levels[0].expected
    mean, stderr = _interior_count(ndim, side, r, rate, method, seed)
    # Random query points on one random subset: exact in expectation. Allowed: 5 standard
    # errors of the mean over the points, plus 4 of the subset's own density (about
    # 1 / sqrt(nodes) relative).
    nodes = side**ndim / rate
    assert abs(mean - expected) < 5 * stderr + 4 * expected / math.sqrt(nodes), (mean, expected)


@pytest.mark.parametrize("ndim,side,px", [(1, 2000, 7.5), (2, 64, 5.3), (3, 24, 3.3)])
@pytest.mark.parametrize("rate", [1, 4])
def test_at_node_and_effective_counts(ndim, side, px, rate):
    # The interior nodes of a real subsampled lattice: mean degree (self-loop included) and
    # Kish's effective count with the window weights, E[sum w]^2 / E[sum w^2].
    shape, r = (side,) * ndim, px / side
    gen = torch.Generator().manual_seed(0)
    pos = pixel_to_pos(subsample(shape, rate=rate, method="uniform", generator=gen), shape,
                       dtype=torch.float64)
    src, dst = radius_graph(pos, r, loop=True)
    interior = ((pos > r) & (pos < 1 - r)).all(-1)
    w = bump((pos[src] - pos[dst]).pow(2).sum(-1) / r**2)
    degree = torch.bincount(dst, minlength=pos.size(0)).double()
    sum_w = torch.zeros(pos.size(0), dtype=torch.float64).index_add_(0, dst, w)
    sum_w2 = torch.zeros(pos.size(0), dtype=torch.float64).index_add_(0, dst, w * w)
    level = monte_carlo_density(config(ndim, r), side, rate).levels[0]
    # Lattice counts differ from the ball's volume by a few per cent at these radii.
    assert float(degree[interior].mean()) == pytest.approx(level.at_node, rel=0.06)
    effective = float(sum_w[interior].mean() ** 2 / sum_w2[interior].mean())
    assert effective == pytest.approx(level.effective, rel=0.06)


def test_warns_below_the_threshold_and_not_above():
    preset = UNetConfig.preset(28)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_monte_carlo_density(preset, 28, 8)  # 5.00 nodes: quiet
    assert report.levels[0].expected > MIN_NODES_PER_BALL
    with pytest.warns(LowDensityWarning) as caught:
        report = check_monte_carlo_density(preset, 28, 16)  # 2.50 nodes
    assert len(caught) == 1
    message = str(caught[0].message)
    for text in ("operator blocks", "2.50 nodes", "rate 16", "threshold 4",
                 "subsampling rate of at most 10", "radius of at least 0.161"):
        assert text in message, (text, message)
    assert caught[0].filename == __file__  # points at the caller (stacklevel)
    # The rate that makes the count exactly the threshold, and the radius, do not warn.
    max_rate = float(re.search(r"at most ([\d.]+)", message).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_monte_carlo_density(preset, 28, max_rate * 0.999)
        check_monte_carlo_density(UNetConfig.preset(28, radius=0.1613), 28, 16)
        check_monte_carlo_density(preset, 28, 16, threshold=2)  # a threshold of one's own
        check_monte_carlo_density(UNetConfig(num_operator_blocks=0), 28, 16)
    with pytest.warns(LowDensityWarning, match="no subsampling either"):
        check_monte_carlo_density(preset, 8, 1)  # 1.6 nodes even on the full lattice


@given(rate=st.sampled_from([1, 2, 4, 8, 16]), preset=st.sampled_from([28, 32, 64, 128, 256]))
@settings(max_examples=15, deadline=None)
def test_warning_fires_exactly_below_the_threshold(rate, preset):
    config = UNetConfig.preset(preset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = check_monte_carlo_density(config, preset, rate)
    low = report.levels[0].expected < MIN_NODES_PER_BALL
    assert len([w for w in caught if w.category is LowDensityWarning]) == int(low)


def test_bench_density_table_smoke(tmp_path):
    sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_density_table",
                                                  BENCH / "density_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    doc = tmp_path / "concepts.md"
    doc.write_text("# Concepts\n\n<!-- bench:density -->\nPLACEHOLDER\n"
                   "<!-- /bench:density -->\n\nafter\n")
    try:
        result = module.main(["--smoke", "--write", "--doc", str(doc)])
    finally:
        torch.set_num_threads(threads)
    assert [(r["preset"], r["rate"]) for r in result["rows"]] == [(28, 1), (28, 4), (32, 1),
                                                                  (32, 4)]
    for row in result["rows"]:
        assert row["measured"]["points"] == pytest.approx(row["expected"], rel=0.25)
        assert row["measured"]["nodes"] == pytest.approx(row["at_node"], rel=0.25)
    text = doc.read_text()
    assert "PLACEHOLDER" not in text and text.endswith("after\n")
    assert "| 28 (28²) | 0.1274 (3.57 px) | 40.0 / " in text
    assert "10.0 / " in text and "(default)" in text
    assert "Command: `python bench/density_table.py --smoke --write --doc" in text
    assert module.parse_args([]).doc.name == "concepts.md"
