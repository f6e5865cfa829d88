"""The training decoder: native TensorFlow ops for plain JPEG and 8-bit PNG, Pillow for the rest.

Native ops run outside Python's GIL, so tf.data's parallel map really uses every core; Pillow
inside `tf.numpy_function` holds the GIL for its Python parts and measured no faster on 2 threads
than on 1 (docs/benchmarks.md). Odd files (CMYK JPEG, 16-bit PNG, WEBP, BMP, GIF...) are rare and
go through `hvdweather.data.decode.load_rgb`, which handles every mode.

Large JPEGs are decoded at a reduced DCT scale (1/2, 1/4, 1/8) that still covers the target
size, like Pillow's draft mode; resizes that shrink a side more than 2x are antialiased.
"""
from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from hvdweather.data.decode import check_image, load_rgb
from hvdweather.data.images import JPEG_MAGIC, PNG_MAGIC
from hvdweather.host import call_catching_stderr

_RATIOS = (1, 2, 4, 8)


def _pil(path: bytes | np.ndarray, image_size: np.ndarray) -> np.ndarray:
    # Inside tf.data numpy_function passes bytes; called eagerly it passes a 0-d array.
    name = (path.item() if isinstance(path, np.ndarray) else path).decode()
    try:
        return load_rgb(name, int(image_size))
    except Exception as exc:  # files are checked before training; one changed since must not crash it
        print(f"warning: {name}: {exc.__class__.__name__}: {exc}; using a black image", file=sys.stderr)
        return np.zeros((int(image_size), int(image_size), 3), np.uint8)


def _with_pillow(path: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.numpy_function(_pil, [path, image_size], tf.uint8, stateful=False)
    image.set_shape((image_size, image_size, 3))
    return image


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    # Antialiasing costs about 2x here; below a 2x reduction plain bilinear samples every pixel anyway.
    shape = tf.shape(image)
    reduce_a_lot = tf.maximum(shape[0], shape[1]) > 2 * image_size

    def bilinear(antialias: bool) -> tf.Tensor:
        return tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=antialias)

    resized = tf.cond(reduce_a_lot, lambda: bilinear(True), lambda: bilinear(False))
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _jpeg(raw: tf.Tensor, image_size: int) -> tf.Tensor:
    shape = tf.io.extract_jpeg_shape(raw)
    shortest = tf.minimum(shape[0], shape[1])
    # The largest DCT reduction that keeps both sides >= image_size (no upsampling after it).
    index = tf.reduce_sum(tf.cast(shortest >= tf.constant([2, 4, 8]) * image_size, tf.int32))
    branches = [lambda r=r: tf.io.decode_jpeg(raw, channels=3, ratio=r) for r in _RATIOS]
    return _resize(tf.switch_case(index, branches), image_size)


def _png(raw: tf.Tensor, image_size: int) -> tf.Tensor:
    return _resize(tf.io.decode_png(raw, channels=3, dtype=tf.uint8), image_size)


def _byte(raw: tf.Tensor, position: int) -> tf.Tensor:
    return tf.strings.substr(raw, position, 1)



def _native_or(raw: tf.Tensor, image_size: int, other: Callable[[], tf.Tensor]) -> tf.Tensor:
    """Plain JPEG and 8-bit PNG bytes by native ops; `other()` decodes every other file."""
    long_enough = tf.strings.length(raw) >= 32

    def jpeg_or_other() -> tf.Tensor:
        components = tf.io.extract_jpeg_shape(raw)[2]
        plain = tf.logical_or(components == 1, components == 3)
        return tf.cond(plain, lambda: _jpeg(raw, image_size), other)

    def png_or_other() -> tf.Tensor:
        eight_bit = tf.logical_and(tf.strings.substr(raw, 0, 8) == PNG_MAGIC, _byte(raw, 24) == b"\x08")
        return tf.cond(eight_bit, lambda: _png(raw, image_size), other)

    def by_content() -> tf.Tensor:
        return tf.cond(tf.strings.substr(raw, 0, 3) == JPEG_MAGIC, jpeg_or_other, png_or_other)

    image = tf.cond(long_enough, by_content, other)
    image.set_shape((image_size, image_size, 3))
    return image


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read and decode one file to uint8 [image_size, image_size, 3] inside tf.data (or eagerly)."""
    return _native_or(tf.io.read_file(path), image_size, lambda: _with_pillow(path, image_size))


def decode_bytes(raw: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image bytes to uint8 [image_size, image_size, 3] with TensorFlow ops only, so that a
    SavedModel can hold it (hvdweather-export). Plain JPEG and 8-bit PNG give exactly `decode_image`'s
    pixels. Every other file goes through `tf.io.decode_image` and the same resize instead of Pillow:
    close to training's pixels, not identical (a CMYK JPEG differs by a few grey levels); a format
    TensorFlow cannot read (WEBP) raises InvalidArgumentError."""
    def any_format() -> tf.Tensor:
        return _resize(tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False), image_size)

    return _native_or(raw, image_size, any_format)


@functools.cache
def _eager_decoder(image_size: int):
    return tf.function(lambda path: decode_image(path, image_size),
                       input_signature=[tf.TensorSpec([], tf.string)])


def decode_file(path: str, image_size: int) -> np.ndarray:
    """The training pixels of one file, outside tf.data (prepare and tests use it): raises on failure."""
    return _eager_decoder(image_size)(tf.constant(str(path))).numpy()


# libjpeg's warnings that mean it made pixels up: it goes on decoding a damaged JPEG (a file cut or
# zeroed in the middle), fills the missing blocks in, and TensorFlow returns that image after printing
# the warning on stderr with no file name. Pillow says nothing. Other warnings ("N extraneous bytes before
# marker") leave the pixels whole; those are passed on with the file's name.
LIBJPEG_MADE_UP = ("Corrupt JPEG data: premature end of data segment", "Corrupt JPEG data: bad Huffman code",
                   "Premature end of JPEG file", "instead of RST")
_ONE_LIBJPEG_AT_A_TIME = threading.Lock()  # its warnings go to the process's one stderr, in any thread


def _decode_hearing_libjpeg(path: str, image_size: int) -> tuple[np.ndarray, str]:
    """decode_file's pixels and the first of libjpeg's LIBJPEG_MADE_UP warnings it printed ('' if none)."""
    with _ONE_LIBJPEG_AT_A_TIME:
        pixels, text = call_catching_stderr(lambda: decode_file(path, image_size))
    made_up = [line.strip() for line in text.splitlines() if any(m in line for m in LIBJPEG_MADE_UP)]
    for line in text.splitlines():
        if line.strip() and line.strip() not in made_up:
            print(f"warning: {path}: {line.strip()}", file=sys.stderr)
    return pixels, made_up[0] if made_up else ""


def training_pixels(path: str, image_size: int) -> tuple[np.ndarray | None, str]:
    """(pixels, '') as training decodes them, or (None, one-line reason): for offline preparation. A JPEG
    whose missing data libjpeg filled in is a reason too (training would learn from made-up blocks)."""
    reason = check_image(path)
    if reason:
        return None, reason
    try:
        pixels, made_up = _decode_hearing_libjpeg(path, image_size)
    except tf.errors.OpError as exc:
        return None, f"TensorFlow decoder: {exc.message.splitlines()[0]}"
    if made_up:
        return None, f"damaged JPEG, decoded only in part (libjpeg: {made_up})"
    return pixels, ""


def check_decodable(path: str) -> str:
    """'' if both Pillow and the training decoder read `path` fully, else a one-line reason.

    Training runs after this check, so a file TensorFlow's decoder would reject mid-epoch is
    skipped and reported here instead.
    """
    return training_pixels(path, 32)[1]
