"""hvdweather.data.images: the one image-file rule, by name and by first bytes, that discovery, predict's
folder search, fetch, the duplicate check and the TensorFlow decoder share."""
from __future__ import annotations

from pathlib import Path

import pytest

from hvdweather.data import fetch
from hvdweather.data.images import (
    FORMAT_OF_EXTENSION,
    IMAGE_EXTENSIONS,
    content_format,
    is_image_name,
    is_visible,
    visible_below,
)


@pytest.mark.parametrize("name, image", [("a.jpg", True), ("A.JPEG", True), ("b.Png", True), ("c.webp", True),
                                         ("d.gif", True), ("e.bmp", True), ("f.txt", False), ("jpg", False),
                                         (".hidden.jpg", False), ("_cache.png", False), ("g.tiff", False)])
def test_image_names(name, image):
    assert is_image_name(name) is image


def test_hidden_folders_on_the_way_hide_their_files(tmp_path):
    assert visible_below(tmp_path, tmp_path / "rain" / "2024")
    assert not visible_below(tmp_path, tmp_path / "rain" / ".thumbs")
    assert not visible_below(tmp_path, tmp_path / "__MACOSX" / "rain")
    assert is_visible("rain") and not is_visible("_tmp")


def test_every_extension_names_a_format_the_content_check_knows():
    """A format named by an extension but unknown to content_format would never be told apart."""
    heads = {"JPEG": b"\xff\xd8\xff\xe0", "PNG": b"\x89PNG\r\n\x1a\n", "GIF": b"GIF89a", "BMP": b"BM....",
             "WEBP": b"RIFF\0\0\0\0WEBPVP8 "}
    assert IMAGE_EXTENSIONS == set(FORMAT_OF_EXTENSION)
    for extension, fmt in FORMAT_OF_EXTENSION.items():
        assert content_format(heads[fmt]) == fmt, extension
    assert content_format(b"hello") == ""


def test_fetch_files_every_image_extension_discovery_reads():
    """fetch once kept its own list without .webp: a .webp photo of a release was dropped."""
    for extension in IMAGE_EXTENSIONS:
        assert fetch.SETS["mwd"].class_of(Path(f"/x/rain12{extension}")) == "rain"
        assert fetch.SETS["weapd"].class_of(Path(f"/x/dew/1{extension.upper()}")) == "dew"
    assert fetch.SETS["weapd"].class_of(Path("/x/dew/notes.txt")) is None
