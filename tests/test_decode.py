"""Every odd-but-valid format decodes to the right RGB; broken files give a reason, not a crash."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hvdweather.data.decode import check_image, load_rgb

RED = (200, 30, 40)


def _save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_rgb_jpeg_and_resize(tmp_path):
    path = _save(tmp_path, "a.jpg", Image.new("RGB", (300, 200), RED), quality=95)
    arr = load_rgb(path, 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert np.abs(arr.astype(int) - RED).max() <= 6


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = _save(tmp_path, "g.png", Image.new("L", (20, 10), 77))
    arr = load_rgb(path)
    assert arr.shape == (10, 20, 3)
    assert (arr == 77).all()


def test_rgba_drops_alpha(tmp_path):
    path = _save(tmp_path, "a.png", Image.new("RGBA", (8, 8), RED + (10,)))
    assert (load_rgb(path) == RED).all()


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("RGB", (8, 8), RED).convert("P", palette=Image.ADAPTIVE)
    plain = _save(tmp_path, "p.png", image)
    transparent = _save(tmp_path, "t.png", image, transparency=0)
    for path in (plain, transparent):
        arr = load_rgb(path)
        assert arr.shape == (8, 8, 3)
        assert (arr == RED).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    wide = np.full((6, 6), 0x8000, dtype=np.uint16)
    path = _save(tmp_path, "w.png", Image.fromarray(wide))
    assert (load_rgb(path) == 128).all()  # Pillow's plain conversion would clip to 255


def test_cmyk_jpeg(tmp_path):
    path = _save(tmp_path, "c.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=100)
    arr = load_rgb(path).astype(int)
    assert arr[..., 0].mean() > 200 and arr[..., 1].mean() < 40 and arr[..., 2].mean() < 40  # red


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    arr = load_rgb(path)
    assert arr[..., 0].min() > 200 and arr[..., 2].max() < 50


@pytest.mark.parametrize("fmt,ext", [("BMP", "bmp"), ("WEBP", "webp"), ("PNG", "png")])
def test_other_formats(tmp_path, fmt, ext):
    path = _save(tmp_path, f"x.{ext}", Image.new("RGB", (12, 12), RED), format=fmt, **(
        {"lossless": True} if fmt == "WEBP" else {}))
    assert (load_rgb(path, 12) == RED).all()


def test_content_decides_not_extension(tmp_path):
    path = _save(tmp_path, "really_png.jpg", Image.new("RGB", (5, 5), RED), format="PNG")
    assert check_image(path) == ""
    assert (load_rgb(path) == RED).all()


def test_broken_files_have_reasons(tmp_path):
    good = _save(tmp_path, "good.jpg", Image.new("RGB", (400, 400), RED))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "page.jpg"
    text.write_text("<html>not an image</html>")
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert check_image(good) == ""
    assert "empty" in check_image(empty)
    assert check_image(text).startswith("UnidentifiedImageError")
    assert "truncated" in check_image(truncated).lower()
    with pytest.raises(OSError):
        load_rgb(truncated, 64)


def test_training_check_and_eda_give_the_same_reason(tmp_path):
    """skipped.csv says the same for a file whether training's check or the EDA found it bad (the EDA
    kept its own copy of the wording once)."""
    from hvdweather.eda.kernel import analyse_image

    good = _save(tmp_path, "good.jpg", Image.new("RGB", (400, 400), RED))
    empty, text, truncated = tmp_path / "empty.jpg", tmp_path / "page.jpg", tmp_path / "trunc.jpg"
    empty.write_bytes(b"")
    text.write_text("<html>not an image</html>")
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    missing = tmp_path / "missing.jpg"
    reasons = {path.name: check_image(path) for path in (empty, text, truncated, missing)}
    assert reasons["empty.jpg"] == "empty file (0 bytes)" and all(reasons.values())
    for path in (empty, text, truncated, missing):
        assert analyse_image(str(path)).error == reasons[path.name], path.name
