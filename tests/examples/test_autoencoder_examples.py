r"""The diffusion-autoencoder examples (issue 15): examples/celebahq_train.py --autoencoder trains
the first stage end to end (a few steps, then a resume), and examples/reconstruct.py and
examples/interpolate.py read its checkpoint and write their pictures."""
import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

from pyg_infdiff.models import DiffusionAutoencoder
from pyg_infdiff.training import load_pretrained

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["reconstruct", "interpolate"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        _load(name).parse_args(["--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage:")


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    train = _load("celebahq_train")
    args = ["--dataset", "shapes", "--resolution", "28", "--preset", "28", "--steps", "2",
            "--batch-size", "2", "--num-items", "8", "--cache-items", "8", "--sample-every",
            "0", "--checkpoint-every", "1", "--num-samples", "2", "--sample-steps", "2",
            "--sample-resolutions", "28", "--out", str(out), "--device", "cpu",
            "--autoencoder", "--latent-dim", "16", "--encoder-rate", "2"]
    train.main(args)
    train.main([*args[:7], "3", *args[8:], "--resume", "latest"])
    return out


def test_celebahq_train_autoencoder(stage_one):
    checkpoints = sorted(p.name for p in (stage_one / "checkpoints").iterdir())
    assert checkpoints[-1] == "ckpt_00000003.pt"
    assert sorted(p.name for p in (stage_one / "samples").iterdir()) == [
        "reconstructions_00000002.png", "reconstructions_00000003.png"]
    info = torch.load(stage_one / "checkpoints" / "ckpt_00000003.pt",
                      weights_only=True)["model_config"]
    assert set(info) == {"autoencoder", "diffusion", "data"}
    assert info["data"]["encoder_rate"] == 2.0 and info["data"]["subsample"] == 4
    run = load_pretrained(stage_one)  # rebuilt from model_config, EMA weights
    assert isinstance(run.model, DiffusionAutoencoder) and run.model.latent_dim == 16
    assert run.config.cond_dim == 16 and run.model.encoder.config.in_channels == 3


def test_celebahq_train_autoencoder_options():
    train = _load("celebahq_train")
    a = train.parse_args(["--dataset", "fashion-mnist", "--autoencoder"])
    assert (a.latent_dim, a.encoder_rate) == (64, 4)  # the preset's latent, the node rate
    a = train.parse_args(["--data-dir", "x", "--resolution", "256", "--autoencoder"])
    assert (a.latent_dim, a.encoder_rate) == (1024, 8)
    with pytest.raises(SystemExit):
        train.parse_args(["--dataset", "shapes", "--latent-dim", "8"])  # needs --autoencoder
    with pytest.raises(SystemExit):
        train.parse_args(["--dataset", "shapes", "--autoencoder", "--encoder-rate", "0.5"])
    # presets without an encoder preset mirror the U-Net's layout, as the official encoder
    from pyg_infdiff.models import UNetConfig
    unet = UNetConfig.preset(64, cond_dim=256)
    enc = train.encoder_config(64, unet, 256)
    assert (enc.grid_shape, enc.channel_mults, enc.latent_dim) == ((32, 32), (1, 2, 2, 2), 256)
    assert DiffusionAutoencoder(enc, unet).latent_dim == 256


def test_reconstruct_and_interpolate(stage_one, tmp_path):
    png = tmp_path / "rec.png"
    _load("reconstruct").main(["--checkpoint", str(stage_one), "--num", "2", "--steps", "2",
                               "--resolutions", "28,56", "--fraction", "0.25", "--deblur",
                               "--out", str(png), "--no-progress"])
    saved = torch.load(png.with_suffix(".pt"), weights_only=True)
    assert {k: tuple(v.shape) for k, v in saved["reconstructions"].items()} == {
        "28x28": (2, 3, 28, 28), "56x56": (2, 3, 56, 56)}
    assert saved["observed_pixel"].numel() == 2 * 196  # a quarter of each image
    assert Image.open(png).size[1] > 5 * 56  # original, observed, 2 decodings, bicubic
    # keeping the observed pixels (RePaint, a mean of two draws) at the training resolution
    _load("reconstruct").main(["--checkpoint", str(stage_one), "--num", "2", "--steps", "3",
                               "--resolutions", "28,56", "--keep-pixels", "--resample", "2",
                               "--jump-length", "1", "--draws", "2", "--out", str(png),
                               "--no-progress"])
    kept = torch.load(png.with_suffix(".pt"), weights_only=True)
    assert (kept["keep_pixels"], kept["resample"], kept["eta"], kept["draws"]) == (True, 2, 1.0,
                                                                                   2)
    seen = torch.zeros(2, 28 * 28, dtype=torch.bool)
    seen[kept["observed_batch"], kept["observed_pixel"]] = True
    seen = seen.view(2, 1, 28, 28).expand(-1, 3, -1, -1)
    decoded = kept["reconstructions"]["28x28"]
    torch.testing.assert_close(decoded[seen], kept["original"].clamp(-1, 1)[seen])
    assert not torch.equal(decoded, saved["reconstructions"]["28x28"])
    reconstruct = _load("reconstruct")
    guided = tmp_path / "guided.png"
    _load("reconstruct").main(["--checkpoint", str(stage_one), "--num", "2", "--steps", "2",
                               "--resolutions", "28", "--keep-pixels", "--guidance", "2",
                               "--out", str(guided), "--no-progress"])
    saved = torch.load(guided.with_suffix(".pt"), weights_only=True)
    assert saved["guidance"] == 2.0
    torch.testing.assert_close(saved["reconstructions"]["28x28"][seen],
                               saved["original"].clamp(-1, 1)[seen])
    for bad in (["--resample", "2"], ["--draws", "0"], ["--guidance", "1"],
                ["--keep-pixels", "--guidance", "-1"],
                ["--keep-pixels", "--resample", "2", "--steps", "2", "--jump-length", "2"]):
        with pytest.raises(SystemExit):
            reconstruct.parse_args(["--checkpoint", "x", *bad])
    strip = tmp_path / "interp.png"
    _load("interpolate").main(["--checkpoint", str(stage_one), "--pairs", "0:1", "--points",
                               "3", "--steps", "2", "--resolution", "56", "--out", str(strip),
                               "--no-progress"])
    paths = torch.load(strip.with_suffix(".pt"), weights_only=True)["paths"]
    assert tuple(paths["0:1"].shape) == (3, 3, 56, 56)
    with pytest.raises(SystemExit):
        _load("interpolate").parse_args(["--checkpoint", "x", "--pairs", "0-1"])


def test_examples_refuse_a_single_stage_checkpoint(tmp_path):
    train = _load("celebahq_train")
    train.main(["--dataset", "shapes", "--resolution", "16", "--preset", "28", "--steps", "1",
                "--batch-size", "2", "--num-items", "4", "--cache-items", "4",
                "--sample-every", "0", "--num-samples", "1", "--sample-steps", "1",
                "--sample-resolutions", "16", "--out", str(tmp_path), "--device", "cpu"])
    with pytest.raises(SystemExit, match="not a diffusion autoencoder"):
        _load("reconstruct").main(["--checkpoint", str(tmp_path), "--steps", "1"])
