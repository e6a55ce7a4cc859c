import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.graph import lattice
from pyg_infdiff.noise import (
    cosine_basis,
    dct,
    evaluate_series,
    evaluate_series_on_lattice,
    idct,
    lattice_matrix,
)

shapes = st.integers(1, 3).flatmap(
    lambda d: st.lists(st.integers(1, 12), min_size=d, max_size=d))


def to_nodes(grid: torch.Tensor) -> torch.Tensor:
    # [B, C, *shape] -> [B * P, C], graph after graph, row-major pixels
    return grid.reshape(grid.size(0), grid.size(1), -1).transpose(1, 2).reshape(-1, grid.size(1))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, lead=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_dct_idct_roundtrip(shape, lead, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(lead, 2, *shape, generator=gen, dtype=torch.float64)
    c = dct(x, len(shape))
    assert c.shape == x.shape
    torch.testing.assert_close(idct(c, len(shape)), x, atol=1e-10, rtol=0)
    torch.testing.assert_close(dct(idct(c, len(shape)), len(shape)), c, atol=1e-10, rtol=0)


def test_dct_truncation_and_zero_padding():
    x = torch.randn(3, 10, 7, dtype=torch.float64)
    full = dct(x, 2)
    torch.testing.assert_close(dct(x, 2, (4, 3)), full[..., :4, :3])
    padded = dct(x, 2, 16)
    assert padded.shape == (3, 16, 16)
    torch.testing.assert_close(padded[..., :10, :7], full)
    assert padded[..., 10:, :].abs().max() == 0 and padded[..., :, 7:].abs().max() == 0


def test_coefficients_are_those_of_the_function():
    # A band-limited function has the same coefficients from every lattice fine enough for it.
    c = torch.zeros(5, 4, dtype=torch.float64)
    c[0, 0], c[1, 2], c[4, 3], c[2, 0] = 0.3, -1.0, 0.5, 2.0
    for shape in [(5, 4), (9, 6), (32, 17)]:
        x = idct(c, 2, shape)
        torch.testing.assert_close(dct(x, 2, (5, 4)), c, atol=1e-12, rtol=0)
    # ... and the series at a finer lattice is the band-limited interpolant
    torch.testing.assert_close(idct(dct(idct(c, 2, (5, 4)), 2, 12), 2, (12, 12)),
                               idct(c, 2, (12, 12)), atol=1e-12, rtol=0)


def test_cosine_basis_is_orthonormal():
    u = lattice((512,), dtype=torch.float64)[:, 0]
    b = cosine_basis(u, 20)
    torch.testing.assert_close(b.T @ b / 512, torch.eye(20, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    assert b.dtype == torch.float64 and cosine_basis(u.float(), 3).dtype == torch.float32


def test_lattice_matrix_matches_basis_and_is_cached():
    m = lattice_matrix(7, 11, dtype=torch.float64)
    u = lattice((7,), dtype=torch.float64)[:, 0]
    torch.testing.assert_close(m, cosine_basis(u, 11), atol=1e-13, rtol=0)
    assert lattice_matrix(7, 11, dtype=torch.float64) is m
    a = lattice_matrix(7, 11, analysis=True, dtype=torch.float64)
    torch.testing.assert_close(a[:, :7], m[:, :7] / 7)
    assert a[:, 7:].abs().max() == 0


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_series_at_pixel_centres_is_the_data(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *shape, generator=gen, dtype=torch.float64)
    c = dct(x, len(shape))
    pos = lattice(shape, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(pos.size(0))
    vals = evaluate_series(c, pos.repeat(2, 1), batch)
    torch.testing.assert_close(vals, to_nodes(x), atol=1e-10, rtol=0)


@settings(max_examples=20, deadline=None)
@given(ndim=st.integers(1, 3), seed=st.integers(0, 2**16), chunk=st.integers(1, 50))
def test_lattice_and_point_evaluation_agree(ndim, seed, chunk):
    gen = torch.Generator().manual_seed(seed)
    freqs = torch.randint(1, 9, (ndim,), generator=gen).tolist()
    shape = torch.randint(1, 11, (ndim,), generator=gen).tolist()
    coeffs = torch.randn(3, 2, *freqs, generator=gen)
    grid = evaluate_series_on_lattice(coeffs, shape)
    assert grid.shape == (3, 2, *shape) and grid.dtype == torch.float32
    pos = lattice(shape).repeat(3, 1)
    batch = torch.arange(3).repeat_interleave(math.prod(shape))
    perm = torch.randperm(pos.size(0), generator=gen)  # node order is free
    vals = evaluate_series(coeffs, pos[perm], batch[perm], chunk_size=chunk)
    scale = grid.abs().max().item()  # float32 sums of up to 512 terms of size ~1
    torch.testing.assert_close(vals, to_nodes(grid)[perm], atol=1e-6 * scale, rtol=1e-5)


def test_float64_precision_and_autocast():
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    ref = dct(x, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = dct(x.float(), 2)
        back = idct(c, 2)
    assert c.dtype == torch.float32 and back.dtype == torch.float32
    torch.testing.assert_close(c.double(), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.double(), x, atol=1e-5, rtol=0)


def test_empty_point_set():
    out = evaluate_series(torch.randn(1, 2, 3, 3), torch.empty(0, 2))
    assert out.shape == (0, 2)


def test_errors():
    c = torch.randn(2, 1, 4, 4)
    pos = torch.rand(5, 2)
    with pytest.raises(ValueError, match="batch' is required"):
        evaluate_series(c, pos)
    with pytest.raises(ValueError, match="shape \\[5\\]"):
        evaluate_series(c, pos, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        evaluate_series(c, pos, torch.full((5,), 2))
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        evaluate_series(c[:1], pos + 0.5 + 1e-3 * torch.ones(5, 2))
    evaluate_series(c[:1], pos.clamp(0, 1) + 1e-7)  # within tolerance
    with pytest.raises(ValueError, match="shape \\[N, 2\\]"):
        evaluate_series(c[:1], torch.rand(5, 3))
    with pytest.raises(ValueError, match="ndim"):
        dct(torch.randn(4), 2)
    with pytest.raises(ValueError, match="num_freq"):
        dct(torch.randn(4, 4), 2, (3, 0))
    with pytest.raises(ValueError, match="num_freq"):
        cosine_basis(torch.rand(3), 0)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_series(c[:1], pos, chunk_size=0)
    with pytest.raises(ValueError, match="d=3"):
        evaluate_series_on_lattice(c, (4, 4, 4))
