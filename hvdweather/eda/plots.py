"""The EDA's PNG plots, made by the primary from the combined totals:

    histograms.png   a grid with one panel per class: its R, G and B histograms (fraction of pixels)
    class_counts.png images per class, bars sorted by count, with the mean drawn in: the imbalance
    image_sizes.png  width vs height of every decoded image, one colour (up to 20 classes) and marker per class

Counts (images, pixel values, pixels) are whole numbers, so their axes get integer ticks.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hvdweather.axes import whole_number_ticks

_CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue")
# A class's look in the scatter: tab10's ten colours, then ten more that differ from them and from each
# other in hue or lightness (not tab20's pale twins of tab10, which were hard to tell apart), and markers
# cycling at another period, so neighbours differ in both.
_CLASS_COLOURS = tuple(f"C{i}" for i in range(10)) + ("black", "gold", "navy", "magenta", "lime", "maroon",
                                                      "teal", "darkkhaki", "indigo", "sandybrown")
_CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def class_style(label: int) -> tuple[str, str]:
    """(colour, marker) of class `label` in the scatter: its own colour for up to 20 classes (WEAPD's 11
    included), and distinct colour-marker pairs beyond that."""
    return _CLASS_COLOURS[label % len(_CLASS_COLOURS)], _CLASS_MARKERS[label % len(_CLASS_MARKERS)]


def plot_histograms(histograms: np.ndarray, class_names: tuple[str, ...]):
    """Per-class RGB histograms, each normalised to fractions so classes of any size compare."""
    plt = _pyplot()
    cols = min(4, len(class_names))
    rows = math.ceil(len(class_names) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), sharex=True, squeeze=False)
    for ax, name, per_channel in zip(axes.flat, class_names, histograms):
        for counts, colour, channel in zip(per_channel, _CHANNEL_COLOURS, "RGB"):
            total = counts.sum()
            ax.plot(counts / total if total else counts, color=colour, linewidth=0.9, label=channel)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([0, 64, 128, 192, 255])  # pixel values are whole numbers 0..255
        ax.tick_params(labelsize=7)
    spare = list(axes.flat)[len(class_names):]
    for ax in spare:
        ax.axis("off")
    figure.supxlabel("pixel value")
    figure.supylabel("fraction of the class's pixels")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if spare:  # the legend goes in the grid itself, in the first empty panel, next to the curves it explains
        spare[0].legend(handles, labels, loc="center", fontsize=9, title="channel", title_fontsize=9)
        figure.tight_layout()
    else:  # a full grid: one row above the panels
        figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()))
        figure.legend(handles, labels, loc="upper center", fontsize=8, ncol=3, title="channel",
                      title_fontsize=8, bbox_to_anchor=(0.5, 1.0), frameon=False)
    return figure


def plot_class_counts(counts: np.ndarray, class_names: tuple[str, ...]):
    """Images per class as bars, largest first, with the mean as a dashed line."""
    plt = _pyplot()
    order = np.argsort(-counts, kind="stable")
    figure, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(class_names) + 1), 3.4))
    bars = ax.bar([class_names[i] for i in order], counts[order], color="tab:blue")
    ax.bar_label(bars, fontsize=7)
    ax.axhline(counts.mean(), color="grey", linestyle="--", linewidth=1)  # named in the title, not a legend
    ratio = counts.max() / max(1, counts.min())
    ax.set_title(f"images per class (dashed: mean {counts.mean():.1f}; largest / smallest = {ratio:.2f})",
                 fontsize=10)
    ax.set_ylabel("images")
    whole_number_ticks(ax.yaxis)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", fontsize=8)
    figure.tight_layout()
    return figure


def plot_image_sizes(widths: np.ndarray, heights: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]):
    """Width vs height of every decoded image, one colour-marker pair per class (see `class_style`)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, name in enumerate(class_names):
        mine = labels == label
        colour, marker = class_style(label)
        ax.scatter(widths[mine], heights[mine], s=12, alpha=0.75, color=colour, marker=marker, label=name,
                   linewidths=0)
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    whole_number_ticks(ax.xaxis)
    whole_number_ticks(ax.yaxis)
    ax.set_title("image sizes", fontsize=10)
    ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def write_plots(out: str | Path, totals) -> None:
    """Save the three PNGs under `out`."""
    plt = _pyplot()
    out, names = Path(out), totals.catalog.class_names
    decoded = totals.decoded()
    labels = np.asarray(totals.catalog.labels)[decoded]
    figures = {"histograms.png": plot_histograms(totals.histograms, names),
               "class_counts.png": plot_class_counts(np.bincount(labels, minlength=len(names)), names),
               "image_sizes.png": plot_image_sizes(totals.sizes[decoded, 0], totals.sizes[decoded, 1],
                                                   labels, names)}
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
