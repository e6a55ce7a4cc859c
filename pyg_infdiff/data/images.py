r"""Writing images as PNG files: grids of samples, and labelled rows of the same samples at
several resolutions side by side. Pillow only (no torchvision)."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["grid_image", "rows_image", "save_grid", "save_rows", "to_uint8"]

Row = tuple[str, Tensor]


def to_uint8(images: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    r"""Maps images from :obj:`value_range` to bytes :math:`\{0, \dots, 255\}`, clamping values
    outside the range and replacing NaN by the low end.

    .. math::
        q = \mathrm{round}\left(255 \cdot \mathrm{clamp}\left(\frac{x - a}{b - a}, 0, 1
        \right)\right)

    Args:
        images (torch.Tensor): Any shape, e.g. :math:`(B, C, H, W)`, any floating dtype.
        value_range (tuple[float, float], optional): The values :math:`(a, b)` mapped to 0
            and 255. (default: :obj:`(-1.0, 1.0)`)

    Shapes:
        - **output:** same as :obj:`images`, dtype :obj:`torch.uint8`, on the CPU.
    """
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"'value_range' must be increasing (low, high), got {value_range}")
    x = images.detach().to(device="cpu", dtype=torch.float32)
    x = torch.nan_to_num((x - low) / (high - low), nan=0.0, posinf=1.0, neginf=0.0)
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _check_batch(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"'{name}' must be a tensor of shape [B, C, H, W], got {shape}")
    if images.size(1) not in (1, 3):
        raise ValueError(f"'{name}' must have 1 (grey) or 3 (RGB) channels, got {images.size(1)}")
    if images.size(0) == 0:
        raise ValueError(f"'{name}' is empty (B = 0)")


def _to_pil(image: Tensor, value_range: tuple[float, float], rgb: bool) -> Image.Image:
    array = to_uint8(image, value_range).permute(1, 2, 0).numpy()
    if array.shape[-1] == 1:
        pil = Image.fromarray(np.ascontiguousarray(array[..., 0]), mode="L")
        return pil.convert("RGB") if rgb else pil
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def grid_image(
    images: Tensor,
    nrow: int | None = None,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    pad_value: int = 255,
) -> Image.Image:
    r"""Tiles a batch of images into one :class:`PIL.Image.Image`, row by row.

    Args:
        images (torch.Tensor): The images, grey or RGB.
        nrow (int, optional): Images per row; :obj:`None` gives a near-square grid.
            (default: :obj:`None`)
        padding (int, optional): Pixels between images and around the grid. (default: :obj:`2`)
        value_range (tuple[float, float], optional): See :func:`to_uint8`.
            (default: :obj:`(-1.0, 1.0)`)
        pad_value (int, optional): Grey level of the padding. (default: :obj:`255`)

    Shapes:
        - **input:** :math:`(B, C, H, W)` with :math:`C \in \{1, 3\}`
    """
    _check_batch(images)
    num, channels, height, width = images.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(num))
    if nrow < 1 or padding < 0:
        raise ValueError(f"'nrow' must be >= 1 and 'padding' >= 0, got {nrow} and {padding}")
    ncol, nrows = min(nrow, num), math.ceil(num / nrow)
    mode = "L" if channels == 1 else "RGB"
    fill = pad_value if mode == "L" else (pad_value,) * 3
    canvas = Image.new(mode, (ncol * (width + padding) + padding,
                              nrows * (height + padding) + padding), fill)
    for i in range(num):
        r, c = divmod(i, nrow)
        canvas.paste(_to_pil(images[i], value_range, rgb=mode == "RGB"),
                     (padding + c * (width + padding), padding + r * (height + padding)))
    return canvas


def save_grid(
    images: Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Path:
    r"""Writes a batch of images as one PNG grid (see :func:`grid_image`); creates the folder.

    Args:
        images (torch.Tensor): :math:`(B, C, H, W)`, values in :obj:`value_range`.
        path (str or os.PathLike): The file to write.
        nrow (int, optional): Images per row. (default: :obj:`None`, near-square)
        padding (int, optional): Pixels between images. (default: :obj:`2`)
        value_range (tuple[float, float], optional): See :func:`to_uint8`.
            (default: :obj:`(-1.0, 1.0)`)

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, nrow, padding, value_range).save(path)
    return path


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # a scalable font when Pillow has FreeType (Pillow >= 10.1), else the bitmap one
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


# How a label spells the characters that the label font may lack (Pillow's default font has
# no Greek letters, super- or subscripts, or most mathematical signs).
_SPELLED = {"η": "eta", "σ": "sigma", "γ": "gamma", "α": "alpha", "β": "beta", "∞": "inf",
            "²": "^2", "³": "^3", "×": "x", "→": "->", "≤": "<=", "≥": ">=", "—": "-", "–": "-"}


def _drawable_label(label: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    r""":obj:`label` with every character that :obj:`font` has no glyph for spelled in ASCII
    (``"η = 1"`` becomes ``"eta = 1"`` and ``"32²"`` becomes ``"32^2"`` in Pillow's default
    font), or ``"?"`` where no spelling is known, so that a figure never shows empty boxes."""
    missing = font.getmask("\U0010FFFD")  # a private code point: the font's "no glyph" box
    box = (missing.size, bytes(missing))

    def spelled(char: str) -> str:
        if char.isascii():
            return char
        mask = font.getmask(char)
        return _SPELLED.get(char, "?") if (mask.size, bytes(mask)) == box else char

    return "".join(spelled(char) for char in label)


def rows_image(
    rows: Sequence[Row],
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    cell_size: int | None = None,
    label_width: int | None = None,
    font_size: int = 14,
) -> Image.Image:
    r"""Lays out labelled rows of images, one row per entry, every image scaled (nearest
    neighbour, so pixels stay visible as squares) to the same cell size so that columns align:
    the same seeds at 32², 64² and 128² sit above each other at one display size.

    Args:
        rows (Sequence[tuple[str, torch.Tensor]]): ``(label, images)`` pairs (characters the
            label font has no glyph for are spelled in ASCII: ``"η"`` as ``"eta"``); images
            :math:`(B_r, C, H_r, W_r)` with any sizes and :math:`C \in \{1, 3\}` (grey rows are
            shown in RGB when another row is RGB). Rows may hold different numbers of images.
        padding (int, optional): Pixels between cells. (default: :obj:`2`)
        value_range (tuple[float, float], optional): See :func:`to_uint8`.
            (default: :obj:`(-1.0, 1.0)`)
        cell_size (int, optional): Height of a cell in pixels (widths keep each row's aspect
            ratio); :obj:`None` takes the largest image height. (default: :obj:`None`)
        label_width (int, optional): Width of the label column; :obj:`None` fits the longest
            label, :obj:`0` drops the labels. (default: :obj:`None`)
        font_size (int, optional): Label font size. (default: :obj:`14`)
    """
    if len(rows) == 0:
        raise ValueError("'rows' is empty")
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 2 or not isinstance(row[0], str):
            raise ValueError(f"Row {i} must be a (label, images) pair, got {type(row).__name__}")
        _check_batch(row[1], f"rows[{i}] images")
    rgb = any(images.size(1) == 3 for _, images in rows)
    height = cell_size or max(int(images.size(2)) for _, images in rows)
    widths = [round(height * images.size(3) / images.size(2)) for _, images in rows]
    font = _font(font_size)
    rows = [(_drawable_label(label, font), images) for label, images in rows]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if label_width is None:
        label_width = max(int(probe.textlength(label, font=font)) for label, _ in rows)
        label_width = label_width + 2 * padding + 4 if label_width > 0 else 0
    width = label_width + max(
        len(images) * (w + padding) for (_, images), w in zip(rows, widths, strict=True)
    ) + padding
    canvas = Image.new("RGB" if rgb else "L", (width, len(rows) * (height + padding) + padding),
                       (255, 255, 255) if rgb else 255)
    draw = ImageDraw.Draw(canvas)
    for r, ((label, images), w) in enumerate(zip(rows, widths, strict=True)):
        top = padding + r * (height + padding)
        if label_width > 0:
            draw.text((padding, top + height // 2), label, fill=(0, 0, 0) if rgb else 0,
                      font=font, anchor="lm")
        for c in range(images.size(0)):
            cell = _to_pil(images[c], value_range, rgb)
            if cell.size != (w, height):
                cell = cell.resize((w, height), Image.Resampling.NEAREST)
            canvas.paste(cell, (label_width + padding + c * (w + padding), top))
    return canvas


def save_rows(
    rows: Sequence[Row],
    path: str | os.PathLike,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    cell_size: int | None = None,
) -> Path:
    r"""Writes labelled rows of images as one PNG (see :func:`rows_image`); creates the folder.

    .. code-block:: python

        import torch

        from pyg_infdiff.data import ContinuousShapes
        from pyg_infdiff.data.images import save_rows

        shapes = ContinuousShapes(4)            # the same 4 images at 3 resolutions
        x32, x64, x128 = (torch.stack([shapes.render(i, n) for i in range(4)])
                          for n in (32, 64, 128))
        save_rows([("32x32", x32), ("64x64", x64), ("128x128", x128)], "zoom.png")

    Args:
        rows (Sequence[tuple[str, torch.Tensor]]): ``(label, images [B, C, H, W])`` pairs.
        path (str or os.PathLike): The file to write.
        padding (int, optional): Pixels between cells. (default: :obj:`2`)
        value_range (tuple[float, float], optional): See :func:`to_uint8`.
            (default: :obj:`(-1.0, 1.0)`)
        cell_size (int, optional): Cell height in pixels. (default: :obj:`None`, the largest
            image height)

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows_image(rows, padding, value_range, cell_size).save(path)
    return path
