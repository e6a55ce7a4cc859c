import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_infdiff.metrics import (
    FeatureStatistics,
    StatisticsCache,
    compute_statistics,
    extract_features,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
)

BACKENDS = ["scipy", "torch"]



def reference_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, verbatim in NumPy/SciPy."""
    linalg = pytest.importorskip("scipy.linalg")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_spd(d, generator):
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fid_closed_form_diagonal(backend):
    if backend == "scipy":
        pytest.importorskip("scipy")
    g = torch.Generator().manual_seed(0)
    d = 16
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    v1 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    v2 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    # For commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2.
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    got = frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2), backend=backend)
    assert math.isclose(got, expected, rel_tol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fid_matches_scipy_reference_full_covariance(backend):
    pytest.importorskip("scipy")
    g = torch.Generator().manual_seed(1)
    d = 32
    mu1, mu2 = (torch.randn(d, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = random_spd(d, g), random_spd(d, g)
    expected = reference_fid(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    got = frechet_distance(mu1, s1, mu2, s2, backend=backend)
    assert math.isclose(got, expected, rel_tol=1e-8)


@pytest.mark.parametrize("num", [10, 300])  # rank-deficient and full-rank covariances
def test_fid_from_features_matches_reference(num):
    pytest.importorskip("scipy")
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(num, 48, generator=g)
    f2 = 1.3 * torch.randn(num, 48, generator=g) + 0.2
    a, b = f1.double().numpy(), f2.double().numpy()
    expected = reference_fid(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    for backend in BACKENDS:  # with num=10 < D the torch backend takes its low-rank path
        assert math.isclose(fid_from_features(f1, f2, backend=backend), expected, rel_tol=1e-6)
    no_features = [compute_statistics(f, keep_features=False) for f in (f1, f2)]
    assert math.isclose(fid_from_features(*no_features, backend="torch"), expected, rel_tol=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 12))
def test_fid_properties(seed, d):
    g = torch.Generator().manual_seed(seed)
    mu1, mu2 = (torch.randn(d, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = random_spd(d, g), random_spd(d, g)
    same = frechet_distance(mu1, s1, mu1, s1, backend="torch")
    assert abs(same) < 1e-8
    ab = frechet_distance(mu1, s1, mu2, s2, backend="torch")
    ba = frechet_distance(mu2, s2, mu1, s1, backend="torch")
    assert ab >= 0 and math.isclose(ab, ba, rel_tol=1e-8, abs_tol=1e-10)


def test_fid_validation():
    mu, s = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match="backend"):
        frechet_distance(mu, s, mu, s, backend="numpy")
    with pytest.raises(ValueError, match="Means"):
        frechet_distance(mu, s, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="Covariances"):
        frechet_distance(mu, s, mu, torch.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        compute_statistics(torch.zeros(1, 3))


def test_compute_statistics_matches_numpy():
    f = torch.randn(40, 6, generator=torch.Generator().manual_seed(3))
    stats = compute_statistics(f)
    assert stats.num == 40 and stats.mu.dtype == torch.float64
    np.testing.assert_allclose(stats.mu.numpy(), f.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        stats.sigma.numpy(), np.cov(f.double().numpy(), rowvar=False), rtol=1e-10
    )
    assert torch.equal(stats.features, f)
    assert compute_statistics(f, keep_features=False).features is None


def reference_mmd2(x, y):
    """torch-fidelity's unbiased MMD^2 with the polynomial kernel (degree 3, gamma 1/d, coef 1)."""
    d = x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m = x.shape[0]
    kt_xx = k_xx.sum() - np.trace(k_xx)
    kt_yy = k_yy.sum() - np.trace(k_yy)
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def test_kid_matches_reference_on_full_set():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g) + 0.5
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=1000, generator=g)
    assert std == 0.0
    assert math.isclose(mean, reference_mmd2(x.double().numpy(), y.double().numpy()), rel_tol=1e-9)


def test_kid_unbiased_and_positive():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(400, 32, generator=g), torch.randn(400, 32, generator=g)
    c = torch.randn(400, 32, generator=g) * 1.2 + 0.3
    same_mean, same_std = kernel_inception_distance(a, b, num_subsets=30, subset_size=100,
                                                    generator=g)
    diff_mean, _ = kernel_inception_distance(a, c, num_subsets=30, subset_size=100, generator=g)
    # Unbiased: centred on 0 for one distribution (within the subset-to-subset spread).
    assert abs(same_mean) < 2 * same_std
    assert diff_mean > 10 * abs(same_mean) and diff_mean > 5 * same_std


def test_kid_deterministic_and_validated():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(20, 4, generator=g), torch.randn(25, 4, generator=g)
    r1 = kernel_inception_distance(a, b, 5, 10, torch.Generator().manual_seed(7))
    r2 = kernel_inception_distance(a, b, 5, 10, torch.Generator().manual_seed(7))
    assert r1 == r2
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(a[:1], b)
    with pytest.raises(ValueError, match="Expected features"):
        kernel_inception_distance(a, b[:, :3])
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_inception_distance(a, b, num_subsets=0)


def test_extract_features_batches_and_num():
    images = torch.arange(7 * 2 * 3 * 3, dtype=torch.float32).view(7, 2, 3, 3)
    calls = []

    def model(x):
        calls.append(x.size(0))
        return x.flatten(1)[:, :5]

    out = extract_features(model, images, batch_size=3, progress=False)
    assert torch.equal(out, images.flatten(1)[:, :5]) and calls == [3, 3, 1]
    out = extract_features(model, images.split(2), num=5, progress=False)
    assert torch.equal(out, images.flatten(1)[:5, :5])
    with pytest.raises(ValueError, match="no images"):
        extract_features(model, [], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(model, images, batch_size=0)


def test_statistics_cache_roundtrip(tmp_path):
    cache = StatisticsCache(tmp_path / "cache")
    f = torch.randn(12, 5, generator=torch.Generator().manual_seed(8))
    calls = []

    def compute():
        calls.append(1)
        return f

    key = ("fashion-mnist-test", 28, 12, "a16e4d89c0ecbc17a915dd76ea9e41211aa82562")
    s1 = cache.get_or_compute(compute, *key, variant="legacy_tf")
    s2 = cache.get_or_compute(compute, *key, variant="legacy_tf")
    assert calls == [1]
    assert isinstance(s2, FeatureStatistics) and s2.num == 12
    assert torch.equal(s1.mu, s2.mu) and torch.equal(s1.sigma, s2.sigma)
    assert torch.equal(s2.features, f)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == ["fashion-mnist-test-r28-n12-a16e4d89c0ecbc17-legacy_tf.pt"]  # no temp left
    assert cache.path(*key) != cache.path("fashion-mnist-test", 28, 13, key[3])
    assert cache.load(cache.path("other", 28, 12, key[3])) is None
    with pytest.raises(ValueError, match="Cache key"):
        cache.path("../evil", 28, 12, key[3])


def test_statistics_cache_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("PYG_INFDIFF_CACHE", str(tmp_path))
    assert StatisticsCache().root == tmp_path / "fid_stats"
    stats = compute_statistics(torch.randn(4, 3), keep_features=False)
    path = StatisticsCache().save(stats, StatisticsCache().path("x", 8, 4, "abc"))
    assert StatisticsCache().load(path).features is None
