"""Conditioning threaded through training and sampling, and the use cases of a diffusion
autoencoder (issue 15): reconstruction and latent interpolation, on tiny random-weight models
(shapes, finiteness, determinism; not quality)."""
from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from pyg_infdiff.diffusion import (
    AutoencoderLoss,
    LossAwareTimestepSampler,
    MollifiedDiffusion,
    call_denoiser,
    encoder_inputs,
    interpolate,
    reconstruct,
    sample,
    slerp,
)
from pyg_infdiff.graph import LatticeIndex, lattice
from pyg_infdiff.models import DiffusionAutoencoder, EncoderConfig, UNetConfig
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.testing import redraw_zero_layers


def tiny_autoencoder(seed: int = 0) -> DiffusionAutoencoder:
    torch.manual_seed(seed)
    encoder = EncoderConfig(in_channels=1, latent_dim=6, operator_channels=8, radius=0.2,
                            kernel_num_basis=4, kernel_hidden_channels=8, grid_shape=(6, 6),
                            channels=8, channel_mults=(1, 2), num_heads=2)
    unet = UNetConfig(in_channels=1, out_channels=1, operator_channels=8, radius=0.15,
                      kernel_hidden_channels=8, grid_shape=(6, 6), channels=8,
                      channel_mults=(1, 2), attention_levels=(1,), num_heads=2,
                      time_embed_dim=8, cond_dim=6)
    model = DiffusionAutoencoder(encoder, unet)
    redraw_zero_layers(model, gain=0.5, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def diffusion() -> MollifiedDiffusion:
    return MollifiedDiffusion(MollifiedNoise(1 / 12, 2))


def image_points(side: int = 12, keep: int | None = None):
    pos = lattice((side, side))
    x = torch.tanh(torch.sin(6 * pos[:, :1]) + pos[:, 1:])
    if keep is not None:
        index = torch.randperm(pos.size(0), generator=torch.Generator().manual_seed(0))[:keep]
        return x[index], pos[index]
    return x, pos


def test_call_denoiser_passes_model_kwargs():
    seen = {}

    def model(x_t, pos, t, batch, edge_index=None, lattice=None, cond=None):
        seen.update(lattice=lattice, cond=cond)
        return x_t

    index = LatticeIndex.full((4, 4))
    x = torch.randn(16, 1)
    z = torch.ones(1, 3)
    call_denoiser(model, x, index.pos(), torch.tensor([3]), index.batch, lattice=index,
                  model_kwargs={"cond": z})
    assert seen["cond"] is z and seen["lattice"] is index
    call_denoiser(model, x, index.pos(), torch.tensor([3]), index.batch)
    assert seen["cond"] is None and seen["lattice"] is None


def test_training_through_the_condition_reaches_the_encoder():
    # The official scheme: the encoder reads its own random subset of each image's pixels, the
    # denoiser is trained on another, conditioned on z; the loss trains both.
    model = tiny_autoencoder()
    model.train()
    gen = torch.Generator().manual_seed(0)
    index = LatticeIndex.full((12, 12), 2)
    values = torch.randn(2 * 144, 1, generator=gen).tanh()
    graphs, encoded = [], []
    for b in range(2):
        rows = torch.arange(144) + 144 * b
        train_px = torch.randperm(144, generator=gen)[:36]
        enc_px = torch.randperm(144, generator=gen)[:36]
        graphs.append(Data(x=values[rows[train_px]], pos=index.pos()[train_px]))
        encoded.append((values[rows[enc_px]], index.pos()[enc_px]))
    batch = Batch.from_data_list(graphs)
    x_enc = torch.cat([x for x, _ in encoded])
    pos_enc = torch.cat([p for _, p in encoded])
    batch_enc = torch.arange(2).repeat_interleave(36)
    z = model.encode(x_enc, pos_enc, batch_enc)
    loss = diffusion().training_loss(model, batch, generator=gen, model_kwargs={"cond": z})
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and any(bool(g.any()) for g in grads)
    # without the condition, a conditioned model refuses to run
    with pytest.raises(ValueError, match="cond"):
        diffusion().training_loss(model, batch, generator=gen)


def test_sample_with_condition_and_initial_noise():
    model = tiny_autoencoder()
    process = diffusion()
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2 * 64, 1, generator=torch.Generator().manual_seed(2))
    outs = [sample(model, process, shape=(8, 8), num_samples=2, channels=1, steps=3,
                   generator=torch.Generator().manual_seed(seed), model_kwargs={"cond": z},
                   noise=noise, progress=False).images for seed in (0, 1)]
    assert outs[0].shape == (2, 1, 8, 8) and bool(torch.isfinite(outs[0]).all())
    torch.testing.assert_close(outs[0], outs[1])  # DDIM eta=0 from the given noise
    with pytest.raises(ValueError, match="noise"):
        sample(model, process, shape=(8, 8), num_samples=2, channels=1, steps=2,
               model_kwargs={"cond": z}, noise=noise[:10], progress=False)


@pytest.mark.parametrize("keep", [None, 36])
def test_reconstruct_at_any_resolution(keep):
    model = tiny_autoencoder()
    x, pos = image_points(12, keep)
    outs = {}
    for side in (12, 24):
        out = reconstruct(model, diffusion(), x, pos, shape=(side, side), steps=3,
                          generator=torch.Generator().manual_seed(0), progress=False)
        assert out.images.shape == (1, 1, side, side)
        assert bool(torch.isfinite(out.images).all())
        outs[side] = out.images
    again = reconstruct(model, diffusion(), x, pos, shape=(12, 12), steps=3,
                        generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(again.images, outs[12])
    query = torch.rand(30, 2, generator=torch.Generator().manual_seed(3))
    at_points = reconstruct(model, diffusion(), x, pos, query_pos=query, steps=2,
                            progress=False)
    assert at_points.values.shape == (30, 1) and at_points.images is None


def test_reconstruct_through_a_context_decodes_one_function_at_every_resolution():
    # The decoder reads every lattice through the same random pixels of the training lattice
    # (sample(..., context=)): the context's trajectory, hence its values, do not depend on
    # the lattice; the kernels are computed once per point set (edge_kernels).
    from pyg_infdiff.diffusion import LatticeSubset

    model = tiny_autoencoder()
    x, pos = image_points(12, 36)
    outs = [reconstruct(model, diffusion(), x, pos, shape=(side, side), steps=3,
                        context=LatticeSubset((12, 12), 40), progress=False,
                        generator=torch.Generator().manual_seed(0)) for side in (12, 24)]
    assert outs[1].images.shape == (1, 1, 24, 24) and bool(torch.isfinite(outs[1].images).all())
    torch.testing.assert_close(outs[0].context_pos, outs[1].context_pos)
    torch.testing.assert_close(outs[0].context_values, outs[1].context_values)
    z = model.encode(x, pos)
    t = torch.tensor([40])
    nodes = torch.rand(50, 2, generator=torch.Generator().manual_seed(1))
    values = torch.randn(50, 1, generator=torch.Generator().manual_seed(2))
    context = torch.arange(0, 50, 2)
    edges = model.context_graph(nodes, context)
    with torch.no_grad():
        ours = model(values, nodes, t, cond=z, edge_index=edges, context=context,
                     kernels=model.edge_kernels(nodes, edges))
        unet = model.unet(values, nodes, t, cond=z, edge_index=edges, context=context)
    torch.testing.assert_close(ours, unet)


def test_reconstruct_a_batch_of_functions():
    model = tiny_autoencoder()
    x, pos = image_points(12, 50)
    x2 = torch.cat([x, -x])
    pos2 = torch.cat([pos, pos])
    batch = torch.arange(2).repeat_interleave(50)
    out = reconstruct(model, diffusion(), x2, pos2, batch, shape=(10, 10), steps=2,
                      progress=False)
    assert out.images.shape == (2, 1, 10, 10)


def test_interpolate_shares_one_noise_field():
    model = tiny_autoencoder()
    with torch.no_grad():
        z_a = model.encode(*image_points(12))[0]
        z_b = model.encode(-image_points(12)[0], image_points(12)[1])[0]
    out = interpolate(model, diffusion(), z_a, z_b, 4, channels=1, shape=(8, 8), steps=3,
                      generator=torch.Generator().manual_seed(0), progress=False)
    assert out.images.shape == (4, 1, 8, 8) and bool(torch.isfinite(out.images).all())
    again = interpolate(model, diffusion(), z_a, z_b, 4, channels=1, shape=(8, 8), steps=3,
                        generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(out.images, again.images)
    # one shared field: equal latents decode to equal functions
    same = interpolate(model, diffusion(), z_a, z_a, 3, channels=1, shape=(8, 8), steps=3,
                       generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(same.images[0], same.images[2])
    torch.testing.assert_close(same.images[0], out.images[0])  # the path starts at z_a
    # at points: the same field read at the lattice's pixel centres gives the same numbers
    points = interpolate(model, diffusion(), z_a, z_b, 4, channels=1, query_pos=lattice((8, 8)),
                         steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(points.values.view(4, 1, 8, 8), out.images, atol=1e-4,
                               rtol=1e-4)
    with pytest.raises(ValueError, match="num_points"):
        interpolate(model, diffusion(), z_a, z_b, 1, channels=1, shape=(8, 8))
    with pytest.raises(ValueError, match="exactly one"):
        interpolate(model, diffusion(), z_a, z_b, 3, channels=1)


def test_slerp():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    b = b / b.norm() * a.norm()
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(5))  # stays on the sphere
    parallel = slerp(a, 2 * a, torch.tensor([0.5]))
    torch.testing.assert_close(parallel[0], 1.5 * a)
    with pytest.raises(ValueError, match="vectors"):
        slerp(a, b[:3], torch.tensor([0.5]))
    with pytest.raises(ValueError, match="1-D"):
        slerp(a, b, torch.zeros(2, 2))


def _encoder_batch(num: int = 2, side: int = 12):
    from pyg_infdiff.data import GraphCollator

    gen = torch.Generator().manual_seed(0)
    images = list(torch.rand(num, 1, side, side, generator=gen) * 2 - 1)
    return GraphCollator(diffusion().mollifier, rate=4, encoder_rate=4)(images, generator=gen)


def test_autoencoder_loss_is_the_denoising_loss_given_the_encoded_latent():
    model = tiny_autoencoder()
    batch = _encoder_batch()
    t = torch.tensor([10, 700])
    loss_fn = AutoencoderLoss(diffusion())
    out = loss_fn.losses(model, batch, t=t, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model.encode(batch.enc_x, batch.enc_pos, batch.enc_batch)
    direct = diffusion().training_losses(model, batch, t=t,
                                         generator=torch.Generator().manual_seed(1),
                                         model_kwargs={"cond": z})
    torch.testing.assert_close(out.per_graph, direct.per_graph)
    torch.testing.assert_close(loss_fn(model, batch, t=t,
                                       generator=torch.Generator().manual_seed(1)), direct.loss)
    assert repr(loss_fn).startswith("AutoencoderLoss(MollifiedDiffusion(")


def test_autoencoder_loss_updates_a_loss_aware_sampler_unless_t_is_given():
    sampler = LossAwareTimestepSampler(1000, history_per_term=1)
    loss_fn = AutoencoderLoss(diffusion(), timestep_sampler=sampler)
    batch = _encoder_batch()
    model = tiny_autoencoder()
    loss_fn(model, batch, t=torch.tensor([3, 4]), generator=torch.Generator())
    assert int(sampler.loss_counts.sum()) == 0  # a given t bypasses the sampler
    out = loss_fn.losses(model, batch, generator=torch.Generator().manual_seed(0))
    assert int(sampler.loss_counts.sum()) == 2
    assert sampler.loss_counts[out.t].tolist() == [1, 1]


def test_encoder_inputs_without_batch_vector_or_common_lattice():
    x, pos = image_points(12, 30)
    single = Data(x=x, pos=pos, enc_x=x, enc_pos=pos)
    inputs = encoder_inputs(single)
    assert torch.equal(inputs["enc_batch"], torch.zeros(30, dtype=torch.long))
    assert inputs["enc_lattice"] is None
    mixed = _encoder_batch()
    mixed.lattice_shape = torch.tensor([[12, 12], [6, 24]])
    assert encoder_inputs(mixed)["enc_lattice"] is None
    del mixed.enc_batch  # several graphs: which graph each encoder node is must be said
    with pytest.raises(ValueError, match="enc_batch"):
        encoder_inputs(mixed)
