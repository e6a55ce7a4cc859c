import pytest
import torch

from pyg_infdiff.nn.embedding import SinusoidalTimeEmbedding, TimeEmbedding


@pytest.mark.parametrize("dim", [1, 7, 64])
def test_sinusoidal_shape_and_values(dim):
    emb = SinusoidalTimeEmbedding(dim)
    t = torch.tensor([0, 1, 999])
    out = emb(t)
    assert out.shape == (3, dim)
    half = dim // 2
    torch.testing.assert_close(out[0, :half], torch.ones(half))  # cos(0) = 1
    torch.testing.assert_close(out[0, half : 2 * half], torch.zeros(half))
    if half > 0:
        torch.testing.assert_close(out[1, 0], torch.cos(torch.tensor(1.0)))  # omega_0 = 1
    assert bool(torch.isfinite(out).all())


def test_sinusoidal_distinguishes_steps_and_accepts_float():
    emb = SinusoidalTimeEmbedding(32)
    out = emb(torch.arange(1000))
    dist = torch.cdist(out, out) + torch.eye(1000) * 10
    assert float(dist.min()) > 1e-3
    torch.testing.assert_close(emb(torch.tensor([5.0])), emb(torch.tensor([5])))


def test_sinusoidal_errors():
    with pytest.raises(ValueError, match="dim"):
        SinusoidalTimeEmbedding(0)
    with pytest.raises(ValueError, match="max_period"):
        SinusoidalTimeEmbedding(8, max_period=1.0)
    with pytest.raises(ValueError, match=r"\[B\]"):
        SinusoidalTimeEmbedding(8)(torch.zeros(2, 1))


def test_time_embedding_mlp():
    emb = TimeEmbedding(16)
    assert emb.out_dim == 64
    out = emb(torch.tensor([3, 500]))
    assert out.shape == (2, 64)
    out.sum().backward()
    assert emb.mlp[0].weight.grad is not None
    assert repr(emb) == "TimeEmbedding(16, out_dim=64)"
    assert TimeEmbedding(8, out_dim=10)(torch.tensor([1])).shape == (1, 10)
