import pytest
import torch

from pyg_infdiff.data import ContinuousShapes, held_out_images


def test_shapes_are_items_the_run_did_not_train_on():
    images = held_out_images("shapes", 3, 16, seed=5)
    assert images.shape == (3, 3, 16, 16)
    held_out = ContinuousShapes(3, resolution=16, seed=5 + 10_000)
    trained = ContinuousShapes(3, resolution=16, seed=5)
    torch.testing.assert_close(images[1], held_out[1])
    assert not torch.allclose(images[1], trained[1])


def test_shapes_of_a_named_configuration():
    from pyg_infdiff.data import ShapesConfig
    images = held_out_images("shapes", 2, 16, seed=5, shapes="demo")
    expected = ContinuousShapes(2, resolution=16, seed=5 + 10_000, config=ShapesConfig.demo())
    torch.testing.assert_close(images[0], expected[0])
    with pytest.raises(ValueError, match="Unknown shapes configuration"):
        held_out_images("shapes", 2, 16, shapes="toy")


def test_folder_and_errors(tmp_path):
    from PIL import Image
    for i in range(2):
        Image.new("RGB", (20, 20), (40 * i, 100, 200)).save(tmp_path / f"{i}.png")
    images = held_out_images("folder", 5, 8, data_dir=tmp_path)
    assert images.shape == (2, 3, 8, 8)  # fewer when the dataset holds fewer
    with pytest.raises(ValueError, match="needs 'data_dir'"):
        held_out_images("folder", 2, 8)
    with pytest.raises(ValueError, match="Unknown dataset"):
        held_out_images("cifar", 2, 8)
    with pytest.raises(ValueError, match="positive"):
        held_out_images("shapes", 0, 8)


def test_fashion_mnist_test_split():
    try:
        images = held_out_images("fashion-mnist", 2, 14, channels=1)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    assert images.shape == (2, 1, 14, 14) and images.min() >= -1 and images.max() <= 1
