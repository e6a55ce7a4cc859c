r"""Multi-scale sliced Wasserstein distance (SWD) on Laplacian-pyramid patches.

A weight-free sample-quality metric for quick checks and CI, after Karras et al., "Progressive
Growing of GANs for Improved Quality, Stability, and Variation" (ICLR 2018), Section 5 and their
``metrics/sliced_wasserstein.py``, reproduced here step by step:

1. Each image becomes a Laplacian pyramid (5-tap binomial filter, ``cv2.pyrDown``/``pyrUp``
   semantics with mirror borders), one level per resolution :math:`\ge 16` (finest first, the
   last level keeps the low-pass residual).
2. From each level of each image, 128 patches of :math:`7 \times 7` pixels (all channels) are
   taken at uniformly random centres where the patch fits.
3. The descriptors of one level of one *set* are normalised per channel by that set's own mean and
   standard deviation (so each set is normalised separately; a global per-channel brightness or
   contrast change of one set is therefore invisible to the metric, as in the reference).
4. The sliced Wasserstein distance between the real and fake descriptor sets of a level: 4
   repeats of 128 random unit directions; project, sort, mean absolute difference; mean over
   repeats. Reported :math:`\times 10^3`, per level and averaged over levels.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_GAUSS_5x5 = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0


def _mirror_blur(x: Tensor, gain: float) -> Tensor:
    # scipy.ndimage.convolve(mode="mirror") == reflect padding without repeating the edge.
    c = x.size(1)
    weight = (_GAUSS_5x5 * gain).to(x)[None, None].expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), weight, groups=c)


def pyr_down(x: Tensor) -> Tensor:
    r"""Blurs with the 5-tap binomial filter and keeps every second pixel (``cv2.pyrDown``).

    Shapes:
        - **input:** :math:`(B, C, H, W)`, :math:`H, W \ge 3`.
        - **output:** :math:`(B, C, \lceil H/2 \rceil, \lceil W/2 \rceil)`.
    """
    return _mirror_blur(x, 1.0)[..., ::2, ::2]


def pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    r"""Inserts zeros between pixels and blurs with 4 times the binomial filter (``cv2.pyrUp``).

    Args:
        x (torch.Tensor): The coarse level.
        size (tuple[int, int]): The fine size :math:`(H, W)`, with
            :math:`\lceil H/2 \rceil = h` and :math:`\lceil W/2 \rceil = w`.

    Shapes:
        - **input:** :math:`(B, C, h, w)`.
        - **output:** :math:`(B, C, H, W)`.
    """
    up = x.new_zeros(*x.shape[:2], *size)
    up[..., ::2, ::2] = x
    return _mirror_blur(up, 4.0)


def laplacian_pyramid(images: Tensor, num_levels: int) -> list[Tensor]:
    r"""Returns the Laplacian pyramid of images, finest level first, low-pass residual last.

    Args:
        images (torch.Tensor): The images (float).
        num_levels (int): The number of levels.

    Shapes:
        - **input:** :math:`(B, C, H, W)`.
        - **output:** a list of :math:`(B, C, H_l, W_l)` with :math:`H_{l+1} = \lceil H_l/2 \rceil`.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    pyramid = [images.float()]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1], tuple(pyramid[-2].shape[-2:]))
    return pyramid


def swd_resolutions(height: int, width: int, min_resolution: int = 16) -> list[int]:
    r"""The pyramid levels used for images of a size: the sides :math:`H_l` (finest first) while
    :math:`\min(H_l, W_l) \ge` :obj:`min_resolution`.
    """
    sizes = []
    h, w = height, width
    while min(h, w) >= min_resolution:
        sizes.append(h)
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def patch_descriptors(
    level: Tensor,
    patch_size: int = 7,
    patches_per_image: int = 128,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Cuts square patches at uniformly random centres (where the patch fits) of each image.

    Args:
        level (torch.Tensor): One pyramid level.
        patch_size (int, optional): The patch side, odd. (default: :obj:`7`)
        patches_per_image (int, optional): Patches per image. (default: :obj:`128`)
        generator (torch.Generator, optional): A CPU generator for the centres.
            (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(B, C, H, W)` with :math:`H, W \ge` :obj:`patch_size`.
        - **output:** :math:`(B \cdot P, C, p, p)`.
    """
    b, c, h, w = level.shape
    half = patch_size // 2
    if patch_size % 2 != 1 or min(h, w) < patch_size:
        raise ValueError(f"patch_size must be odd and <= {min(h, w)}, got {patch_size}")
    shape = (b, patches_per_image, 1)
    rows = torch.randint(half, h - half, shape, generator=generator)
    cols = torch.randint(half, w - half, shape, generator=generator)
    offsets = torch.arange(-half, half + 1)
    rows = (rows + offsets).to(level.device)  # [B, P, p]
    cols = (cols + offsets).to(level.device)
    img = torch.arange(b, device=level.device).view(b, 1, 1, 1)
    patches = level[img, :, rows[..., :, None], cols[..., None, :]]  # [B, P, p, p, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(b * patches_per_image, c, patch_size, patch_size)


def normalize_descriptors(descriptors: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Normalises patches per channel by their own mean and standard deviation and flattens.

    .. math::
        \hat{d}_{n,c,i,j} = \frac{d_{n,c,i,j} - \mu_c}{\max(\sigma_c, \epsilon)}

    (statistics over patches and pixels; :math:`\epsilon` only guards constant sets).

    Shapes:
        - **input:** :math:`(N, C, p, p)`.
        - **output:** :math:`(N, C p^2)`.
    """
    mean = descriptors.mean(dim=(0, 2, 3), keepdim=True)
    std = descriptors.std(dim=(0, 2, 3), keepdim=True, correction=0).clamp(min=eps)
    return ((descriptors - mean) / std).flatten(1)


def _sort_rows(x: Tensor) -> Tensor:
    # On the CPU, NumPy's sort (no indices) is measured 10-30x faster than torch.sort here.
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.detach().numpy(), axis=1))
    return x.sort(dim=1).values


def sliced_wasserstein(
    a: Tensor,
    b: Tensor,
    num_repeats: int = 4,
    dirs_per_repeat: int = 128,
    generator: torch.Generator | None = None,
) -> float:
    r"""The sliced Wasserstein-1 distance between two equal-size point sets.

    .. math::
        \mathrm{SW}(A, B) = \frac{1}{R K N} \sum_{r, k} \sum_{n}
        \left| \operatorname{sort}(A \theta_{rk})_n - \operatorname{sort}(B \theta_{rk})_n \right|

    with :math:`\theta_{rk}` random unit directions.

    Args:
        a (torch.Tensor): Points :math:`(N, D)`.
        b (torch.Tensor): Points :math:`(N, D)`.
        num_repeats (int, optional): Repeats :math:`R`. (default: :obj:`4`)
        dirs_per_repeat (int, optional): Directions per repeat :math:`K`. (default: :obj:`128`)
        generator (torch.Generator, optional): A CPU generator for the directions.
            (default: :obj:`None`)
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"Expected two [N, D] sets of equal shape, got {a.shape} and {b.shape}")
    results = []
    for _ in range(num_repeats):
        dirs = torch.randn(a.size(1), dirs_per_repeat, generator=generator)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(a)
        proj_a = _sort_rows(dirs.T @ a.T)  # [K, N]
        proj_b = _sort_rows(dirs.T @ b.T)
        results.append((proj_a - proj_b).abs().mean())
    return float(torch.stack(results).mean())


@dataclass(frozen=True)
class SWDResult:
    r"""Per-level sliced Wasserstein distances (:math:`\times 10^3`), finest level first.

    Args:
        resolutions (tuple[int, ...]): The height of each pyramid level.
        distances (tuple[float, ...]): SWD :math:`\times 10^3` of each level.
    """

    resolutions: tuple[int, ...]
    distances: tuple[float, ...]

    @property
    def mean(self) -> float:
        r"""The mean over levels (``SWDx1e3_avg`` of the reference)."""
        return sum(self.distances) / len(self.distances)

    def as_dict(self) -> dict[str, float]:
        r"""``{"swd_x1e3_<res>": ..., "swd_x1e3_avg": ...}``."""
        pairs = zip(self.resolutions, self.distances, strict=True)
        out = {f"swd_x1e3_{r}": d for r, d in pairs}
        out["swd_x1e3_avg"] = self.mean
        return out


def _to_float(images: Tensor) -> Tensor:
    if images.dim() != 4:
        raise ValueError(f"Expected images of shape [B, C, H, W], got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    if not images.is_floating_point():
        raise ValueError(f"Expected uint8 or floating point images, got dtype {images.dtype}")
    return images.float()


def _descriptors(
    images: Tensor | Iterable[Tensor],
    batch_size: int,
    min_resolution: int,
    patch_size: int,
    patches_per_image: int,
    generator: torch.Generator | None,
    desc: str | None,
) -> tuple[list[Tensor], tuple[int, ...], int]:
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    levels: list[list[Tensor]] = []
    shape: tuple[int, ...] | None = None
    count = 0
    for batch in tqdm(batches, desc=desc, unit="batch", disable=desc is None):
        batch = _to_float(batch)
        if shape is None:
            shape = tuple(batch.shape[1:])
            sizes = swd_resolutions(shape[1], shape[2], min_resolution)
            if not sizes:
                raise ValueError(
                    f"Images of size {shape[1]}x{shape[2]} are smaller than "
                    f"min_resolution={min_resolution}"
                )
            levels = [[] for _ in sizes]
        elif tuple(batch.shape[1:]) != shape:
            raise ValueError(f"All images must be {shape}, got a batch of {tuple(batch.shape)}")
        pyramid = laplacian_pyramid(batch, len(levels))
        for store, level in zip(levels, pyramid, strict=True):
            store.append(patch_descriptors(level, patch_size, patches_per_image, generator))
        count += batch.size(0)
    if shape is None:
        raise ValueError("sliced_wasserstein_distance got no images")
    finished = [normalize_descriptors(torch.cat(store)) for store in levels]
    return finished, shape, count


def sliced_wasserstein_distance(
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    min_resolution: int = 16,
    patch_size: int = 7,
    patches_per_image: int = 128,
    num_repeats: int = 4,
    dirs_per_repeat: int = 128,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SWDResult:
    r"""Multi-scale sliced Wasserstein distance between two image sets (Karras et al., 2018).

    For each Laplacian-pyramid level :math:`l` (sides :math:`\ge` :obj:`min_resolution`):

    .. math::
        \mathrm{SWD}_l = 10^3 \cdot \mathrm{SW}\left(\hat{D}^{\text{real}}_l,
        \hat{D}^{\text{fake}}_l\right)

    where :math:`\hat{D}_l` are the per-set, per-channel normalised :math:`7 \times 7` patch
    descriptors (see the module documentation). Lower is better; identical sets give about 0 up
    to patch-sampling noise. Defaults are those of the reference; their values are comparable only
    at equal image counts and settings. Images may be ``uint8`` or float (any affine scale gives
    the same result, since descriptors are normalised).

    Args:
        real (torch.Tensor or Iterable[torch.Tensor]): Images :math:`(N, C, H, W)` or batches.
        fake (torch.Tensor or Iterable[torch.Tensor]): As many images of the same shape.
        min_resolution (int, optional): The coarsest level's least side. (default: :obj:`16`)
        patch_size (int, optional): Patch side (odd). (default: :obj:`7`)
        patches_per_image (int, optional): Patches per image and level. (default: :obj:`128`)
        num_repeats (int, optional): Repeats of random directions. (default: :obj:`4`)
        dirs_per_repeat (int, optional): Directions per repeat. (default: :obj:`128`)
        batch_size (int, optional): Pyramid batch size for tensor inputs. (default: :obj:`64`)
        generator (torch.Generator, optional): A CPU generator for patch centres and directions
            (real patches first, then fake patches, then directions). (default: :obj:`None`)
        progress (bool, optional): Show progress bars. (default: :obj:`False`)
    """
    if min_resolution < patch_size:
        raise ValueError(f"min_resolution ({min_resolution}) must be >= patch_size ({patch_size})")
    common = (batch_size, min_resolution, patch_size, patches_per_image, generator)
    d_real, shape_real, n_real = _descriptors(real, *common, "swd real" if progress else None)
    d_fake, shape_fake, n_fake = _descriptors(fake, *common, "swd fake" if progress else None)
    if n_real != n_fake or shape_real != shape_fake:
        raise ValueError(
            f"SWD needs equal image counts and shapes: real {n_real} images of {shape_real}, "
            f"fake {n_fake} images of {shape_fake}"
        )
    distances = tuple(
        1e3 * sliced_wasserstein(a, b, num_repeats, dirs_per_repeat, generator)
        for a, b in zip(d_real, d_fake, strict=True)
    )
    resolutions = tuple(swd_resolutions(shape_real[1], shape_real[2], min_resolution))
    return SWDResult(resolutions=resolutions, distances=distances)
