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
                    row_labels: Optional[Sequence[str]] = None,
                    cell_labels: Optional[Sequence[Optional[str]]] = None,
                    cell_wrong: Optional[Sequence[bool]] = None) -> str:
    """Writes images as a PNG grid; grey-scale for one channel. Returns the path.

    With ``row_labels``, each row of the grid is labelled on its left. With
    ``cell_labels`` (one per image, None for none), each image carries its label in
    its top-left corner (a predicted class, say); images flagged in ``cell_wrong`` get
    a red label and a red frame.
    """
    images = np.asarray(images)
    for name, values in (("cell_labels", cell_labels), ("cell_wrong", cell_wrong)):
        if values is not None and len(values) != len(images):
            raise ValueError(f"{name} has {len(values)} entries for {len(images)} images")
    grid = tile_images(images, columns, pixel_range)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cmap = "gray" if grid.shape[-1] == 1 else None
    pixels = grid[..., 0] if grid.shape[-1] == 1 else grid
    if not row_labels and cell_labels is None and cell_wrong is None:
        import matplotlib.image

        if scale > 1:
            pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
        matplotlib.image.imsave(path, pixels, cmap=cmap, vmin=0.0, vmax=1.0)
        return path
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from matplotlib.patches import Rectangle

    height, width = grid.shape[:2]
    label_inches = 1.6 if row_labels else 0.0
    fig_width = width * scale / 100 + label_inches
    fig = Figure(figsize=(fig_width, height * scale / 100), dpi=100)
    FigureCanvasAgg(fig)
    left = label_inches / fig_width
    ax = fig.add_axes([left, 0, 1 - left, 1])
    ax.imshow(pixels, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        rows = len(row_labels)
        ax.set_yticks([(r + 0.5) * height / rows for r in range(rows)])
        ax.set_yticklabels(row_labels, fontsize=8)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    n, h, w = images.shape[:3]
    columns = columns or int(math.ceil(math.sqrt(n)))
    for i in range(n):
        r, col = divmod(i, columns)
        top, left_px = 1 + r * (h + 1), 1 + col * (w + 1)   # tile_images' pad of 1
        wrong = bool(cell_wrong[i]) if cell_wrong is not None else False
        if wrong:
            ax.add_patch(Rectangle((left_px - 0.5, top - 0.5), w, h, fill=False,
                                   edgecolor="red", linewidth=1.5))
        label = cell_labels[i] if cell_labels is not None else None
        if label is not None:
            ax.text(left_px + 0.5, top + 0.5, str(label), color="red" if wrong else "lime",
                    fontsize=7, fontweight="bold", va="top", ha="left")
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.savefig(path)
    return path
