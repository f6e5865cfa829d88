"""A procedurally drawn WEAPD-like data set, the embedded default for the demo, tests and benchmarks.

Each class has its own kind of scene (jagged bolts for lightning, spectral arcs for rainbow, streaks for
rain...) drawn with random palette, placement, density and noise, at varied sizes and aspect ratios,
saved as a mix of JPEG and PNG. Classes share ingredients (white dots in snow and hail, lines in rain and
glaze), so telling them apart takes real training. Same seed, same bytes.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from hvdweather.errors import DataError

WEAPD_CLASSES = ("dew", "fogsmog", "frost", "glaze", "hail", "lightning", "rain", "rainbow", "rime",
                 "sandstorm", "snow")

Rng = np.random.Generator


def _jitter(rng: Rng, rgb: tuple[int, int, int], amount: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _gradient(rng: Rng, size: tuple[int, int], top: tuple, bottom: tuple) -> Image.Image:
    w, h = size
    t = np.linspace(0, 1, h)[:, None, None]
    a, b = np.array(_jitter(rng, top)), np.array(_jitter(rng, bottom))
    rows = a * (1 - t) + b * t
    return Image.fromarray(np.broadcast_to(rows, (h, w, 3)).astype(np.uint8), "RGB")


def _dots(draw: ImageDraw.ImageDraw, rng: Rng, size, count, radius, colour) -> None:
    w, h = size
    for _ in range(count):
        x, y, r = rng.integers(0, w), rng.integers(0, h), rng.uniform(*radius)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, colour, 20))


def _lines(draw, rng: Rng, size, count, length, angle_deg, colour, width=1) -> None:
    w, h = size
    for _ in range(count):
        x, y = rng.integers(0, w), rng.integers(0, h)
        angle = np.deg2rad(angle_deg + rng.normal(0, 6))
        dx, dy = np.cos(angle) * rng.uniform(*length), np.sin(angle) * rng.uniform(*length)
        draw.line([x, y, x + dx, y + dy], fill=_jitter(rng, colour, 20), width=width)


def _polyline(draw, rng: Rng, start, steps, step_len, spread, colour, width) -> None:
    x, y = start
    for _ in range(steps):
        nx, ny = x + rng.normal(0, spread), y + rng.uniform(*step_len)
        draw.line([x, y, nx, ny], fill=colour, width=width)
        x, y = nx, ny


def _dew(rng, size):
    img = _gradient(rng, size, (40, 110, 40), (20, 70, 30))
    draw = ImageDraw.Draw(img)
    _dots(draw, rng, size, rng.integers(30, 80), (2, 9), (190, 220, 200))
    _dots(draw, rng, size, rng.integers(20, 50), (1, 2), (250, 250, 250))
    return img


def _fogsmog(rng, size):
    img = _gradient(rng, size, (170, 170, 165), (120, 120, 115))
    draw = ImageDraw.Draw(img)
    _dots(draw, rng, size, rng.integers(3, 8), (20, 60), (100, 100, 100))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(6, 14)))


def _frost(rng, size):
    img = _gradient(rng, size, (150, 180, 220), (90, 120, 170))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(8, 20)):
        start = (rng.integers(0, size[0]), rng.integers(0, size[1]))
        _polyline(draw, rng, start, 6, (-12, 12), 10, _jitter(rng, (235, 245, 255), 15), 1)
    return img


def _glaze(rng, size):
    img = _gradient(rng, size, (60, 70, 90), (140, 150, 170))
    draw = ImageDraw.Draw(img)
    _lines(draw, rng, size, rng.integers(4, 10), (30, 120), 0, (220, 230, 240), width=3)
    return img.filter(ImageFilter.GaussianBlur(1.5))


def _hail(rng, size):
    img = _gradient(rng, size, (90, 110, 90), (60, 80, 60))
    draw = ImageDraw.Draw(img)
    _dots(draw, rng, size, rng.integers(15, 40), (5, 12), (235, 235, 230))
    return img


def _lightning(rng, size):
    img = _gradient(rng, size, (20, 15, 50), (50, 40, 90))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):
        start = (rng.integers(size[0] // 5, 4 * size[0] // 5), 0)
        _polyline(draw, rng, start, 14, (8, 25), 12, _jitter(rng, (230, 220, 255), 20), 3)
    return img


def _rain(rng, size):
    img = _gradient(rng, size, (110, 120, 135), (70, 80, 95))
    draw = ImageDraw.Draw(img)
    _lines(draw, rng, size, rng.integers(80, 200), (10, 30), 75, (190, 200, 215))
    return img


def _rainbow(rng, size):
    img = _gradient(rng, size, (90, 150, 220), (160, 200, 235))
    draw = ImageDraw.Draw(img)
    w, h = size
    cx, cy, r = rng.integers(0, w), h + rng.integers(0, h // 3), rng.uniform(0.6, 1.1) * max(w, h)
    spectrum = [(230, 40, 40), (240, 140, 30), (240, 230, 40), (50, 190, 60), (40, 90, 220), (130, 50, 190)]
    for i, colour in enumerate(spectrum):
        ri = r - i * 6
        draw.arc([cx - ri, cy - ri, cx + ri, cy + ri], 180, 360, fill=_jitter(rng, colour, 25), width=6)
    return img.filter(ImageFilter.GaussianBlur(1.2))


def _rime(rng, size):
    img = _gradient(rng, size, (60, 60, 65), (35, 35, 40))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 7)):
        x0, y0 = rng.integers(0, size[0]), rng.integers(0, size[1])
        x1, y1 = x0 + rng.normal(0, 80), y0 + rng.normal(0, 80)
        draw.line([x0, y0, x1, y1], fill=(25, 20, 15), width=4)
        for t in rng.uniform(0, 1, 25):
            x, y = x0 + t * (x1 - x0) + rng.normal(0, 4), y0 + t * (y1 - y0) + rng.normal(0, 4)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_jitter(rng, (240, 240, 245), 10))
    return img


def _sandstorm(rng, size):
    img = _gradient(rng, size, (200, 140, 70), (150, 90, 40))
    draw = ImageDraw.Draw(img)
    _lines(draw, rng, size, rng.integers(20, 50), (40, 150), 0, (215, 165, 100), width=2)
    return img.filter(ImageFilter.GaussianBlur(2))


def _snow(rng, size):
    img = _gradient(rng, size, (150, 155, 165), (225, 228, 235))
    draw = ImageDraw.Draw(img)
    _dots(draw, rng, size, rng.integers(60, 160), (1, 3), (255, 255, 255))
    return img


PAINTERS: dict[str, Callable[[Rng, tuple[int, int]], Image.Image]] = {
    "dew": _dew, "fogsmog": _fogsmog, "frost": _frost, "glaze": _glaze, "hail": _hail,
    "lightning": _lightning, "rain": _rain, "rainbow": _rainbow, "rime": _rime,
    "sandstorm": _sandstorm, "snow": _snow,
}


def _add_noise(rng: Rng, img: Image.Image) -> Image.Image:
    pixels = np.asarray(img, dtype=np.int16)
    noise = rng.normal(0, rng.uniform(2, 10), pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


def make_image(class_name: str, rng: Rng) -> Image.Image:
    """Draw one image of `class_name` at a random size and aspect ratio."""
    size = (int(rng.integers(180, 420)), int(rng.integers(150, 360)))
    return _add_noise(rng, PAINTERS[class_name](rng, size))


def make_synthetic_dataset(out: str | Path, images_per_class: int = 40, seed: int = 0,
                           classes: tuple[str, ...] = WEAPD_CLASSES) -> list[Path]:
    """Write `images_per_class` images into out/<class>/ (about 70% JPEG, 30% PNG); return the paths."""
    if images_per_class < 1:
        raise ValueError(f"--images-per-class must be >= 1, got {images_per_class}")
    out = Path(out)
    written = []
    for index, name in enumerate(classes):
        rng = np.random.default_rng([seed, index])  # per-class stream: adding a class changes no other
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            image = make_image(name, rng)
            if rng.uniform() < 0.7:
                path = out / name / f"{name}_{i:04d}.jpg"
                image.save(path, "JPEG", quality=int(rng.integers(80, 96)))
            else:
                path = out / name / f"{name}_{i:04d}.png"
                image.save(path, "PNG")
            written.append(path)
    return written


def clear_synthetic(out: str | Path, classes: tuple[str, ...] = WEAPD_CLASSES) -> None:
    """Remove a synthetic set made by `make_synthetic_dataset` from `out`. Anything else there (another
    folder, a file of another name: a real data set, say) is refused in one line and nothing is removed."""
    out = Path(out)
    owned = [re.compile(rf"{re.escape(name)}_\d{{4,}}\.(jpg|png)") for name in classes]
    foreign = [entry for entry in out.iterdir() if not (entry.is_dir() and entry.name in classes)]
    for index, name in enumerate(classes):
        folder = out / name
        if folder.is_dir():
            foreign += [f for f in folder.iterdir() if not (f.is_file() and owned[index].fullmatch(f.name))]
    if foreign:
        raise DataError(f"OUT {out}: --overwrite replaces only a synthetic set, and {foreign[0]} is not part of "
                        "one; choose another OUT (nothing was removed)")
    for name in classes:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
