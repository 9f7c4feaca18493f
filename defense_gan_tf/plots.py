"""Image grids as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np


def tile_images(images: np.ndarray, columns: Optional[int] = None,
                pixel_range: Sequence[float] = (0.0, 1.0), pad: int = 1) -> np.ndarray:
    """Tiles [N, H, W, C] images into one [rows*(H+pad), columns*(W+pad), C] array in [0, 1]."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    lo, hi = pixel_range
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def save_image_grid(images, path: str, *, columns: Optional[int] = None,
                    pixel_range: Sequence[float] = (0.0, 1.0), scale: int = 3) -> str:
    """Writes images as a PNG grid; grey-scale for one channel. Returns the path."""
    import matplotlib.image

    grid = tile_images(images, columns, pixel_range)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if grid.shape[-1] == 1:
        matplotlib.image.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        matplotlib.image.imsave(path, grid)
    return path
