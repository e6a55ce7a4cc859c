"""Smoke test of bench/autoencoder.py (issue 15, #5): the tiny diffusion autoencoder trained for
seconds, evaluated and written into a temporary copy of the docs; and its measurements on inputs
whose answers are known. No quality is asserted."""
import math
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # appended: bench/kernel_conv.py must not shadow the standard module

import autoencoder  # noqa: E402
from _publish import read_section  # noqa: E402

from pyg_infdiff.data import FashionMNIST  # noqa: E402
from pyg_infdiff.training import load_pretrained  # noqa: E402


def test_autoencoder_smoke(tmp_path, fashion_mnist):  # its smoke reads Fashion-MNIST
    doc, figures = tmp_path / "benchmarks.md", tmp_path / "figures"
    argv = ["--smoke", "--out", str(tmp_path / "ae"), "--write", "--doc", str(doc),
            "--figures", str(figures)]
    result = autoencoder.main(argv)
    assert set(result["reconstruction"]) == {"1", "0.25", "0.1"}
    assert set(result["reconstruction"]["0.25"]) == {
        "decoded", "decoded, deblurred", autoencoder.KEPT, autoencoder.REPAINT,
        autoencoder.MEAN.format(draws=2), autoencoder.GUIDED,
        autoencoder.GUIDED_MEAN.format(draws=2), "cubic interpolation", "nearest"}
    assert set(result["reconstruction"]["1"]) == {"decoded", "decoded, deblurred"}
    assert set(result["upsampling"]) == {"56", "112"}
    assert set(result["latent"]) == {"pixel replication", "bicubic"}
    for rows in result["reconstruction"].values():
        assert all(math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1 for m in rows.values())
    info = torch.load(result["trained"]["checkpoint"], weights_only=True)["model_config"]
    assert set(info) == {"autoencoder", "diffusion", "data"}
    body = read_section("autoencoder", doc)
    assert "Goal (25% of the pixels: PSNR ≥ 3 dB above cubic and nearest" in body
    assert "Goal (z from 28² vs 56²: relative difference ≤ 1%)" in body
    assert "Command: `python bench/autoencoder.py --smoke" in body and "Machine: " in body
    for name in ("bench_autoencoder_reconstruction.png", "bench_autoencoder_interpolation.png"):
        assert (figures / name).stat().st_size > 0 and name in body
    again = autoencoder.main(argv[:3])  # cached: neither trained nor evaluated again
    assert again["trained"] == result["trained"] and again["step"] == result["step"]
    # decoding that keeps the observed pixels returns them where they were observed, and
    # decodes the same latents as without them
    run = load_pretrained(result["trained"]["checkpoint"])
    images = (FashionMNIST(train=False).images[:3].float() / 127.5 - 1).unsqueeze(1)
    batch = autoencoder.subset_batch(images, 0.25, 0)
    args = autoencoder.parse_args(argv[:3])
    kept = autoencoder.decode(run.model, run.diffusion, batch, 28, args, "cpu", keep=True)
    free = autoencoder.decode(run.model, run.diffusion, batch, 28, args, "cpu")
    seen = torch.zeros(3, 28 * 28, dtype=torch.bool)
    seen[batch.enc_batch, batch.enc_pixel] = True
    seen = seen.view(3, 1, 28, 28)
    torch.testing.assert_close(kept[seen], images.clamp(-1, 1)[seen])
    assert not torch.equal(kept[~seen], free[~seen])
    # so do the RePaint decodings, each seed offset its own draw
    repaint = [autoencoder.decode(run.model, run.diffusion, batch, 28, args, "cpu", keep=True,
                                  seed=seed, resample=2, jump_length=1, eta=1.0)
               for seed in (0, 1000)]
    for draw in repaint:
        torch.testing.assert_close(draw[seen], images.clamp(-1, 1)[seen])
    assert not torch.equal(repaint[0][~seen], repaint[1][~seen])
    guided = autoencoder.decode(run.model, run.diffusion, batch, 28, args, "cpu", keep=True,
                                guidance=3.0)
    torch.testing.assert_close(guided[seen], images.clamp(-1, 1)[seen])
    assert not torch.equal(guided[~seen], kept[~seen])  # the same seed, pulled by the gradient


def test_scattered_interpolation_of_a_plane_is_exact():
    side = 10
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    plane = ((rows + 2 * cols) / 30.0 - 0.5).float().view(1, 1, side, side)
    pixel = torch.tensor([0, 9, 90, 99, 45, 23, 71])  # the corners span the lattice
    batch = torch.zeros_like(pixel)
    cubic = autoencoder.scattered(plane, pixel, batch, "cubic")
    torch.testing.assert_close(cubic, plane, atol=1e-5, rtol=0)
    nearest = autoencoder.scattered(plane, pixel, batch, "nearest")
    assert torch.equal(nearest.view(-1)[pixel], plane.view(-1)[pixel])


def test_psnr():
    x = torch.zeros(2, 1, 4, 4)
    torch.testing.assert_close(autoencoder.psnr(x, x + 0.2), torch.full((2,), 20.0,
                                                                           dtype=torch.float64))
