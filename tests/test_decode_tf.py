"""The training decoder: native TensorFlow for plain JPEG / 8-bit PNG, Pillow for every other file;
both routes give the right RGB, and the pre-training check catches what would fail mid-epoch."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hvdweather.data.decode import load_rgb
from hvdweather.data.decode_tf import check_decodable, decode_file, training_pixels

RED = (200, 30, 40)


def _save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return str(path)


@pytest.mark.parametrize("name,make,kw", [
    ("rgb.jpg", lambda: Image.new("RGB", (300, 200), RED), {"quality": 95}),
    ("gray.jpg", lambda: Image.new("L", (300, 200), 90), {"quality": 95}),
    ("rgb.png", lambda: Image.new("RGB", (40, 30), RED), {}),
    ("rgba.png", lambda: Image.new("RGBA", (40, 30), (*RED, 7)), {}),
    ("pal.png", lambda: Image.new("RGB", (40, 30), RED).convert("P", palette=Image.ADAPTIVE), {}),
    ("cmyk.jpg", lambda: Image.new("CMYK", (64, 64), (0, 255, 255, 0)), {"quality": 100}),
    ("wide.png", lambda: Image.fromarray(np.full((30, 40), 0x8000, np.uint16)), {}),
    ("x.webp", lambda: Image.new("RGB", (40, 30), RED), {"lossless": True}),
    ("x.bmp", lambda: Image.new("RGB", (40, 30), RED), {}),
    ("x.gif", lambda: Image.new("RGB", (40, 30), RED), {}),
])
def test_every_route_gives_the_pillow_colours(tmp_path, name, make, kw):
    path = _save(tmp_path, name, make(), **kw)
    ours, reference = decode_file(path, 32), load_rgb(path, 32)
    assert ours.shape == (32, 32, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - reference).max() <= 8, name


def test_large_jpeg_uses_reduced_dct_scale_and_stays_close(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (24, 32, 3)), np.ones((64, 64, 1))).astype(np.uint8)  # 1536x2048
    path = _save(tmp_path, "big.jpg", Image.fromarray(smooth), quality=92)
    ours, reference = decode_file(path, 256), load_rgb(path, 256)
    assert np.abs(ours.astype(int) - reference).mean() < 4


def test_check_catches_broken_files_and_passes_good_ones(tmp_path):
    good = _save(tmp_path, "good.jpg", Image.new("RGB", (400, 400), RED))
    truncated = tmp_path / "half.jpg"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    assert check_decodable(good) == ""
    assert "truncated" in check_decodable(str(truncated)).lower()
    assert "empty" in check_decodable(str(empty))
    pixels, reason = training_pixels(str(truncated), 64)
    assert pixels is None and reason


def test_bad_png_body_is_caught_by_the_training_decoder_check(tmp_path):
    """A PNG whose pixel data is damaged after the header: the check must reject it before training."""
    path = tmp_path / "damaged.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    assert check_decodable(str(path)) != ""


def cut_in_the_middle(source: bytes) -> bytes:
    """A JPEG whose scan data is cut in the middle but which still ends with its end-of-image marker: libjpeg
    warns "Corrupt JPEG data: premature end of data segment" and fills the missing blocks in."""
    start, end = source.find(b"\xff\xda"), source.rfind(b"\xff\xd9")
    return source[: start + (end - start) // 2] + source[end:]


def test_a_jpeg_cut_in_the_middle_is_caught_with_its_name(tmp_path, capfd):
    """Issue 25: both decoders returned an image for it and TensorFlow printed libjpeg's warning with no
    file name, so it was trained on. Proven to fail (reason '') against the code before the fix."""
    rng = np.random.default_rng(2)
    good = _save(tmp_path, "good.jpg", Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
                 quality=90)
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(cut_in_the_middle(open(good, "rb").read()))
    assert load_rgb(damaged).shape == (300, 400, 3)  # Pillow decodes it without a word
    capfd.readouterr()
    reason = check_decodable(str(damaged))
    assert reason == "damaged JPEG, decoded only in part (libjpeg: Corrupt JPEG data: premature end of data segment)"
    assert "Corrupt JPEG" not in capfd.readouterr().err  # the warning became the reason, not a stray line
    assert check_decodable(good) == ""
    pixels, why = training_pixels(str(damaged), 64)
    assert pixels is None and why == reason
