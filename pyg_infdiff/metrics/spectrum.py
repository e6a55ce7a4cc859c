r"""How much detail images hold, by frequency band: the measure of "sharp" behind the claims on
sampling and decoding above a resolution (issues 13 and 15).

Frequencies are counted in cycles per unit length of the domain :math:`[0, 1]^2`, not per pixel,
so the energy in a band is the same number for every discretisation of one function that
resolves the band: a :math:`28^2` and a :math:`112^2` image of a band-limited function agree,
and a :math:`128^2` sample can be compared with :math:`32^2` data on the bands both hold.
"""
from __future__ import annotations

import torch
from torch import Tensor


def band_energy(images: Tensor, low: float, high: float) -> Tensor:
    r"""The mean energy of each image in the frequency band :math:`low \le |k|_\infty < high`,
    by Parseval's theorem on its 2-D DFT:

    .. math::
        E(x) = \frac{1}{C} \sum_{c} \sum_{low \le \|k\|_\infty < high}
        \frac{|\hat{x}_c(k)|^2}{(HW)^2},

    where :math:`k` is in cycles per unit length (an :math:`n`-pixel side resolves
    :math:`|k| \le n / 2`). Summed over all bands this is the mean of :math:`x^2` over pixels
    and channels; a cosine :math:`a \cos(2 \pi k_0 x)` puts :math:`a^2 / 2` into the band that
    holds :math:`k_0`.

    .. code-block:: python

        import torch

        from pyg_infdiff.metrics import band_energy

        images = torch.rand(4, 3, 128, 128) * 2 - 1
        detail = band_energy(images, 16, 65)  # finer than a 32^2 lattice resolves, [4]

    Args:
        images (Tensor): Square images, :math:`(N, C, n, n)`.
        low (float): The lower edge of the band (included), in cycles per unit length.
        high (float): The upper edge of the band (excluded); ``float("inf")`` for everything
            from :obj:`low` up.

    Returns:
        Tensor: The energy of each image, :math:`(N,)`, in float64.
    """
    if images.dim() != 4 or images.size(-1) != images.size(-2):
        raise ValueError(f"band_energy expects square images [N, C, n, n], got "
                         f"{tuple(images.shape)}")
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
    side = images.size(-1)
    spectrum = torch.fft.fft2(images.double()).abs().pow(2) / side**4
    k = torch.fft.fftfreq(side, d=1 / side, dtype=torch.float64, device=images.device).abs()
    kmax = torch.maximum(k.view(-1, 1), k.view(1, -1))
    mask = (kmax >= low) & (kmax < high)
    return (spectrum * mask).sum((-1, -2)).mean(1)


def detail_ratio(images: Tensor, reference: Tensor, low: float, high: float) -> float:
    r"""The mean energy of :obj:`images` in the band :math:`[low, high)` (see
    :func:`band_energy`) over that of :obj:`reference`: 1 when the images hold as much detail in
    the band as the reference, near 0 for blurred ones. The two sets need not be paired nor of
    one resolution, as long as both resolve the band (:obj:`high` at most one above the
    coarser side's Nyquist frequency :math:`n / 2`, which the band then includes).

    Args:
        images (Tensor): Square images, :math:`(N, C, n, n)`.
        reference (Tensor): Square images, :math:`(M, C, m, m)`.
        low (float): The lower edge of the band (included), in cycles per unit length.
        high (float): The upper edge of the band (excluded), in cycles per unit length.
    """
    for name, x in (("images", images), ("reference", reference)):
        if x.dim() == 4 and high > x.size(-1) // 2 + 1:
            raise ValueError(f"the band reaches {high:g} cycles per unit, beyond what the "
                             f"{x.size(-1)}² {name} resolve ({x.size(-1) // 2})")
    base = band_energy(reference, low, high).mean()
    if base <= 0:
        raise ValueError("the reference holds no energy in the band")
    return float(band_energy(images, low, high).mean() / base)
