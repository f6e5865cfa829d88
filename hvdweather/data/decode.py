"""Decode any supported image file to an RGB uint8 array with Pillow: every mode, every format.

The EDA uses it at full size, the file check before training uses it first (its reasons are the
clearest), and the training decoder (`decode_tf`) falls back on it for files TensorFlow's native ops
do not cover. Pillow releases the GIL only inside its C decode and resize, so for throughput
processes beat threads (measured in docs/benchmarks.md).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

# A truncated file must fail loudly so that it is skipped and reported, never half-decoded.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; 16-bit grayscale is scaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> L conversion clips at 255; shifting keeps the full range.
        wide = np.asarray(image, dtype=np.uint32) >> 8
        return Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        scaled = np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids Pillow's warning for palette images with transparency
    return image.convert("RGB")


@contextmanager
def open_rgb(path: str | Path, image_size: int | None = None) -> Iterator[tuple[Image.Image, str]]:
    """Decode `path` (first frame of animations) to an RGB Pillow image, resized to a square if
    `image_size`; yields (image, the file's format name). The image is valid only inside the `with`:
    Pillow frees it when the file closes. For callers that use Pillow's own C routines on the
    decoded image (the EDA's one-call histogram) without copying it into numpy first.

    JPEGs are decoded at the smallest DCT scale that is still at least `image_size` (Pillow's draft
    mode): several times less work for large photos, and the bilinear resize then does the rest.
    """
    with Image.open(path) as image:
        if image_size and image.format == "JPEG":
            image.draft("RGB", (image_size, image_size))
        image.seek(0)
        rgb = to_rgb(image)
        if image_size and rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.BILINEAR)
        yield rgb, image.format or "unknown"


def load_rgb(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Decode `path` to an RGB uint8 array (H, W, 3); resized to a square if `image_size` (see `open_rgb`)."""
    with open_rgb(path, image_size) as (rgb, _):
        return np.asarray(rgb, dtype=np.uint8)


def check_image(path: str | Path) -> str:
    """Return '' if `path` decodes fully, else a one-line reason (decoded small, so it is cheap)."""
    try:
        load_rgb(path, image_size=32)
        return ""
    except Exception as exc:  # Pillow raises many types: UnidentifiedImageError, OSError, SyntaxError...
        return failure_reason(path, exc)


def failure_reason(path: str | Path, exc: Exception) -> str:
    """One line saying why `path` does not decode (an empty file says so rather than 'cannot identify'):
    the words of skipped.csv, whether training's check or the EDA found the file bad."""
    if os.path.exists(path) and os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {message}".strip().rstrip(":")
