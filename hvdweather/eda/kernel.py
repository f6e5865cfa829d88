"""The per-image EDA kernel and the per-chunk partial sums it feeds.

Every image is decoded once at full size (`hvdweather.data.decode.open_rgb`: Pillow, any mode to RGB) and its
R, G and B histograms come from one call into Pillow's C code on the decoded image
(`Image.histogram()` returns all 768 counts), instead of the reference PyTorch weather project's
`getchannel(c).histogram()`, which copies each channel out and walks the image three times.

Why not one `np.bincount` (the "vectorised numpy" idea): measured on this project's images it is
several times *slower* than even that project's per-channel PIL histogram, because it first widens every
uint8 value to a 64-bit index. `bincount_histograms` stays as an independent reference for the tests
and as a row of `hvdweather-bench eda`, which times all three kernels on the same images.

Each image also gets its fingerprints (`hvdweather.data.fingerprint`: the file's SHA-256 and ImageHash's
pHash, the very values training's split groups by), from which the EDA reports exact and near duplicates.

Everything summed across images is an integer (counts, pixel values, sizes), so partial sums can be
combined in any order, by any executor, and give bit-identical totals; the float statistics are
computed once, from those totals.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from hvdweather.data.decode import failure_reason, open_rgb
from hvdweather.data.fingerprint import file_sha256, perceptual_hash

HIST_BINS = 256
CHANNELS = ("R", "G", "B")
# Channel c's values land in bins [256c, 256c + 256) of one bincount.
_CHANNEL_OFFSETS = np.arange(3, dtype=np.intp) * HIST_BINS


def rgb_histograms(rgb: Image.Image) -> np.ndarray:
    """(3, 256) int64 counts of the R, G and B values of an RGB Pillow image, in one C call."""
    return np.fromiter(rgb.histogram(), np.int64, 3 * HIST_BINS).reshape(3, HIST_BINS)


def bincount_histograms(pixels: np.ndarray) -> np.ndarray:
    """The same counts from an (H, W, 3) uint8 array with one `np.bincount` (reference; slower)."""
    index = pixels.reshape(-1, 3).astype(np.intp)
    index += _CHANNEL_OFFSETS
    return np.bincount(index.ravel(), minlength=3 * HIST_BINS).reshape(3, HIST_BINS)


def pil_channel_histograms(path: str) -> np.ndarray:
    """The reference PyTorch weather project's kernel: open, convert to RGB, then one PIL `histogram()`
    per channel; (3, 256)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return np.array([rgb.getchannel(c).histogram() for c in range(3)], dtype=np.int64)


@dataclass(frozen=True)
class ImageStats:
    """What the kernel learns from one file: histograms, size and format, or why it failed."""

    histograms: np.ndarray | None  # (3, 256) int64; None when the file does not decode
    width: int = 0
    height: int = 0
    format: str = ""  # Pillow's format name (JPEG, PNG...), not the file extension
    error: str = ""  # one-line reason when the file does not decode
    sha256: str = ""  # of the file's bytes ("" when not asked for)
    phash: int | None = None  # ImageHash's 64-bit pHash (None when not asked for)


def analyse_image(path: str, fingerprints: bool = False) -> ImageStats:
    """Decode `path` once at full size and histogram it (and fingerprint it); a bad file gives a
    reason, never raises."""
    try:
        with open_rgb(path) as (rgb, image_format):
            stats = ImageStats(rgb_histograms(rgb), rgb.width, rgb.height, image_format)
        if fingerprints:  # the split's own functions, so EDA and training agree on every group
            stats = dataclasses.replace(stats, sha256=file_sha256(path), phash=perceptual_hash(path))
        return stats
    except Exception as exc:  # Pillow raises many types: UnidentifiedImageError, OSError, SyntaxError...
        return ImageStats(None, error=failure_reason(path, exc))


@dataclass
class Partial:
    """Integer sums over some of the images; `merge` and the MPI reduction add them up."""

    histograms: np.ndarray  # (classes, 3, 256) int64 per-class channel histograms
    index: list[int] = field(default_factory=list)  # catalog indices of the images decoded here
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each of those
    formats: Counter = field(default_factory=Counter)  # (label, format) -> images
    skipped: dict[int, str] = field(default_factory=dict)  # catalog index -> reason
    fingerprints: dict[int, tuple[str, int]] = field(default_factory=dict)  # catalog index -> (sha256, phash)

    @classmethod
    def empty(cls, num_classes: int) -> Partial:
        return cls(np.zeros((num_classes, 3, HIST_BINS), np.int64))


@dataclass(frozen=True)
class ChunkTask:
    """A chunk of images for one worker call: picklable, so it travels to pool processes."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    index: tuple[int, ...]  # positions of these images in the catalog
    num_classes: int
    fingerprints: bool = False  # also hash every file (the duplicate report)


def analyse_chunk(task: ChunkTask) -> Partial:
    """Run the kernel over a chunk and sum its results per class."""
    partial = Partial.empty(task.num_classes)
    for path, label, position in zip(task.paths, task.labels, task.index):
        stats = analyse_image(path, task.fingerprints)
        if stats.histograms is None:
            partial.skipped[position] = stats.error
            continue
        partial.histograms[label] += stats.histograms
        partial.index.append(position)
        partial.sizes.append((stats.width, stats.height))
        partial.formats[(label, stats.format)] += 1
        if task.fingerprints:
            partial.fingerprints[position] = (stats.sha256, stats.phash)
    return partial


def merge(partials: list[Partial], num_classes: int) -> Partial:
    """Add partial sums (integer sums: the order does not change the result)."""
    total = Partial.empty(num_classes)
    for part in partials:
        total.histograms += part.histograms
        total.index.extend(part.index)
        total.sizes.extend(part.sizes)
        total.formats.update(part.formats)
        total.skipped.update(part.skipped)
        total.fingerprints.update(part.fingerprints)
    return total


def dense_sizes(partial: Partial, num_images: int) -> np.ndarray:
    """(num_images, 2) int64 width, height in catalog order; 0 for images not decoded in `partial`.

    Each image is decoded by exactly one worker, so summing these arrays across workers (an MPI
    reduction on a plain buffer) puts every size in its place.
    """
    sizes = np.zeros((num_images, 2), np.int64)
    if partial.index:
        sizes[np.asarray(partial.index)] = np.asarray(partial.sizes, np.int64)
    return sizes
