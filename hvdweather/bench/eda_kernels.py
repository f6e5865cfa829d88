"""The three histogram kernels `hvdweather-bench eda` times on the same images (its "kernel" part): the
reference PyTorch project's PIL loop, the EDA's own (hvdweather.eda.kernel) and numpy's bincount."""
from __future__ import annotations

import time

import numpy as np

from hvdweather.bench.eda_report import REFERENCE


def kernel_sample(data: str, count: int) -> list[str]:
    """`count` decodable images spread evenly over the (class-sorted) data set."""
    from hvdweather.data.discovery import discover, find_unreadable

    paths = discover(data).paths
    picked = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int))]
    bad = find_unreadable(picked)
    return [p for p in picked if p not in bad]


def reference_kernel_pass(paths: list[str]) -> np.ndarray:
    """The reference PyTorch project's EDA loop: PIL convert, `getchannel(c).histogram()` per channel,
    lists summed at the end."""
    from PIL import Image

    histograms: dict[str, list[list[int]]] = {"R": [], "G": [], "B": []}
    for path in paths:
        with Image.open(path) as img:
            img_rgb = img.convert("RGB")
            for channel, color in zip(range(3), ["R", "G", "B"]):
                histograms[color].append(img_rgb.getchannel(channel).histogram())
    return np.array([[sum(x) for x in zip(*histograms[color])] for color in "RGB"], np.int64)


OURS = "hvdweather: Image.histogram(), all channels in one call"
NUMPY = "numpy: one np.bincount for all channels"


def ours_kernel_pass(paths: list[str]) -> np.ndarray:
    """The EDA's kernel: `open_rgb` once per image, one C histogram call, summed into int64."""
    from hvdweather.data.decode import open_rgb
    from hvdweather.eda.kernel import rgb_histograms

    total = np.zeros((3, 256), np.int64)
    for path in paths:
        with open_rgb(path) as (rgb, _):
            total += rgb_histograms(rgb)
    return total


def numpy_kernel_pass(paths: list[str]) -> np.ndarray:
    """The numpy alternative: `load_rgb` to an array, one np.bincount, summed into int64."""
    from hvdweather.data.decode import load_rgb
    from hvdweather.eda.kernel import bincount_histograms

    total = np.zeros((3, 256), np.int64)
    for path in paths:
        total += bincount_histograms(load_rgb(path))
    return total


def histogram_only_pass(paths: list[str]) -> tuple[dict[str, float], bool]:
    """Seconds of the histogram step alone (decoding untimed) per kernel; do all totals agree?

    The reference kernel keeps its per-channel lists and sums them at the end, as the reference project did.
    """
    from PIL import Image

    from hvdweather.eda.kernel import bincount_histograms, rgb_histograms

    seconds = {REFERENCE: 0.0, OURS: 0.0, NUMPY: 0.0}
    lists: dict[int, list[list[int]]] = {0: [], 1: [], 2: []}
    ours, numpy_total = np.zeros((3, 256), np.int64), np.zeros((3, 256), np.int64)
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # a decoded copy that outlives the file
        pixels = np.asarray(rgb)
        start = time.perf_counter()
        for channel in range(3):
            lists[channel].append(rgb.getchannel(channel).histogram())
        reference_end = time.perf_counter()
        ours += rgb_histograms(rgb)
        ours_end = time.perf_counter()
        numpy_total += bincount_histograms(pixels)
        seconds[REFERENCE] += reference_end - start
        seconds[OURS] += ours_end - reference_end
        seconds[NUMPY] += time.perf_counter() - ours_end
    start = time.perf_counter()
    combined = [[sum(x) for x in zip(*lists[channel])] for channel in range(3)]  # the reference project's combine step
    seconds[REFERENCE] += time.perf_counter() - start
    return seconds, ours.tolist() == combined == numpy_total.tolist()
