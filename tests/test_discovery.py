"""Class-folder discovery: which files count, and the one-line errors for unusable folders."""
from __future__ import annotations

import pytest
from PIL import Image

from hvdweather.data.discovery import DataError, discover, find_unreadable


def _img(path, colour=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_extensions_any_case_and_hidden_or_other_files_ignored(tmp_path):
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.gif", "f.WEBP"):
        _img(tmp_path / "rain" / name)
    _img(tmp_path / "snow" / "x.jpg")
    _img(tmp_path / "snow" / ".hidden.jpg")
    (tmp_path / "snow" / "notes.txt").write_text("hi")
    (tmp_path / "snow" / "Thumbs.db").write_bytes(b"\0")
    _img(tmp_path / ".cache" / "y.jpg")  # hidden class folder
    (tmp_path / "README.md").write_text("top-level files are not classes")
    catalog = discover(tmp_path)
    assert catalog.class_names == ("rain", "snow")
    assert catalog.counts() == {"rain": 6, "snow": 1}
    assert sorted(catalog.paths) == list(catalog.paths[:6]) + [catalog.paths[6]]  # sorted within classes


def test_labels_follow_sorted_class_names(tmp_path):
    _img(tmp_path / "b" / "1.png")
    _img(tmp_path / "a" / "1.png")
    _img(tmp_path / "a" / "2.png")
    catalog = discover(tmp_path)
    assert catalog.class_names == ("a", "b")
    assert catalog.labels == (0, 0, 1)


@pytest.mark.parametrize("layout,message", [
    ("missing", "directory not found"),
    ("file", "not a directory"),
    ("empty", "no images found"),
    ("one_class", "only 1 class"),
])
def test_unusable_folders(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("x")
    elif layout == "empty":
        (root / "rain").mkdir(parents=True)
    elif layout == "one_class":
        _img(root / "rain" / "1.jpg")
    with pytest.raises(DataError, match=message) as info:
        discover(root)
    assert "--data" in str(info.value) and "\n" not in str(info.value)


def test_find_unreadable_lists_only_bad_files(tmp_path):
    good = _img(tmp_path / "a" / "ok.png")
    bad = tmp_path / "a" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    result = find_unreadable([str(good), str(bad)], threads=2)
    assert list(result) == [str(bad)] and result[str(bad)]


def test_without_drops_paths_and_labels_together(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            _img(tmp_path / cls / f"{i}.png")
    catalog = discover(tmp_path)
    smaller = catalog.without({catalog.paths[1]})
    assert len(smaller.paths) == len(smaller.labels) == 3
    assert smaller.labels == (0, 1, 1)


def test_a_folder_of_data_sets_is_refused_naming_them(tmp_path):
    """--data one level too high: data/synthetic/<class>/... and data/weapd/<class>/... side by side."""
    for dataset in ("synthetic", "weapd"):
        for cls in ("rain", "snow"):
            _img(tmp_path / "data" / dataset / cls / "1.jpg")
    with pytest.raises(DataError) as info:
        discover(tmp_path / "data")
    message = str(info.value)
    assert "synthetic, weapd" in message and "folder of data sets" in message
    assert f"--data {tmp_path / 'data' / 'synthetic'}" in message and "\n" not in message


def test_one_class_folder_given_suggests_its_parent(tmp_path):
    for cls in ("rain", "snow"):
        _img(tmp_path / "data" / cls / "1.jpg")
    with pytest.raises(DataError, match=f"pass its parent: --data {tmp_path / 'data'}$"):
        discover(tmp_path / "data" / "rain")


def test_images_without_class_folders(tmp_path):
    _img(tmp_path / "flat" / "1.jpg")
    with pytest.raises(DataError, match="images lie at the top level with no class folders"):
        discover(tmp_path / "flat")


def test_top_level_images_next_to_class_folders_are_listed_as_ignored(tmp_path):
    for cls in ("rain", "snow"):
        _img(tmp_path / cls / "1.jpg")
    stray = _img(tmp_path / "stray.png")
    catalog = discover(tmp_path)
    assert catalog.ignored == (str(stray),) and str(stray) not in catalog.paths
    assert catalog.without({catalog.paths[0]}).ignored == catalog.ignored


def test_errors_name_the_location_as_the_caller_calls_it(tmp_path):
    with pytest.raises(DataError, match=r"^DATA .*: directory not found"):
        discover(tmp_path / "nope", label="DATA")
