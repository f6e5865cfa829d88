"""--normalize: the per-channel (mean, std) the model subtracts and divides by, on the pipeline's [0, 1]
pixels. The constants become a fixed Normalization layer in front of the model
(`hvdweather.models.create_model`), so predict and export, which feed [0, 1] pixels, need not know.

    none      no layer: the model sees [0, 1]
    imagenet  torchvision's ImageNet constants
    dataset   the training split's own mean/std: each rank sums its shard, the sums are combined over
              ranks, so every rank gets the same floats; or read from an hvdweather-eda summary.json (--stats)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdweather.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Moments = tuple[tuple[float, ...], tuple[float, ...]]


def channel_sums(decoded: tf.data.Dataset) -> np.ndarray:
    """(3, 3) float64 [pixel count, sum, sum of squares] per channel over uint8 (image, label) pairs,
    in 0-255 units. float64 sums of integers stay exact up to 2^53, far above any data set's sum."""
    total = np.zeros((3, 3), np.float64)
    for images, _ in decoded.batch(64).prefetch(2):
        pixels = tf.reshape(tf.cast(images, tf.float64), [-1, 3])
        total += np.stack([np.full(3, float(pixels.shape[0])), tf.reduce_sum(pixels, 0).numpy(),
                           tf.reduce_sum(pixels * pixels, 0).numpy()], axis=1)
    return total


def moments_from_sums(parts: list[np.ndarray]) -> Moments:
    """Mean and population std per channel in [0, 1] units from every rank's `channel_sums` (summed in
    rank order, so every rank computes the same floats)."""
    total = np.sum(np.stack(parts), axis=0)
    n, s1, s2 = total[:, 0], total[:, 1], total[:, 2]
    if not n.all():
        raise ConfigError("--normalize dataset: the training split has no pixels to measure")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    return tuple(float(m / 255) for m in mean), tuple(float(max(s, 1e-3) / 255) for s in std)


def moments_from_eda(path: str) -> Moments:
    """mean_unit/std_unit of all classes from an hvdweather-eda summary.json."""
    try:
        group = json.loads(Path(path).read_text())["all"]
        return tuple(map(float, group["mean_unit"])), tuple(float(max(s, 1e-3)) for s in group["std_unit"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--stats {path}: not an hvdweather-eda summary.json ({exc.__class__.__name__})") from None
