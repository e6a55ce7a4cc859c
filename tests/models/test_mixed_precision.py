"""bfloat16 autocast on the whole :class:`MultiscaleOperatorUNet` (issue 16, item 3): a training
step and a short sampling run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` give finite
losses and outputs close to float32, while the noise field, the mollifier and the cosine
transforms keep computing in float32.

The output head of the model is zero-initialised, which would make every comparison vacuous
(0 == 0): it is re-drawn here. The bounds are the measured errors (in the comments) with a
margin; what the issue asks for is a relative error of the model output of at most 2%.
"""
import pytest
import torch

from pyg_infdiff.data import ContinuousShapes, GraphCollator, ShapesConfig
from pyg_infdiff.diffusion import MollifiedDiffusion, sample
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import MollifiedNoise

RES, CHANNELS, BATCH = 28, 3, 4
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _model(seed: int = 0) -> MultiscaleOperatorUNet:
    torch.manual_seed(seed)
    model = MultiscaleOperatorUNet(UNetConfig.preset(RES, in_channels=CHANNELS,
                                                     out_channels=CHANNELS))
    with torch.no_grad():  # a non-zero output head: the trained model's situation
        model.proj.weight.normal_(0.0, model.proj.in_features ** -0.5)
        model.proj.bias.normal_(0.0, 0.1)
    return model


def _diffusion() -> MollifiedDiffusion:
    return MollifiedDiffusion(MollifiedNoise(0.5 / RES, 2))


def _batch(diffusion: MollifiedDiffusion, config: UNetConfig):
    data = ContinuousShapes(BATCH, RES, ShapesConfig(channels=CHANNELS), seed=0)
    collator = GraphCollator(diffusion.mollifier, rate=4.0, radius=config.radius)
    return collator([data[i] for i in range(BATCH)], generator=torch.Generator().manual_seed(0))


def _loss_and_grads(model, diffusion, batch, bf16: bool):
    model.zero_grad(set_to_none=True)
    t = torch.tensor([10, 250, 600, 950])
    noise = diffusion.draw_noise(BATCH, CHANNELS, batch.pos, batch.batch,
                                 generator=torch.Generator().manual_seed(1))
    with torch.autocast(**BF16, enabled=bf16):
        loss = diffusion.training_loss(model, batch, t=t, noise=noise)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.detach(), grads


def test_model_output_close_to_float32_on_graphs_and_lattices():
    model, diffusion = _model().eval(), _diffusion()
    batch = _batch(diffusion, model.config)
    t = torch.tensor([10, 250, 600, 950])
    x_t = torch.randn(batch.x.shape, generator=torch.Generator().manual_seed(2))
    lattice = LatticeIndex.full((RES, RES), 2)
    x_full = torch.randn(lattice.batch.numel(), CHANNELS,
                         generator=torch.Generator().manual_seed(3))
    cases = {  # the subsampled training graph (radius edges) and the full-lattice dense path
        "graph": lambda: model(x_t, batch.pos, t, batch.batch, edge_index=batch.edge_index),
        "lattice": lambda: model(x_full, lattice.pos(), t[:2], lattice.batch, lattice=lattice),
    }
    with torch.no_grad():
        for name, fn in cases.items():
            ref = fn()
            with torch.autocast(**BF16):
                out = fn()
            assert out.dtype == torch.bfloat16  # the head ran in bf16: autocast reached it
            assert torch.isfinite(out).all()
            assert ref.norm() > 0.2 * ref.numel() ** 0.5  # non-vacuous: RMS 0.47 measured
            # The bound. Measured (torch 2.13 CPU): 1.08% (graph), 1.01% (lattice); with
            # the weights of seeds 1 and 2: 1.38% / 1.51% and 1.01% / 0.98%. The error is spread
            # over the model: float32 kernel networks alone would give 0.90%, float32 pooling
            # 0.98%, a float32 dense U-Net 0.95%, float32 operator blocks 0.45% (graph, seed 0).
            assert _rel(out, ref) < 0.02, name


def test_training_step_close_to_float32():
    model, diffusion = _model().train(), _diffusion()
    batch = _batch(diffusion, model.config)
    loss32, grad32 = _loss_and_grads(model, diffusion, batch, bf16=False)
    loss16, grad16 = _loss_and_grads(model, diffusion, batch, bf16=True)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert torch.isfinite(grad16).all()
    # measured: loss 0.04%, gradient 1.07% (global relative 2-norm); seeds 1, 2: 0.11% and
    # 1.61%, 0.12% and 1.28%
    assert _rel(loss16, loss32) < 0.005
    assert _rel(grad16, grad32) < 0.03
    # An optimiser step under autocast leaves float32 weights.
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_sampling_close_to_float32():
    # The x0 parametrisation (that of examples/shapes_demo.py): an untrained model's mollified
    # noise prediction saturates the clipped x0 of the first DDIM steps, so that comparison
    # would measure the clipping (6.8% here: as much as a 1% random perturbation of the float32
    # output causes, 7.0%).
    model = _model().eval()
    diffusion = MollifiedDiffusion(MollifiedNoise(0.5 / RES, 2), parametrization="x0")
    kwargs = dict(shape=(RES, RES), num_samples=2, channels=CHANNELS, steps=4, progress=False)
    ref = sample(model, diffusion, generator=torch.Generator().manual_seed(0), **kwargs).images
    with torch.autocast(**BF16):
        out = sample(model, diffusion, generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.images.dtype == torch.float32  # the state stays float32 between steps
    assert torch.isfinite(out.images).all()
    # measured: 0.96% after 4 DDIM steps (a 1% random perturbation of the float32 model output
    # gives 1.04%); 2.5% with the weights of seed 1 (1.07%); 0.91% after 25 steps
    assert _rel(out.images, ref) < 0.03


@pytest.mark.parametrize("where", ["lattice", "points"])
def test_noise_mollifier_and_transforms_stay_float32(where):
    # Under autocast these compute exactly what they compute without it (float32 products).
    diffusion = _diffusion()
    lattice = LatticeIndex.full((RES, RES), 2)
    pos, batch = lattice.pos(), lattice.batch
    if where == "points":
        pos = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
        batch = torch.arange(2).repeat_interleave(150)
        lattice = None
    images = torch.randn(2, CHANNELS, RES, RES, generator=torch.Generator().manual_seed(1))

    def run():
        noise = diffusion.draw_noise(2, CHANNELS, pos, batch, lattice,
                                     torch.Generator().manual_seed(2))
        smooth = diffusion.mollifier.apply(images, 2)
        return noise, smooth, diffusion.mollifier.undo(smooth, 2, inv_snr=0.05)

    ref = run()
    with torch.autocast(**BF16):
        out = run()
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
