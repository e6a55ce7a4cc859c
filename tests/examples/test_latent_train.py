r"""examples/latent_train.py: the second stage on a tiny stage-1 checkpoint written by the
Trainer, end to end (encode, train, sample at two resolutions, resume with the cached latents)."""
import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch_geometric.data import Batch, Data

from pyg_infdiff.data import ContinuousShapes, ShapesConfig
from pyg_infdiff.diffusion import MollifiedDiffusion, cosine_schedule
from pyg_infdiff.graph import lattice
from pyg_infdiff.models import (
    DiffusionAutoencoder,
    EncoderConfig,
    MultiscaleOperatorUNet,
    UNetConfig,
)
from pyg_infdiff.noise import MollifiedNoise
from pyg_infdiff.training import (
    Trainer,
    TrainerConfig,
    diffusion_to_dict,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
RES = 12


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_autoencoder() -> DiffusionAutoencoder:
    encoder = EncoderConfig(in_channels=1, latent_dim=6, operator_channels=8, radius=0.2,
                            kernel_num_basis=4, kernel_hidden_channels=8, grid_shape=(6, 6),
                            channels=8, channel_mults=(1, 2), num_heads=2)
    unet = UNetConfig(in_channels=1, out_channels=1, operator_channels=8, radius=0.15,
                      kernel_hidden_channels=8, grid_shape=(6, 6), channels=8,
                      channel_mults=(1, 2), attention_levels=(1,), num_heads=2,
                      time_embed_dim=8, cond_dim=6)
    return DiffusionAutoencoder(encoder, unet)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """A stage-1 run folder written by the Trainer: two steps of a tiny diffusion autoencoder on
    full 12x12 lattices of the built-in shapes (1 channel)."""
    out = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    model = _tiny_autoencoder()
    diffusion = MollifiedDiffusion(MollifiedNoise(0.5 / RES, 2), cosine_schedule(100))
    shapes = ContinuousShapes(4, RES, ShapesConfig(channels=1))
    pos = lattice((RES, RES))
    graphs = [Data(x=shapes[i].reshape(1, -1).T, pos=pos) for i in range(4)]
    batches = [Batch.from_data_list(graphs[:2]), Batch.from_data_list(graphs[2:])]

    def loss_fn(net, batch, generator):
        z = net.encode(batch.x, batch.pos, batch.batch, num_graphs=batch.num_graphs)
        return diffusion.training_loss(net, batch, generator=generator,
                                       model_kwargs={"cond": z})

    config = TrainerConfig(max_steps=2, warmup_steps=0, sample_every=None, out_dir=str(out),
                           device="cpu", progress=False, verbose=False, plot_loss=False)
    model_config = {"autoencoder": model.to_dict(), "diffusion": diffusion_to_dict(diffusion),
                    "data": {"dataset": "shapes", "resolution": RES, "channels": 1}}
    Trainer(model, loss_fn, config, model_config=model_config, pass_generator=True).fit(batches)
    return out


def test_help_and_defaults(capsys):
    module = _load("latent_train")
    with pytest.raises(SystemExit) as exc:
        module.parse_args(["--help"])
    assert exc.value.code == 0 and "--autoencoder" in capsys.readouterr().out
    a = module.parse_args(["--autoencoder", "runs/x"])
    assert (a.batch_size, a.lr, a.weight_decay, a.diffusion_steps, a.loss) == (
        256, 1e-4, 0.04, 1000, "l1")  # the official recipe
    assert (a.preset, a.hidden, a.layers, a.steps) == ("cpu", 512, 6, 5000)
    a = module.parse_args(["--autoencoder", "runs/x", "--preset", "official", "--layers", "20"])
    assert (a.hidden, a.layers, a.time_embed_dim) == (2048, 20, 128)


def test_loads_the_stage_one_checkpoint_and_refuses_a_single_stage_one(stage_one, tmp_path):
    module = _load("latent_train")
    run = module.load_autoencoder(stage_one)
    assert run.path.name == "ckpt_00000002.pt" and run.resolution == RES
    assert isinstance(run.model, DiffusionAutoencoder) and not run.model.training
    assert run.model.latent_dim == 6 and run.diffusion.num_steps == 100
    state = load_checkpoint(run.path)
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items()
           if k.startswith("module.")}
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, ema[name]), name
    info = state["model_config"]
    unet = UNetConfig.from_dict(info["autoencoder"]["unet"])
    state["model"] = MultiscaleOperatorUNet(unet).state_dict()
    state["ema"] = None
    state["model_config"] = {"unet": unet.to_dict(), "diffusion": info["diffusion"]}
    with pytest.raises(SystemExit, match="not a DiffusionAutoencoder"):
        module.load_autoencoder(save_checkpoint(state, tmp_path / "unet_only.pt"))
    with pytest.raises(SystemExit, match="No checkpoint"):
        module.load_autoencoder(tmp_path / "missing")


def test_latent_train_end_to_end_then_resume(stage_one, tmp_path, capsys):
    module = _load("latent_train")
    args = ["--autoencoder", str(stage_one), "--num-items", "6", "--steps", "3",
            "--batch-size", "4", "--hidden", "16", "--layers", "3", "--diffusion-steps", "20",
            "--checkpoint-every", "2", "--sample-every", "0", "--num-samples", "2",
            "--resolutions", f"{RES},{2 * RES}", "--sample-steps", "2", "--out",
            str(tmp_path), "--device", "cpu", "--encode-batch", "4"]
    module.main(args)
    assert "encoded 12 latents" in capsys.readouterr().out  # 6 images and their mirror images
    cache = torch.load(tmp_path / "latents.pt", weights_only=True)
    assert cache["latents"].shape == (12, 6) and cache["source"]["dataset"] == "shapes"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt_00000002.pt", "ckpt_00000003.pt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000003.pt")
    info = state["model_config"]
    assert info["stage1_checkpoint"] == str((stage_one / "checkpoints" / "ckpt_00000002.pt")
                                            .resolve())
    assert info["latent"] == {"latent_dim": 6, "hidden_channels": 16, "num_layers": 3,
                              "time_embed_dim": 128, "dropout": 0.0}
    assert info["latent_diffusion"] == {"schedule": "constant", "num_steps": 20,
                                        "parametrization": "eps", "loss": "l1", "beta": 0.4}
    stats = torch.tensor(info["latent_stats"]["std"])
    torch.testing.assert_close(stats, cache["latents"].double().std(0).float())
    trainer = state["trainer_config"]
    assert (trainer["weight_decay"], list(trainer["betas"]), trainer["lr"]) == (
        0.04, [0.9, 0.99], 1e-4)
    png = tmp_path / "samples" / "samples_00000003.png"
    saved = torch.load(png.with_suffix(".pt"), weights_only=True)
    assert saved["z"].shape == (2, 6)
    assert {k: tuple(v.shape) for k, v in saved["images"].items()} == {
        f"{RES}x{RES}": (2, 1, RES, RES), f"{2 * RES}x{2 * RES}": (2, 1, 2 * RES, 2 * RES)}
    assert Image.open(png).size[1] > 2 * RES  # two rows

    module.main([*args[:5], "4", *args[6:], "--resume", "latest"])
    out = capsys.readouterr().out
    assert "12 latents from" in out and "encoded" not in out  # the cache, not the encoder
    assert (tmp_path / "checkpoints" / "ckpt_00000004.pt").is_file()
