import numpy as np
import pytest
import torch
from PIL import Image

from pyg_infdiff.data import images as images_module
from pyg_infdiff.data.images import grid_image, rows_image, save_grid, save_rows, to_uint8


def test_to_uint8_maps_the_range_and_clamps():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.0, float("nan"), float("inf")])
    assert to_uint8(x).tolist() == [0, 128, 255, 0, 255, 0, 255]
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0]), (0, 1)).tolist() == [0, 128, 255]
    assert to_uint8(torch.zeros(2, 3, 4, 5, dtype=torch.float64)).dtype == torch.uint8
    with pytest.raises(ValueError, match="increasing"):
        to_uint8(x, (1.0, 1.0))


def test_save_grid_layout_and_pixels(tmp_path):
    images = torch.full((5, 3, 8, 6), -1.0)
    images[4, 0] = 1.0  # the last image is red
    path = save_grid(images, tmp_path / "sub" / "grid.png", nrow=3, padding=2)
    img = Image.open(path)
    assert img.mode == "RGB"
    assert img.size == (3 * (6 + 2) + 2, 2 * (8 + 2) + 2)
    assert img.getpixel((2, 2)) == (0, 0, 0)  # first image, black
    assert img.getpixel((2 + 8 + 1, 2 + 10 + 1)) == (255, 0, 0)  # row 1, col 1: image 4
    assert img.getpixel((0, 0)) == (255, 255, 255)  # padding
    assert img.getpixel((img.size[0] - 3, img.size[1] - 3)) == (255, 255, 255)  # empty cell


def test_grid_image_grey_and_default_nrow():
    img = grid_image(torch.zeros(4, 1, 5, 5), padding=0)
    assert img.mode == "L" and img.size == (10, 10)
    assert set(np.asarray(img).ravel().tolist()) == {128}


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(2, 2, 8, 8),
                                 torch.zeros(0, 3, 8, 8)])
def test_grid_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        grid_image(bad)


def test_rows_align_resolutions_with_nearest_upsampling(tmp_path):
    small = torch.rand(3, 3, 4, 4) * 2 - 1
    large = torch.rand(3, 3, 8, 8) * 2 - 1
    grey = torch.rand(2, 1, 2, 2) * 2 - 1
    path = save_rows([("4x4", small), ("8x8", large), ("grey", grey)], tmp_path / "rows.png",
                     padding=1)
    img = Image.open(path)
    assert img.mode == "RGB"  # grey rows are shown in RGB next to RGB rows
    rows = rows_image([("a", small), ("b", large)], padding=1, label_width=0)
    assert rows.size == (1 + 3 * (8 + 1), 1 + 2 * (8 + 1))
    # Every pixel of a 4x4 image becomes a 2x2 block of the 8-pixel cell.
    q = to_uint8(small)
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        for di in (0, 1):
            for dj in (0, 1):
                px = rows.getpixel((1 + 2 * j + dj, 1 + 2 * i + di))
                assert px == tuple(q[0, :, i, j].tolist())
    # The second cell of the 8x8 row is the second large image, unscaled.
    assert rows.getpixel((1 + 9 + 3, 1 + 9 + 5)) == tuple(to_uint8(large)[1, :, 5, 3].tolist())


def test_rows_labels_widen_the_image():
    images = torch.zeros(1, 1, 6, 6)
    plain = rows_image([("", images)])
    labelled = rows_image([("a long label", images)])
    assert plain.mode == "L"
    assert labelled.size[0] > plain.size[0] and labelled.size[1] == plain.size[1]
    sized = rows_image([("x", images)], cell_size=12, label_width=0, padding=0)
    assert sized.size == (12, 12)


def test_labels_spell_what_the_font_cannot_draw():
    # Pillow's default font has no η or ²: a label draws them spelled out, never as boxes,
    # and keeps what the font has (ASCII, and the middle dot)
    font = images_module._font(14)
    assert images_module._drawable_label("context, η = 1 at 32²", font) == \
        "context, eta = 1 at 32^2"
    assert images_module._drawable_label("a · b ⊗ c", font) == "a · b ? c"
    images = torch.zeros(1, 1, 6, 6)
    spelled = rows_image([("η = 1", images)], padding=0)
    assert spelled.tobytes() == rows_image([("eta = 1", images)], padding=0).tobytes()


def test_rows_reject_bad_input():
    with pytest.raises(ValueError, match="empty"):
        rows_image([])
    with pytest.raises(ValueError, match="pair"):
        rows_image([torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="channels"):
        rows_image([("x", torch.zeros(1, 2, 4, 4))])
