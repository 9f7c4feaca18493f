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
                    pixel_range: Sequence[float] = (0.0, 1.0), scale: int = 3,
                    row_labels: Optional[Sequence[str]] = None) -> str:
    """Writes images as a PNG grid; grey-scale for one channel. Returns the path.

    With ``row_labels``, each row of the grid is labelled on its left.
    """
    grid = tile_images(images, columns, pixel_range)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cmap = "gray" if grid.shape[-1] == 1 else None
    pixels = grid[..., 0] if grid.shape[-1] == 1 else grid
    if not row_labels:
        import matplotlib.image

        if scale > 1:
            pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
        matplotlib.image.imsave(path, pixels, cmap=cmap, vmin=0.0, vmax=1.0)
        return path
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = grid.shape[:2]
    rows = len(row_labels)
    label_inches = 1.6
    fig_width = width * scale / 100 + label_inches
    fig = Figure(figsize=(fig_width, height * scale / 100), dpi=100)
    FigureCanvasAgg(fig)
    left = label_inches / fig_width
    ax = fig.add_axes([left, 0, 1 - left, 1])
    ax.imshow(pixels, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * height / rows for r in range(rows)])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.savefig(path)
    return path
