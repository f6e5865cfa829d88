"""Contact sheets: a grid of captioned thumbnails (predict's grid, evaluate's mistakes and examples,
the EDA's near-duplicate pairs). TensorFlow-free, so the EDA draws them without loading it."""
from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _thumbnail(path: str, size: int = 128) -> np.ndarray:
    from hvdweather.data.decode import load_rgb

    try:  # squashed to a square, as the model saw it
        return load_rgb(path, size)
    except Exception:  # a file that cannot be shown still gets its caption
        return np.full((size, size, 3), 255, np.uint8)


def plot_contact_sheet(tiles: list[tuple[str | None, str, bool | None]], title: str, columns: int = 8):
    """A grid of images, each captioned; `tiles` = (path or None for an empty cell, caption, correct?).
    Captions are green for correct, red for wrong, black when unknown."""
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    plt = _pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (path, caption, correct) in zip(axes.flat, tiles):
        if path:
            axis.imshow(_thumbnail(path))
        colour = {True: "darkgreen", False: "firebrick"}.get(correct, "black")
        axis.set_title(caption, fontsize=7, color=colour)
    figure.tight_layout()
    figure.suptitle(title, y=1.0 + 0.25 / rows, va="bottom")  # above the first row's captions
    return figure


def save_sheet(figure, path) -> None:
    plt = _pyplot()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
