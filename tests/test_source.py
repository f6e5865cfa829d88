"""open_source: class folders and prepared directories answer the same questions."""
from __future__ import annotations

import pytest

from hvdweather.data.source import FolderSource, PreparedSource, open_source
from hvdweather.errors import DataError


def test_class_folders_open_as_a_folder_source(dirty_data):
    source = open_source(dirty_data, 256)
    assert isinstance(source, FolderSource)
    assert source.catalog.class_names == ("fogsmog", "lightning", "rainbow")
    assert source.skipped_rows() == []
    bad = source.unreadable(source.catalog.paths, threads=2)
    assert sorted(p.rsplit("/", 1)[-1] for p in bad) == ["broken.jpg", "empty.png"]


def test_a_prepared_directory_opens_as_a_prepared_source(tmp_path, tiny_data):
    import json

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    paths = sorted(str(p) for p in tiny_data.rglob("*.*"))[:4]
    rows = "".join(f"{p},{i % 2},{'ab'[i % 2]},0\n" for i, p in enumerate(paths))
    (prepared / "images.csv").write_text("path,label,class_name,shard\n" + rows)
    (prepared / "skipped.csv").write_text("path,reason\n/x/broken.jpg,not an image\n")
    (prepared / "prepared.json").write_text(json.dumps({"format": "hvdweather-prepared-tfrecord", "version": 1,
                                                        "image_size": 256, "class_names": ["a", "b"],
                                                        "shards": []}))
    source = open_source(prepared, 256)
    assert isinstance(source, PreparedSource)
    assert source.catalog.paths == tuple(paths) and source.catalog.labels == (0, 1, 0, 1)
    assert source.unreadable(source.catalog.paths, threads=2) == {}
    assert source.skipped_rows() == [["/x/broken.jpg", "not an image"]]
    with pytest.raises(Exception, match="--image-size 300 does not match"):
        open_source(prepared, 300)


def test_a_missing_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="--data"):
        open_source(tmp_path / "nope")
