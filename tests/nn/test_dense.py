import pytest
import torch

from pyg_infdiff.nn.dense import (
    Downsample,
    ResBlock,
    SelfAttention,
    Upsample,
    conv_nd,
    group_norm,
)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_resblock_shapes_and_identity_at_init(ndim):
    size = (6,) * ndim
    x = torch.randn(2, 8, *size)
    emb = torch.randn(2, 16)
    block = ResBlock(8, 8, 16, ndim)
    torch.testing.assert_close(block(x, emb), x)  # zero-initialised last conv
    wide = ResBlock(8, 12, 16, ndim, dropout=0.1)
    out = wide(x, emb)
    assert out.shape == (2, 12, *size)
    out.sum().backward()
    assert wide.conv2.weight.grad is not None


def test_resblock_uses_time_embedding():
    block = ResBlock(4, 4, 8, 2)
    torch.nn.init.normal_(block.conv2.weight)
    x = torch.randn(1, 4, 5, 5)
    a = block(x, torch.zeros(1, 8))
    b = block(x, torch.ones(1, 8))
    assert float((a - b).detach().abs().max()) > 1e-4


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("n", [7, 8])
def test_down_and_upsample(ndim, n):
    x = torch.randn(2, 4, *((n,) * ndim))
    down = Downsample(4, ndim)(x)
    assert down.shape == (2, 4, *(((n + 1) // 2,) * ndim))
    up = Upsample(4, ndim)
    assert up(down).shape == (2, 4, *((2 * ((n + 1) // 2),) * ndim))
    assert up(down, size=x.shape[2:]).shape == x.shape


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_self_attention(ndim):
    x = torch.randn(2, 8, *((4,) * ndim))
    attn = SelfAttention(8, num_heads=2)
    torch.testing.assert_close(attn(x), x)  # zero-initialised output projection
    torch.nn.init.normal_(attn.out.weight)
    out = attn(x)
    assert out.shape == x.shape
    # Permuting the sites permutes the output (no positional bias inside attention).
    flat = x.reshape(2, 8, -1)
    perm = torch.randperm(flat.size(-1))
    out_p = attn(flat[..., perm].reshape(x.shape)).reshape(2, 8, -1)
    torch.testing.assert_close(out_p, out.reshape(2, 8, -1)[..., perm], atol=1e-5, rtol=1e-5)


def test_helpers_and_errors():
    assert group_norm(48).num_groups == 24
    assert group_norm(64).num_groups == 32
    assert group_norm(5).num_groups == 5
    with pytest.raises(ValueError, match="ndim"):
        conv_nd(4, 1, 1, 3)
    with pytest.raises(ValueError, match="num_heads"):
        SelfAttention(6, num_heads=4)
    assert repr(ResBlock(4, 8, 16, 2)) == "ResBlock(4, 8, ndim=2)"
