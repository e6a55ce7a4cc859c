r"""The structural similarity index (SSIM) with a Gaussian window, for scoring reconstructions
against their references."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device
                     ) -> Tensor:
    # The normalised 1-D Gaussian of `size` taps centred on the middle one.
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-offsets.pow(2) / (2 * sigma**2))
    return window / window.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 2.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    r"""The structural similarity index of `"Image Quality Assessment: From Error Visibility to
    Structural Similarity" <https://doi.org/10.1109/TIP.2003.819861>`_ (Wang et al., IEEE TIP
    2004), with its standard settings: an 11-tap Gaussian window of width 1.5 pixels,
    :math:`K_1 = 0.01`, :math:`K_2 = 0.03`.

    .. math::
        \mathrm{SSIM}(x, y) = \frac{1}{|\Omega|} \sum_{\mathbf{p} \in \Omega}
        \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}
        {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}(\mathbf{p}),
        \qquad C_i = (K_i L)^2

    where :math:`\mu`, :math:`\sigma^2` and :math:`\sigma_{xy}` are Gaussian-weighted local
    means, variances and covariance, :math:`L` is :obj:`data_range` and :math:`\Omega` the
    positions where the window fits inside the image (valid filtering, no padding), averaged
    over channels too. Computed in float64.

    Args:
        x (torch.Tensor): Images :math:`(B, C, H, W)`.
        y (torch.Tensor): Reference images of the same shape.
        data_range (float, optional): The range :math:`L` of the pixel values (2 for images in
            :math:`[-1, 1]`). (default: :obj:`2.0`)
        window_size (int, optional): Taps of the Gaussian window, odd. (default: :obj:`11`)
        sigma (float, optional): Width of the Gaussian window in pixels. (default: :obj:`1.5`)
        k1 (float, optional): The constant :math:`K_1`. (default: :obj:`0.01`)
        k2 (float, optional): The constant :math:`K_2`. (default: :obj:`0.03`)

    Shapes:
        - **output:** :math:`(B,)`, one index per image (1 for identical images).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"'x' and 'y' must be image batches [B, C, H, W] of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"'window_size' must be a positive odd number, got {window_size}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"The images ({tuple(x.shape[-2:])}) are smaller than the window "
                         f"({window_size})")
    if not (data_range > 0 and sigma > 0 and math.isfinite(data_range)):
        raise ValueError(f"'data_range' and 'sigma' must be positive, got {data_range}, {sigma}")
    x, y = x.double(), y.double()
    channels = x.size(1)
    window = _gaussian_window(window_size, sigma, x.dtype, x.device)
    kernel = torch.outer(window, window).expand(channels, 1, window_size, window_size)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(image, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
             / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2)))
    return index.flatten(1).mean(1)
