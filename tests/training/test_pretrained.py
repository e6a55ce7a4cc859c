import pytest
import torch

from pyg_infdiff.diffusion import MollifiedDiffusion, NoiseSchedule, cosine_schedule, sample
from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise
from pyg_infdiff.training import CheckpointManager, create_ema
from pyg_infdiff.training.pretrained import (
    diffusion_from_dict,
    diffusion_to_dict,
    load_pretrained,
    resolve_checkpoint,
    run_config,
)


def tiny_config() -> UNetConfig:
    return UNetConfig.preset(28, operator_channels=8, grid_shape=(7, 7), channels=8,
                             channel_mults=(1, 2), attention_levels=(), time_embed_dim=8)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "custom"])
def test_diffusion_round_trip(schedule):
    if schedule == "custom":
        sched = NoiseSchedule(torch.linspace(1e-3, 0.05, 50, dtype=torch.float64))
    else:
        from pyg_infdiff.diffusion import linear_schedule
        sched = cosine_schedule(200) if schedule == "cosine" else linear_schedule(200)
    diffusion = MollifiedDiffusion(MollifiedNoise(0.03, 2, cutoff=1e-2), sched,
                                   parametrization="x0", snr_gamma=5.0)
    info = diffusion_to_dict(diffusion)
    torch.save(info, "/dev/null")  # plain values only
    back = diffusion_from_dict(info)
    assert torch.equal(back.schedule.betas, diffusion.schedule.betas)
    assert back.noise.sigma == diffusion.noise.sigma and back.noise.ndim == 2
    assert back.noise.cutoff == diffusion.noise.cutoff
    assert back.parametrization == "x0" and back.snr_gamma == 5.0
    diffusion.snr_gamma = None  # the paper's uniform loss is recorded by leaving the key out
    assert "snr_gamma" not in diffusion_to_dict(diffusion)
    assert diffusion_from_dict(diffusion_to_dict(diffusion)).snr_gamma is None
    # a data mollifier of another width than the noise is recorded, the same one is not
    assert "data_sigma" not in info and back.mollifier.sigma == 0.03
    sharp = MollifiedDiffusion(MollifiedNoise(0.03, 2), sched, mollifier=GaussianMollifier(0.01))
    assert diffusion_to_dict(sharp)["data_sigma"] == 0.01
    again = diffusion_from_dict(diffusion_to_dict(sharp))
    assert again.mollifier.sigma == 0.01 and again.noise.sigma == 0.03
    # so is a data mollifier truncated elsewhere than GaussianMollifier's default
    assert "data_cutoff" not in info and back.mollifier.cutoff == GaussianMollifier(1).cutoff
    for data_sigma in (0.03, 0.01):
        cut = MollifiedDiffusion(MollifiedNoise(0.03, 2), sched,
                                 mollifier=GaussianMollifier(data_sigma, cutoff=1e-4))
        info_cut = diffusion_to_dict(cut)
        assert info_cut["data_cutoff"] == 1e-4
        again = diffusion_from_dict(info_cut)
        assert again.mollifier.cutoff == 1e-4 and again.mollifier.sigma == data_sigma


def test_load_pretrained_reproduces_the_model(tmp_path):
    config = tiny_config()
    model = MultiscaleOperatorUNet(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ema = create_ema(model, decay=0.5)
    diffusion = MollifiedDiffusion(MollifiedNoise(1 / 56, 2))
    state = {"model": model.state_dict(), "ema": ema.state_dict(), "step": 7,
             "model_config": run_config(config, diffusion, resolution=28)}
    CheckpointManager(tmp_path / "checkpoints").save(state, 7)

    loaded = load_pretrained(tmp_path)  # a run folder: its latest checkpoint
    assert loaded.step == 7 and loaded.resolution == 28
    assert loaded.shapes == "full"  # no shapes recorded: the default configuration's
    assert loaded.path == resolve_checkpoint(tmp_path)
    raw = load_pretrained(loaded.path, weights="model")
    kwargs = dict(shape=(14, 14), num_samples=1, channels=1, steps=2, progress=False)
    a = sample(model, diffusion, generator=torch.Generator().manual_seed(0), **kwargs).images
    b = sample(raw.model, raw.diffusion, generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(a, b.images)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(tmp_path / "missing.pt")
    CheckpointManager(tmp_path).save({"model": {}, "step": 1}, 1)
    with pytest.raises(ValueError, match="model_config"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="weights"):
        load_pretrained(tmp_path, weights="best")


@pytest.mark.parametrize("data,expected", [
    ({"resolution": 28, "subsample": 4}, (28, 196)),  # random pixels, as in training
    ({"resolution": 128, "subsample": 16}, (128, 1024)),
    ({"resolution": 28, "subsample": 1}, "lattice"),  # every pixel: the training lattice
    ({"resolution": 28}, "lattice"),
    ({}, None),                                      # nothing recorded
])
def test_training_context(data, expected):
    from pyg_infdiff.graph import lattice
    from pyg_infdiff.training.pretrained import Pretrained
    config = tiny_config()
    run = Pretrained(MultiscaleOperatorUNet(config), MollifiedDiffusion(MollifiedNoise(0.02, 2)),
                     config, {"data": data}, 0, None)
    context = run.training_context()
    if expected == "lattice":
        assert torch.equal(context, lattice((28, 28)))
    elif expected is None:
        assert context is None
    else:
        from pyg_infdiff.diffusion import LatticeSubset
        side, num = expected
        assert context == LatticeSubset((side, side), num)


def test_context_for_denser_point_sets_only():
    from pyg_infdiff.training.pretrained import Pretrained
    config = tiny_config()

    def run(data):
        return Pretrained(MultiscaleOperatorUNet(config),
                          MollifiedDiffusion(MollifiedNoise(0.02, 2)), config, {"data": data}, 0,
                          None)
    sparse = run({"resolution": 32, "subsample": 4})  # 256 nodes per image in training
    assert sparse.context_for(255) is None and sparse.context_for(256).num == 256
    assert sparse.context_for(32 * 32).num == 256
    full = run({"resolution": 28})
    assert full.context_for(28 * 28 - 1) is None
    # its own lattice plainly: the same numbers as through itself, without twice the nodes
    assert full.context_for(28 * 28) is None
    assert full.context_for(28 * 28 + 1).shape == (784, 2)
    assert full.context_for(56 * 56).shape == (784, 2)
    assert run({}).context_for(10**6) is None
