import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph.lattice import lattice
from pyg_infdiff.nn.kernel import ContinuousKernel, bump, bump_mean, smooth_basis
from pyg_infdiff.nn.stencil import LatticeStencil


def _directions(num, dim, generator):
    u = torch.randn(num, dim, generator=generator, dtype=torch.float64)
    return u / u.norm(dim=-1, keepdim=True)


def test_bump_values():
    s = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.5], dtype=torch.float64)
    e = bump(s * s)
    assert e[0] == 1.0
    assert e[1] == pytest.approx(math.exp(1 - 1 / 0.75))
    assert 0 < e[2] < 1e-100
    assert e[3] == 0 and e[4] == 0


def _soft_unit_step(x):
    # e3nn's u(x) = exp(-1/x) for x > 0, else 0, as published (e3nn.math.soft_unit_step)
    out = torch.zeros_like(x)
    out[x > 0] = torch.exp(-1.0 / x[x > 0])
    return out


@pytest.mark.parametrize("num_basis", [2, 8, 13])
def test_smooth_basis_is_the_published_formula(num_basis):
    # e3nn's definition of soft_one_hot_linspace(x, 0, 1, n, "smooth_finite", cutoff=True):
    # n + 2 equally spaced values on [0, 1], the inner n are the centres, step h between them,
    # phi_k = 1.14136 e^2 u(d + 1) u(1 - d), d = (x - c_k) / h; written here with masks and two
    # exponentials, independently of the closed form of smooth_basis.
    s = torch.linspace(-0.1, 1.2, 2001, dtype=torch.float64)
    values = torch.linspace(0.0, 1.0, num_basis + 2, dtype=torch.float64)
    step, centres = values[1] - values[0], values[1:-1]
    d = (s[:, None] - centres) / step
    ref = 1.14136 * math.exp(2.0) * _soft_unit_step(d + 1) * _soft_unit_step(1 - d)
    out = smooth_basis(s, num_basis)
    assert out.shape == (s.numel(), num_basis)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    assert (out[(s <= 0) | (s >= 1)] == 0).all()  # the cutoff: nothing beyond [0, 1]
    # float32 follows float64 to float32 rounding (what the kernel computes in)
    torch.testing.assert_close(smooth_basis(s.float(), num_basis), ref.float(), rtol=1e-5,
                               atol=3e-6)


def test_smooth_basis_gradient_is_finite_everywhere():
    s = torch.linspace(-0.5, 1.5, 4001, dtype=torch.float64, requires_grad=True)
    smooth_basis(s, 8).sum().backward()
    assert torch.isfinite(s.grad).all()
    assert (s.grad[(s.detach() <= 0) | (s.detach() >= 1)] == 0).all()


def test_smooth_basis_matches_e3nn_when_installed():
    # e3nn is not a dependency (see smooth_basis); where it happens to be installed, the two
    # agree (e3nn rounds e^2 to float32 and takes its centres from linspace).
    e3nn_math = pytest.importorskip("e3nn.math")
    s = torch.linspace(-0.1, 1.2, 2001, dtype=torch.float64)
    for num_basis in (2, 8, 13):
        ref = e3nn_math.soft_one_hot_linspace(
            s, 0.0, 1.0, num_basis, basis="smooth_finite", cutoff=True
        )
        assert torch.allclose(smooth_basis(s, num_basis), ref, atol=1e-6, rtol=1e-6)
        ref32 = e3nn_math.soft_one_hot_linspace(
            s.float(), 0.0, 1.0, num_basis, basis="smooth_finite", cutoff=True
        )
        assert torch.allclose(smooth_basis(s.float(), num_basis), ref32, atol=5e-6, rtol=0)


def test_bump_mean_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    for dim in (1, 2, 3):
        u = torch.rand(400_000, dim, generator=g, dtype=torch.float64) * 2 - 1
        r2 = u.pow(2).sum(-1)
        inside = r2 < 1
        assert bump_mean(dim) == pytest.approx(bump(r2[inside]).mean().item(), rel=1e-2)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_kernel_shapes_and_support(dim):
    g = torch.Generator().manual_seed(dim)
    kernel = ContinuousKernel(dim, 5, 0.1).double()
    offset = (torch.rand(200, dim, generator=g, dtype=torch.float64) * 2 - 1) * 0.2
    out = kernel(offset)
    assert out.shape == (200, 5)
    outside = offset.norm(dim=-1) >= 0.1
    assert outside.any() and (out[outside] == 0).all()
    assert (kernel.window(offset)[outside] == 0).all()
    assert kernel.window(torch.zeros(1, dim, dtype=torch.float64)).item() == 1.0


@settings(max_examples=10, deadline=None)
@given(dim=st.integers(1, 3), seed=st.integers(0, 1000))
def test_kernel_vanishes_smoothly_at_radius(dim, seed):
    torch.manual_seed(seed)
    radius = 0.07
    kernel = ContinuousKernel(dim, 4, radius).double()
    u = _directions(16, dim, torch.Generator().manual_seed(seed))
    # Values and radial derivative are bounded by the C-infinity bump e(s) (times its own
    # derivative factor), which falls faster than any power of the distance to r.
    for gap in (1e-1, 3e-2, 1e-2, 1e-3):
        s = torch.full((16, 1), 1.0 - gap, dtype=torch.float64, requires_grad=True)
        value = kernel(u * s * radius)
        (grad,) = torch.autograd.grad(value.abs().sum(), s)
        t = 1.0 - (1.0 - gap) ** 2
        envelope = math.exp(1.0 - 1.0 / t)
        assert value.abs().max() <= 50 * envelope
        assert grad.abs().max() <= 50 * envelope * (1.0 + 2.0 / t**2)
    assert kernel(u * radius).abs().max() == 0
    inside = kernel(u * 0.3 * radius)
    assert inside.abs().max() > 1e-2


def test_kernel_is_continuous_in_offset():
    torch.manual_seed(0)
    kernel = ContinuousKernel(2, 3, 0.1).double()
    offset = (torch.rand(50, 2, dtype=torch.float64) - 0.5) * 0.14
    step = torch.randn(50, 2, dtype=torch.float64) * 1e-7
    assert (kernel(offset + step) - kernel(offset)).abs().max() < 1e-4
    # The zero offset (self loop) has finite gradients.
    zero = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    kernel(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_kernel_gain_sets_mean_scale():
    # The window-weighted mean of each output over the ball has variance ~ gain^2.
    means = []
    pts = lattice((64, 64), dtype=torch.float64) * 2 - 1
    for seed in range(8):
        torch.manual_seed(seed)
        kernel = ContinuousKernel(2, 64, 1.0, gain=2.0).double()
        with torch.no_grad():
            means.append(kernel(pts).sum(0) / kernel.window(pts).sum())
    std = torch.cat(means).std().item()
    assert 1.5 < std < 2.8


def test_reset_parameters_and_repr():
    torch.manual_seed(0)
    kernel = ContinuousKernel(3, 8, 0.25, num_basis=6, hidden_channels=16)
    before = [p.clone() for p in kernel.parameters()]
    kernel.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, kernel.parameters()))
    assert repr(kernel) == (
        "ContinuousKernel(dim=3, out_features=8, radius=0.2500, num_basis=6, hidden_channels=16)"
    )


def test_errors():
    with pytest.raises(ValueError, match="radius"):
        ContinuousKernel(2, 4, 0.0)
    with pytest.raises(ValueError, match="radius"):
        ContinuousKernel(2, 4, float("inf"))
    with pytest.raises(ValueError, match="dim"):
        ContinuousKernel(0, 4, 0.1)
    with pytest.raises(ValueError, match="num_basis"):
        ContinuousKernel(2, 4, 0.1, num_basis=1)
    with pytest.raises(ValueError, match="coordinates"):
        ContinuousKernel(2, 4, 0.1)(torch.zeros(3, 3))


@pytest.mark.parametrize(
    "shape,radius", [((20, 20), 0.25), ((10, 10), 0.3), ((100,), 0.07), ((7, 9, 11), 3 / 9)]
)
def test_stencil_classification(shape, radius):
    # Offsets inside the ball are included by the float32 pair test for *every* pair of lattice
    # points; offsets outside for none; borderline offsets are decided pair by pair.
    stencil = LatticeStencil(shape, radius, torch.device("cpu"), torch.float32)
    pos = lattice(shape)
    r2 = torch.tensor(radius * radius, dtype=torch.float64).float()
    sizes = torch.tensor(shape)
    strides = torch.tensor([math.prod(shape[a + 1 :]) for a in range(len(shape))])
    index = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij"), -1)
    index = index.reshape(-1, len(shape))
    decided = {True: 0, False: 0}
    for step, inside, border in zip(stencil.steps, stencil.inside, stencil.border):
        src = index - step
        valid = ((src >= 0) & (src < sizes)).all(-1)
        tgt = index[valid] @ strides
        src = src[valid] @ strides
        diff = pos[tgt] - pos[src]
        d2 = diff[:, 0] * diff[:, 0]
        for a in range(1, len(shape)):
            d2 = d2 + diff[:, a] * diff[:, a]
        hit = d2 < r2
        if bool(inside):
            assert hit.all()
        elif not bool(border):
            assert not hit.any()
        else:
            decided[True] += int(hit.sum())
            decided[False] += int((~hit).sum())
    # These radii are exactly lattice distances, so rounding splits the borderline pairs.
    assert decided[True] > 0 and decided[False] > 0
    assert stencil.box == tuple(2 * h + 1 for h in stencil.half)
