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


def test_cells_carry_their_labels_and_wrong_ones_a_red_frame(tmp_path):
    import matplotlib.image

    images = np.zeros((4, 28, 28, 1), np.float32)        # black cells: any mark shows
    plain = matplotlib.image.imread(save_image_grid(
        images, str(tmp_path / "plain.png"), columns=2, cell_labels=[None] * 4))
    marked = matplotlib.image.imread(save_image_grid(
        images, str(tmp_path / "marked.png"), columns=2, cell_labels=["7", None, None, "3"],
        cell_wrong=[False, False, False, True]))
    assert plain.shape == marked.shape
    def red(a):
        return (a[..., 0] > 0.6) & (a[..., 1] < 0.3) & (a[..., 2] < 0.3)

    def green(a):
        return (a[..., 1] > 0.6) & (a[..., 0] < 0.4)

    half_h, half_w = marked.shape[0] // 2, marked.shape[1] // 2
    assert red(marked)[half_h:, half_w:].sum() > 50          # the wrong cell (bottom right)
    assert red(marked)[:half_h].sum() == 0 and red(marked)[half_h:, :half_w].sum() == 0
    assert green(marked)[:half_h, :half_w].sum() > 0 and green(marked)[half_h:].sum() == 0
    assert not red(plain).any() and not green(plain).any()
    with pytest.raises(ValueError, match="cell_wrong has 2 entries for 4 images"):
        save_image_grid(images, str(tmp_path / "x.png"), cell_wrong=[True, False])
