import io

import pytest
import torch

from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig, num_parameters


def tiny_config(**overrides) -> UNetConfig:
    base = dict(
        in_channels=2, out_channels=2, operator_channels=8, radius=0.15,
        kernel_hidden_channels=8, grid_shape=(6, 6), channels=8, channel_mults=(1, 2),
        attention_levels=(1,), num_heads=2, time_embed_dim=8,
    )
    return UNetConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> MultiscaleOperatorUNet:
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(tiny_config(**overrides))
    torch.nn.init.normal_(model.proj.weight, std=0.5)  # the projection starts at zero
    for block in list(model.down_blocks) + list(model.up_blocks):
        torch.nn.init.normal_(block.lin2.weight, std=0.2)
    return model.eval()


def smooth_field(pos: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(4 * pos[:, 0]) * pos[:, 1], torch.cos(3 * pos.sum(-1))], -1)


def full_lattice_inputs(shape, num_graphs=2):
    index = LatticeIndex.full(shape, num_graphs)
    pos = index.pos()
    return smooth_field(pos), pos, index.batch, index


@pytest.mark.parametrize("shape", [(12, 12), (24, 24)])
def test_full_lattices_any_resolution(shape):
    model = tiny_model()
    x, pos, batch, index = full_lattice_inputs(shape)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        out = model(x, pos, t, batch, lattice=index)
    assert out.shape == (pos.size(0), 2)
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().max()) > 0


def test_irregular_and_subsampled_points():
    model = tiny_model()
    gen = torch.Generator().manual_seed(3)
    pos = torch.rand(150, 2, generator=gen)
    batch = torch.cat([torch.zeros(70), torch.ones(80)]).long()
    with torch.no_grad():
        out = model(smooth_field(pos), pos, torch.tensor([3, 900]), batch)
    assert out.shape == (150, 2) and bool(torch.isfinite(out).all())
    # Subsampled lattice: the model builds the radius graph; the conv picks its path.
    index = LatticeIndex.full((16, 16), 2)
    keep = torch.randperm(512, generator=gen)[:128].sort().values
    sub = LatticeIndex((16, 16), index.pixel[keep], index.batch[keep], 2)
    pos = sub.pos()
    with torch.no_grad():
        a = model(smooth_field(pos), pos, torch.tensor([3, 900]), sub.batch, lattice=sub)
        b = model(smooth_field(pos), pos, torch.tensor([3, 900]), sub.batch)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_graph_and_dense_paths_agree_through_the_model():
    model = tiny_model()
    x, pos, batch, index = full_lattice_inputs((12, 12))
    t = torch.tensor([7, 300])
    with torch.no_grad():
        dense = model(x, pos, t, batch, lattice=index)
        graph = model(x, pos, t, batch)  # radius graph + k-NN pooling, no lattice
    torch.testing.assert_close(dense, graph, atol=1e-4, rtol=1e-4)


def test_node_permutation_and_batch_composition():
    model = tiny_model()
    gen = torch.Generator().manual_seed(5)
    pos = torch.rand(120, 2, generator=gen)
    batch = torch.cat([torch.zeros(50), torch.ones(70)]).long()
    x, t = smooth_field(pos), torch.tensor([20, 700])
    with torch.no_grad():
        out = model(x, pos, t, batch)
        # Permute the nodes inside each graph (PyG batches keep graphs contiguous).
        perm = torch.cat(
            [torch.randperm(50, generator=gen), 50 + torch.randperm(70, generator=gen)]
        )
        torch.testing.assert_close(model(x[perm], pos[perm], t, batch), out[perm],
                                   atol=1e-5, rtol=1e-5)
        alone = model(x[50:], pos[50:], t[1:], None)
    torch.testing.assert_close(alone, out[50:], atol=1e-5, rtol=1e-5)


def test_zero_initialised_projection():
    model = MultiscaleOperatorUNet(tiny_config())
    x, pos, batch, index = full_lattice_inputs((12, 12))
    out = model(x, pos, torch.tensor([1, 2]), batch, lattice=index)
    assert bool((out == 0).all())
    out.sum().backward()
    assert model.proj.weight.grad is not None


@pytest.mark.parametrize("grid_shape,shape", [((8,), (32,)), ((4, 4, 4), (8, 8, 8))])
def test_other_dimensions(grid_shape, shape):
    model = tiny_model(grid_shape=grid_shape, radius=0.2, in_channels=1, out_channels=1)
    index = LatticeIndex.full(shape, 2)
    pos = index.pos()
    x = pos.sum(-1, keepdim=True)
    t = torch.tensor([1, 2])
    with torch.no_grad():
        dense = model(x, pos, t, index.batch, lattice=index)
        graph = model(x, pos, t, index.batch)
    assert dense.shape == (pos.size(0), 1)
    torch.testing.assert_close(dense, graph, atol=1e-4, rtol=1e-4)


def test_overfits_a_handful_of_images():
    torch.manual_seed(0)
    model = MultiscaleOperatorUNet(tiny_config(operator_channels=16, channels=16))
    index = LatticeIndex.full((12, 12), 4)
    pos = index.pos()
    freq = torch.arange(1, 5).float().repeat_interleave(144)[:, None]
    target = torch.cat([torch.sin(freq * 3 * pos[:, :1]), torch.cos(freq * 2 * pos[:, 1:])], -1)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        noisy = target + 0.5 * torch.randn(target.shape, generator=gen)
        t = torch.randint(0, 1000, (4,), generator=gen)
        loss = (model(noisy, pos, t, index.batch, lattice=index) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 5, (first, last)


def test_config_round_trip_and_presets():
    config = tiny_config(grid_shape=[6, 6])
    assert config.grid_shape == (6, 6) and config.ndim == 2
    data = config.to_dict()
    assert isinstance(data["grid_shape"], list)
    buffer = io.BytesIO()
    torch.save({"config": data}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["config"]
    assert UNetConfig.from_dict(loaded) == config
    for resolution in (28, 32, 64, 128, 256):
        preset = UNetConfig.preset(resolution)
        assert 3 <= preset.radius * resolution <= 3.6  # pixels of the training resolution
    small = MultiscaleOperatorUNet(UNetConfig.preset(28))
    assert 0.8e6 < num_parameters(small) < 1.6e6
    assert "parameters" in small.summary()
    assert UNetConfig.preset(64, in_channels=1).in_channels == 1
    assert UNetConfig() == UNetConfig.preset(28)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="resolution 48"):
        UNetConfig.preset(48)
    with pytest.raises(ValueError, match="Unknown"):
        UNetConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="radius"):
        tiny_config(radius=0.0)
    with pytest.raises(ValueError, match="attention_levels"):
        tiny_config(attention_levels=(2,))
    with pytest.raises(ValueError, match="num_heads"):
        tiny_config(num_heads=3)
    model = tiny_model()
    with pytest.raises(ValueError, match="x_t"):
        model(torch.randn(10, 3), torch.rand(10, 2), torch.tensor([1]))
    with pytest.raises(ValueError, match="pos"):
        model(torch.randn(10, 2), torch.rand(10, 3), torch.tensor([1]))
    with pytest.raises(ValueError, match="2 entries"):
        model(torch.randn(10, 2), torch.rand(10, 2), torch.tensor([1, 2]), torch.arange(10) // 4)


@pytest.mark.parametrize("pool", ["tent", "box", "idw"])
def test_pools_run_and_paths_agree(pool):
    model = tiny_model(pool=pool)
    assert model.pool.method == pool and f"({pool} pool)" in model.summary()
    x, pos, batch, index = full_lattice_inputs((12, 12))
    t = torch.tensor([7, 300])
    with torch.no_grad():
        dense = model(x, pos, t, batch, lattice=index)
        graph = model(x, pos, t, batch)
    assert float(dense.abs().max()) > 0
    torch.testing.assert_close(dense, graph, atol=1e-4, rtol=1e-4)


def test_tent_pool_model_converges_on_refined_lattices():
    # 3x refinements share pixel centres: the outputs there get closer as the lattice refines.
    model = tiny_model(pool="tent")
    outs = []
    for side in (12, 36, 108):
        x, pos, batch, index = full_lattice_inputs((side, side), num_graphs=1)
        with torch.no_grad():
            out = model(x, pos, torch.tensor([300]), batch, lattice=index)
        outs.append(out.view(side, side, 2))
    gaps = [float((a - b[1::3, 1::3]).norm() / b[1::3, 1::3].norm())
            for a, b in zip(outs, outs[1:])]
    assert gaps[1] < 0.5 * gaps[0], gaps


def test_config_pool_default_and_legacy_dicts():
    assert UNetConfig().pool == "tent" and UNetConfig.preset(32).pool == "tent"
    config = tiny_config(pool="box")
    assert UNetConfig.from_dict(config.to_dict()) == config
    # A dictionary saved before the field existed came from an inverse-distance model.
    legacy = tiny_config().to_dict()
    del legacy["pool"]
    assert UNetConfig.from_dict(legacy).pool == "idw"
    assert UNetConfig.from_dict(legacy) == tiny_config(pool="idw")
    with pytest.raises(ValueError, match="'pool'"):
        tiny_config(pool="nearest")


def test_old_checkpoint_loads_with_its_inverse_distance_pool(tmp_path):
    from pyg_infdiff.diffusion import MollifiedDiffusion
    from pyg_infdiff.noise import MollifiedNoise
    from pyg_infdiff.training import CheckpointManager, load_pretrained, run_config

    old = tiny_model(pool="idw")  # what every checkpoint before the 'pool' field holds
    info = run_config(old.config, MollifiedDiffusion(MollifiedNoise(1 / 24, 2)), resolution=12)
    del info["unet"]["pool"]
    CheckpointManager(tmp_path).save({"model": old.state_dict(), "step": 3,
                                      "model_config": info}, 3)
    loaded = load_pretrained(tmp_path, weights="model")
    assert loaded.config.pool == "idw" and loaded.model.pool.method == "idw"
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(90, 2, generator=gen)
    x, t = smooth_field(pos), torch.tensor([250])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, pos, t), old(x, pos, t))
        # the same weights with the new default pool give other numbers
        new = MultiscaleOperatorUNet(tiny_config())
        new.load_state_dict(old.state_dict())
        assert not torch.allclose(new.eval()(x, pos, t), old(x, pos, t))
