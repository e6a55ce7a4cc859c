import pytest
import torch
from PIL import Image
from torch import nn

from pyg_infdiff.diffusion import MollifiedDiffusion
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import Trainer, TrainerConfig
from pyg_infdiff.training.callbacks import SampleGrid


class Pointwise(nn.Module):
    r"""A denoiser that acts on each node alone: ``w * x_t`` (so samples at two lattices agree
    exactly where their nodes coincide)."""

    def __init__(self, w: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x_t, pos, t, batch=None, edge_index=None, lattice=None):
        return self.w * x_t


def _diffusion() -> MollifiedDiffusion:
    return MollifiedDiffusion(MollifiedNoise(1 / 32, 2))


def test_single_resolution_writes_a_grid(tmp_path):
    grid = SampleGrid(_diffusion(), channels=3, resolutions=(8,), num_samples=4, steps=3,
                      nrow=2, save_tensors=True)
    path = grid(Pointwise(0.5), 7, tmp_path)
    assert path == tmp_path / "samples_00000007.png"
    img = Image.open(path)
    assert img.mode == "RGB" and img.size == (2 * (8 + 2) + 2, 2 * (8 + 2) + 2)
    tensors = torch.load(path.with_suffix(".pt"), weights_only=True)
    assert list(tensors) == ["8x8"] and tensors["8x8"].shape == (4, 3, 8, 8)
    assert tensors["8x8"].abs().max() <= 1.0
    assert (8, 8) in grid.seconds


def test_same_seed_same_fields_at_every_resolution(tmp_path):
    # 8x8 pixel centres (i + 0.5) / 8 are the centres of pixels 3i + 1 of the 24x24 lattice,
    # so with a pointwise model the samples must agree there exactly.
    grid = SampleGrid(_diffusion(), channels=1, resolutions=(8, 24), num_samples=2, steps=4,
                      seed=3)
    model = Pointwise(0.3)
    coarse, fine = grid.draw(model, 8), grid.draw(model, (24, 24))
    assert coarse.shape == (2, 1, 8, 8) and fine.shape == (2, 1, 24, 24)
    torch.testing.assert_close(fine[..., 1::3, 1::3], coarse, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grid.draw(model, 8), coarse)  # reproducible
    other = SampleGrid(_diffusion(), channels=1, resolutions=(8,), num_samples=2, steps=4,
                       seed=4)
    assert not torch.allclose(other.draw(model, 8), coarse)

    path = grid(model, 0, tmp_path)
    img = Image.open(path)
    assert img.mode == "L" and img.size[1] == 2 * (24 + 2) + 2  # two rows, cells 24 high


def test_deblur_sharpens(tmp_path):
    kwargs = dict(channels=1, resolutions=(16,), num_samples=2, steps=2)
    plain = SampleGrid(_diffusion(), **kwargs).draw(Pointwise(0.2), 16)
    sharp = SampleGrid(_diffusion(), deblur=0.05, **kwargs).draw(Pointwise(0.2), 16)
    assert sharp.shape == plain.shape and not torch.allclose(sharp, plain)
    # With a band, only the frequencies below it are deblurred; a band as wide as the
    # lattice is the plain filter.
    grid = SampleGrid(_diffusion(), deblur=0.05, deblur_band=8, channels=1,
                      resolutions=(8, 16), num_samples=2, steps=2)
    assert grid.deblur_band == (8, 8)
    undone = grid.diffusion.mollifier.undo(plain, 2, inv_snr=0.05, band=8).clamp(-1, 1)
    torch.testing.assert_close(grid.draw(Pointwise(0.2), 16), undone)
    assert not torch.allclose(undone, sharp)
    wide = SampleGrid(_diffusion(), deblur=0.05, deblur_band=16, **kwargs)
    torch.testing.assert_close(wide.draw(Pointwise(0.2), 16), sharp)


def test_trainer_calls_it_with_the_ema_model(tmp_path):
    model = Pointwise(0.0)
    grid = SampleGrid(_diffusion(), channels=1, resolutions=(8, 16), num_samples=2, steps=2)
    config = TrainerConfig(max_steps=2, sample_every=1, checkpoint_every=0, warmup_steps=0,
                           out_dir=str(tmp_path), device="cpu", progress=False, verbose=False,
                           plot_loss=False)
    trainer = Trainer(model, lambda m, batch: (m.w - batch).pow(2), config, sample_fn=grid)
    trainer.fit([torch.tensor(1.0)])
    written = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert written == ["samples_00000001.png", "samples_00000002.png"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=2), "channels"),
    (dict(resolutions=()), "empty"),
    (dict(resolutions=((8, 8, 8),)), "resolution"),
    (dict(num_samples=0), "positive"),
    (dict(sampler="euler"), "sampler"),
    (dict(deblur=0.0), "deblur"),
])
def test_rejects_bad_arguments(kwargs, match):
    args = dict(channels=3, resolutions=(8,)) | kwargs
    with pytest.raises(ValueError, match=match):
        SampleGrid(_diffusion(), **args)


def test_repr():
    grid = SampleGrid(_diffusion(), 3, resolutions=(32, (64, 48)), num_samples=4)
    assert repr(grid) == ("SampleGrid(resolutions=[32x32, 64x48], num_samples=4, "
                          "sampler='ddim', steps=50, seed=0)")


class ContextRecorder(Pointwise):
    """Pointwise, and remembers the context it was given (None on plain lattices)."""

    def forward(self, x_t, pos, t, batch=None, edge_index=None, lattice=None, context=None,
                kernels=None):
        self.seen = None if context is None else context.numel()
        return super().forward(x_t, pos, t, batch)


def test_context_on_lattices_denser_than_the_training_nodes():
    grid = SampleGrid(_diffusion(), channels=1, resolutions=(8, 16), num_samples=2, steps=2,
                      context=100)
    model = ContextRecorder(0.3)
    grid.draw(model, 8)              # 64 pixels: fewer than 100, the plain lattice
    assert model.seen is None
    grid.draw(model, 16)             # 256 pixels: through 100 random points per sample
    assert model.seen == 200
    with pytest.raises(ValueError, match="positive number of points"):
        SampleGrid(_diffusion(), channels=1, context=0)


def test_context_of_training_pixels():
    from pyg_infdiff.diffusion import LatticeSubset
    grid = SampleGrid(_diffusion(), channels=1, resolutions=(8, 16), num_samples=2, steps=2,
                      context=LatticeSubset((16, 16), 64))
    model = ContextRecorder(0.3)
    grid.draw(model, 7)              # 49 pixels: fewer than the context, the plain lattice
    assert model.seen is None
    grid.draw(model, 8)              # 64 pixels: as many, through the context
    assert model.seen == 128
