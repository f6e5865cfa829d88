"""Model geometry that checks need before TensorFlow loads: the weather CNN's layer plan and the smallest
input it accepts. `hvdweather.model` builds from these; config validation, prepare and the benchmarks
check against them, so the number has one home."""
from __future__ import annotations

# (filters, kernel, pool) per conv block of the reference PyTorch weather project's ConvolutionalModel;
# pool 0 = no pooling.
WEATHER_CNN_BLOCKS: tuple[tuple[int, int, int], ...] = ((6, 4, 5), (16, 5, 2), (32, 8, 4), (120, 4, 0))


def _min_size(blocks: tuple[tuple[int, int, int], ...]) -> int:
    """The smallest square input for which every valid conv and pool still has a pixel to work on."""
    size = 1
    for _, kernel, pool in reversed(blocks):
        size = size * max(pool, 1) + kernel - 1
    return size


WEATHER_CNN_MIN_IMAGE_SIZE: int = _min_size(WEATHER_CNN_BLOCKS)  # 253 pixels
