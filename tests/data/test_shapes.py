import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from pyg_infdiff.data import (
    DEFAULT_SHAPES_CONFIG,
    SHAPE_KINDS,
    ContinuousImage,
    ContinuousShapes,
    ShapesConfig,
    item_seed,
    render_function,
)
from pyg_infdiff.data.render import Disc, Ellipse, Layer, Polygon, Rectangle, Stripes
from pyg_infdiff.graph import lattice

ROOT = Path(__file__).resolve().parents[2]


def pixel_centres(f: ContinuousImage, n: int) -> torch.Tensor:
    return f.evaluate(lattice((n, n))).t().reshape(f.channels, n, n)


@settings(max_examples=12, deadline=None)
@given(
    index=st.integers(0, 10_000),
    n=st.sampled_from([8, 12, 16, 24]),
    s=st.integers(1, 3),
    channels=st.sampled_from([1, 3]),
)
def test_double_render_pooled_equals_render_with_nested_supersampling(index, n, s, channels):
    config = ShapesConfig(channels=channels)
    f = ContinuousShapes(10_001, config=config, seed=3).function(index)
    pooled = F.avg_pool2d(f.render(2 * n, s)[None], 2)[0]
    torch.testing.assert_close(pooled, f.render(n, 2 * s), atol=1e-6, rtol=0)


@pytest.mark.parametrize("edge_width", [0.0, 0.01, 0.05])
def test_double_render_pooled_close_to_render(edge_width):
    dataset = ContinuousShapes(4, 32, ShapesConfig(edge_width=edge_width), seed=1)
    for i in range(len(dataset)):
        f = dataset.function(i)
        err = (F.avg_pool2d(f.render(64)[None], 2)[0] - dataset[i]).abs()
        # Both estimate the same pixel areas (16 vs 64 midpoint samples per pixel); hard edges
        # between colours up to 2 apart make whole samples flip, smooth ones do not.
        mean_bound, max_bound = {0.0: (6e-3, 0.3), 0.01: (1.5e-3, 0.05), 0.05: (1e-3, 0.015)}[
            edge_width
        ]
        assert err.mean() < mean_bound and err.max() < max_bound, (i, err.mean(), err.max())


@settings(max_examples=8, deadline=None)
@given(index=st.integers(0, 1000), n=st.sampled_from([5, 16, 33]))
@example(index=197, n=16)  # float32: the paths round coordinates differently, values by 1e-6
def test_supersample_one_is_point_evaluation_at_pixel_centres(index, n):
    f = ContinuousShapes(1001, seed=7).function(index)
    torch.testing.assert_close(f.render(n, supersample=1), pixel_centres(f, n), atol=1e-5, rtol=0)
    # The grid fast path of render() and the generic pointwise renderer agree.
    generic = render_function(f.evaluate, n, supersample=2)
    torch.testing.assert_close(f.render(n, supersample=2), generic, atol=1e-5, rtol=0)


def test_smooth_edges_render_converges_to_pixel_centre_values():
    # Area average minus centre value is O(h^2) where the function is smooth (the mean error);
    # kinks of the distance fields inside corners leave an O(h) maximum.
    dataset = ContinuousShapes(3, config=ShapesConfig(edge_width=0.1), seed=2)
    for i in range(len(dataset)):
        f = dataset.function(i)
        coarse, fine = ((f.render(n) - pixel_centres(f, n)).abs() for n in (32, 64))
        assert fine.mean() < 1.5e-3 and fine.max() < 0.08, (fine.mean(), fine.max())
        assert fine.mean() < 0.35 * coarse.mean()


def test_evaluate_at_random_points_interpolates_fine_render():
    f = ContinuousShapes(1, config=ShapesConfig(edge_width=0.1), seed=4).function(0)
    pos = torch.rand(500, 2, generator=torch.Generator().manual_seed(0))
    fine = f.render(256, supersample=1)  # pixel-centre values, bilinear between them
    grid = (pos.flip(-1) * 2 - 1)[None, None]  # grid_sample wants (x=col, y=row)
    interp = F.grid_sample(fine[None], grid, align_corners=False, padding_mode="border")
    err = (interp[0, :, 0].t() - f.evaluate(pos)).abs()
    assert err.mean() < 2e-3 and err.max() < 0.05, (err.mean(), err.max())


def test_evaluate_at_random_points_with_the_default_sharp_edges():
    # The default edges are 0.01 wide, ~5 pixels of a 512² render: bilinear interpolation of
    # pixel-centre values there still agrees with pointwise evaluation almost everywhere.
    dataset = ContinuousShapes(3, seed=4)
    assert dataset.config.edge_width == 0.01
    for i in range(len(dataset)):
        f = dataset.function(i)
        pos = torch.rand(2000, 2, generator=torch.Generator().manual_seed(i))
        fine = f.render(512, supersample=1)
        grid = (pos.flip(-1) * 2 - 1)[None, None]
        interp = F.grid_sample(fine[None], grid, align_corners=False, padding_mode="border")
        err = (interp[0, :, 0].t() - f.evaluate(pos)).abs()
        assert err.mean() < 2e-3 and (err > 0.05).float().mean() < 0.005, (i, err.mean())


def test_evaluate_is_pointwise():
    f = ContinuousShapes(1, seed=5).function(0)
    pos = torch.rand(300, 2, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(2))
    whole = f.evaluate(pos)
    torch.testing.assert_close(f.evaluate(pos[perm]), whole[perm], atol=1e-6, rtol=0)
    torch.testing.assert_close(f.evaluate(pos[:7]), whole[:7], atol=1e-6, rtol=0)
    # Chunked rendering gives the same pixels.
    torch.testing.assert_close(f.render(20, 3, chunk_size=50), f.render(20, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("edge_width", [0.0, 0.02])
def test_items_shape_dtype_and_range(channels, edge_width):
    config = ShapesConfig(channels=channels, edge_width=edge_width, num_shapes=(4, 6))
    dataset = ContinuousShapes(20, 16, config, seed=11)
    images = torch.stack([dataset[i] for i in range(len(dataset))])
    assert images.shape == (20, channels, 16, 16) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.1  # not constant
    pos = torch.rand(1000, 2, generator=torch.Generator().manual_seed(3))
    values = dataset.function(3).evaluate(pos)
    assert values.shape == (1000, channels) and values.abs().max() <= 1


def test_render_any_resolution_and_rectangles():
    f = ContinuousShapes(1).function(0)
    assert f.render(7).shape == (3, 7, 7)
    assert f.render((6, 10), supersample=2).shape == (3, 6, 10)
    # A non-square render's pixels average the same function.
    torch.testing.assert_close(
        F.avg_pool2d(f.render((12, 20), 2)[None], 2)[0], f.render((6, 10), 4), atol=1e-6, rtol=0
    )


def test_determinism_and_independence_of_items():
    a = ContinuousShapes(10, 16, seed=0)
    b = ContinuousShapes(1000, 16, seed=0)
    c = ContinuousShapes(10, 16, seed=1)
    for i in range(10):
        assert torch.equal(a[i], b[i])
        assert torch.equal(a[i], a[i - 10])  # negative indices
        assert not torch.equal(a[i], c[i])
    assert not torch.equal(a[0], a[1])
    assert a.function(2) == b.function(2) and a.function(2) != c.function(2)
    # The hash is stable across sessions and platforms (pins the dataset).
    assert item_seed(0, 0) == item_seed(0, 0) and item_seed(0, 1) != item_seed(1, 0)
    assert item_seed(0, 0) == 1080564396625874389


def test_same_items_in_dataloader_workers():
    dataset = ContinuousShapes(12, 16, seed=9)
    expected = torch.stack([dataset[i] for i in range(12)])
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), expected)


def test_same_items_in_another_process():
    code = (
        "import torch; from pyg_infdiff.data import ContinuousShapes;"
        "d = ContinuousShapes(5, 16, seed=9);"
        "print(repr(torch.stack([d[i] for i in range(5)]).double().sum().item()));"
        "print(repr(d.function(4).evaluate(torch.tensor([[0.3, 0.7]])).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    d = ContinuousShapes(5, 16, seed=9)
    assert float(out[0]) == torch.stack([d[i] for i in range(5)]).double().sum().item()
    assert eval(out[1]) == d.function(4).evaluate(torch.tensor([[0.3, 0.7]])).tolist()


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_every_kind_is_drawn_and_painted(kind):
    config = ShapesConfig(kinds=(kind,), num_shapes=(1, 1), opacity=(1.0, 1.0), edge_width=0.0)
    f = ContinuousShapes(1, config=config, seed=0).function(0)
    assert len(f.layers) == 1 and type(f.layers[0].shape).__name__.lower() in (kind, "rectangle")
    centre = torch.tensor([f.layers[0].shape.center])
    if kind != "stripes":  # a stripe may miss the centre
        torch.testing.assert_close(f.evaluate(centre)[0], torch.tensor(f.layers[0].colour).float())


def test_signed_distances():
    pos = torch.rand(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    disc = Disc((0.5, 0.4), 0.2)
    assert torch.allclose(disc.sdf(pos), (pos - torch.tensor([0.5, 0.4])).norm(dim=-1) - 0.2)
    box = Rectangle((0.5, 0.5), (0.2, 0.1), 0.0)
    probe = torch.tensor([[0.5, 0.5], [0.5, 0.55], [0.8, 0.5], [0.8, 0.7]], dtype=torch.float64)
    expected = torch.tensor([-0.1, -0.05, 0.1, math.hypot(0.1, 0.1)], dtype=torch.float64)
    assert torch.allclose(box.sdf(probe), expected)
    # A square polygon (4 sides, vertex at angle pi/4) is an axis-aligned square.
    square = Polygon((0.5, 0.5), 0.2 * math.sqrt(2), 4, math.pi / 4)
    assert torch.allclose(square.sdf(pos), Rectangle((0.5, 0.5), (0.2, 0.2), 0.0).sdf(pos))
    # Ellipse boundary points have distance 0; sign inside/outside.
    t = torch.linspace(0, 2 * math.pi, 50, dtype=torch.float64)
    ell = Ellipse((0.5, 0.5), (0.3, 0.1), 0.0)
    rim = torch.stack([0.5 + 0.3 * t.cos(), 0.5 + 0.1 * t.sin()], dim=-1)
    assert ell.sdf(rim).abs().max() < 1e-9
    assert ell.sdf(torch.tensor([[0.5, 0.5]], dtype=torch.float64)).item() == -0.1
    stripes = Stripes((0.5, 0.5), 0.3, 0.1, 0.5, 0.0)
    assert stripes.sdf(torch.tensor([[0.5, 0.5], [0.55, 0.5]], dtype=torch.float64))[0] < 0
    assert stripes.sdf(torch.tensor([[0.55, 0.5]], dtype=torch.float64))[0] > 0
    # Exact distances: beyond bound() from the centre, sd >= distance - bound (so culling
    # points farther than bound + w / 2 changes nothing).
    far = torch.rand(4000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    far = far * 2 - 0.5
    thin = Ellipse((0.5, 0.5), (0.3, 0.05), 0.4)
    for shape in (disc, box, square, ell, thin, stripes, Polygon((0.4, 0.5), 0.2, 3, 0.1)):
        dist = (far - torch.tensor(shape.center, dtype=torch.float64)).norm(dim=-1)
        outside = dist > shape.bound()
        assert (shape.sdf(far)[outside] >= dist[outside] - shape.bound() - 1e-9).all()
    # The ellipse distance against a dense sampling of its boundary.
    t = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)
    q = far[:500]
    rim = torch.stack([0.5 + 0.3 * t.cos(), 0.5 + 0.09 * t.sin()], dim=-1)
    dense = torch.cdist(q, rim).min(dim=-1).values
    sdf = Ellipse((0.5, 0.5), (0.3, 0.09), 0.0).sdf(q)
    torch.testing.assert_close(sdf.abs(), dense, atol=1e-6, rtol=0)


def test_composition_of_a_hand_made_image():
    f = ContinuousImage(
        mean=(0.0,),
        background=torch.zeros(1, 1, 1),
        layers=(Layer(Disc((0.5, 0.5), 0.25), (1.0,), 0.5),),
        edge_width=0.0,
    )
    values = f.evaluate(torch.tensor([[0.5, 0.5], [0.05, 0.05]]))
    assert values.view(-1).tolist() == [0.5, 0.0]
    image = render_function(f.evaluate, 4, supersample=8)
    assert image.shape == (1, 4, 4)
    assert abs(image.mean().item() - 0.5 * math.pi * 0.25**2) < 0.01  # area of the disc


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": 2},
        {"num_shapes": (3, 2)},
        {"num_shapes": (-1, 2)},
        {"kinds": ()},
        {"kinds": ("star",)},
        {"size": (0.3, 0.1)},
        {"size": (0.0, 0.1)},
        {"edge_width": -0.1},
        {"edge_width": float("nan")},
        {"opacity": (0.5, 1.5)},
        {"background_freq": -1},
        {"background_amplitude": 1.0},
        {"stripe_period": (0.0, 0.1)},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError, match=list(kwargs)[0]):
        ShapesConfig(**kwargs)


def test_dataset_validation():
    with pytest.raises(ValueError, match="num_items"):
        ContinuousShapes(0)
    with pytest.raises(ValueError, match="resolution"):
        ContinuousShapes(4, resolution=0)
    with pytest.raises(ValueError, match="supersample"):
        ContinuousShapes(4, supersample=0)
    with pytest.raises(IndexError):
        ContinuousShapes(4)[4]
    with pytest.raises(ValueError, match="supersample"):
        ContinuousShapes(4).function(0).render(8, supersample=0)
    with pytest.raises(ValueError, match="pos"):
        ContinuousShapes(4).function(0).evaluate(torch.rand(5, 3))
    assert DEFAULT_SHAPES_CONFIG == ShapesConfig()
    assert "ContinuousShapes(4" in repr(ContinuousShapes(4))


def test_simple_config():
    from pyg_infdiff.data import ContinuousShapes, ShapesConfig
    config = ShapesConfig.simple()
    assert config.num_shapes == (1, 3) and "stripes" not in config.kinds
    assert config.background_freq == 0 and config.opacity == (1.0, 1.0)
    assert ShapesConfig.simple(channels=1).channels == 1
    data = ContinuousShapes(4, resolution=32, seed=0, config=config)
    image = data.render(0, 32)
    assert image.shape == (3, 32, 32) and image.abs().max() <= 1
    # flat shapes on a flat background: a handful of colours cover almost every pixel
    colours = image.reshape(3, -1).t().mul(100).round()
    _, counts = colours.unique(dim=0, return_counts=True)
    assert counts.sort(descending=True).values[:4].sum() > 0.8 * colours.size(0)


def test_demo_config_palette_and_background():
    from pyg_infdiff.data import DEMO_PALETTE, ContinuousShapes, ShapesConfig
    config = ShapesConfig.demo()
    assert config.palette == DEMO_PALETTE and config.background_colour == (0.8, 0.8, 0.8)
    # the geometry is simple()'s: only the colours differ
    assert config.kinds == ShapesConfig.simple().kinds
    assert config.num_shapes == ShapesConfig.simple().num_shapes
    data = ContinuousShapes(16, resolution=32, seed=3, config=config)
    for index in range(16):
        image = data.function(index)
        assert image.mean == (0.8, 0.8, 0.8)
        assert all(layer.colour in DEMO_PALETTE for layer in image.layers)
    # a corner of the background is the background colour
    renders = torch.stack([data.render(i, 64) for i in range(16)])
    background = renders.flatten(2).mode(dim=2).values  # [16, 3]: the commonest value
    assert torch.allclose(background.median(dim=0).values, torch.full((3,), 0.8), atol=1e-4)
    used = {layer.colour for i in range(16) for layer in data.function(i).layers}
    assert len(used) >= 3  # colours are drawn from the whole palette
    grey = ShapesConfig.demo(channels=1)
    assert grey.channels == 1 and all(len(c) == 1 for c in grey.palette)
    assert ContinuousShapes(2, 16, grey).render(0).shape == (1, 16, 16)


def test_palette_options_leave_other_configs_unchanged():
    from pyg_infdiff.data import ContinuousShapes, ShapesConfig
    # configurations without palette or background colour draw exactly as before: the
    # simple() dataset with its random colours is not a palette dataset
    simple = ContinuousShapes(4, 32, ShapesConfig.simple(), seed=0).function(0)
    demo = ContinuousShapes(4, 32, ShapesConfig.demo(), seed=0).function(0)
    assert simple.mean != demo.mean
    with pytest.raises(ValueError, match="palette"):
        ShapesConfig(palette=())
    with pytest.raises(ValueError, match="palette"):
        ShapesConfig(palette=((0.0, 0.0),))  # two values for three channels
    with pytest.raises(ValueError, match="palette"):
        ShapesConfig(palette=((1.5, 0.0, 0.0),))
    with pytest.raises(ValueError, match="background_colour"):
        ShapesConfig(background_colour=(0.8, 0.8, 0.8))  # beyond 1 - amplitude 0.4
    assert ShapesConfig(background_amplitude=0.0, background_colour=(0.8,) * 3)


@pytest.mark.parametrize("name", ["demo", "simple", "full"])
def test_named_configs(name):
    from pyg_infdiff.data import SHAPES_NAMES, ShapesConfig
    assert name in SHAPES_NAMES
    expected = {"demo": ShapesConfig.demo(), "simple": ShapesConfig.simple(),
                "full": ShapesConfig()}[name]
    assert ShapesConfig.named(name) == expected
    assert ShapesConfig.named(name, channels=1).channels == 1


def test_named_config_unknown():
    from pyg_infdiff.data import ShapesConfig
    with pytest.raises(ValueError, match="Unknown shapes configuration 'toy'"):
        ShapesConfig.named("toy")
