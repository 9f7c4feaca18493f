import numpy as np
import pytest

from defense_gan_tf.plots import save_image_grid, tile_images


def test_tile_layout_and_scaling():
    images = np.stack([np.full((2, 3, 1), v, np.float32) for v in (-1.0, 0.0, 1.0)])
    grid = tile_images(images, columns=2, pixel_range=(-1, 1), pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert grid[1, 1, 0] == 0.0 and grid[1, 5, 0] == 0.5 and grid[4, 1, 0] == 1.0
    with pytest.raises(ValueError, match="N, H, W, C"):
        tile_images(np.zeros((2, 3)))


def test_labelled_grid_png(tmp_path):
    import matplotlib.image

    images = np.random.default_rng(0).uniform(size=(20, 28, 28, 1)).astype(np.float32)
    plain = save_image_grid(images, str(tmp_path / "plain.png"), columns=10)
    labelled = save_image_grid(images, str(tmp_path / "labelled.png"), columns=10,
                               row_labels=["clean", "adversarial"])
    a, b = matplotlib.image.imread(plain), matplotlib.image.imread(labelled)
    assert b.shape[1] > a.shape[1]  # room for the labels
