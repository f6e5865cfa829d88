"""Prepared TFRecord shards: the same pixels as decoding on the fly, the same shard per rank, the same
bytes from every executor, and training from a prepared directory (one tiny epoch)."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, run_mpirun
from hvdweather.config import ConfigError
from hvdweather.data import records
from hvdweather.data.pipeline import decoded_files, sharded_files
from hvdweather.data.prepare import run_prepare
from hvdweather.eda.executor import SequentialExecutor

SIZE = 256  # >= WEATHER_CNN_MIN_IMAGE_SIZE: the training test uses these shards
PER_SHARD = 13  # 26 files -> 2 shards for 1 worker and for 2: byte-comparable across executors


@pytest.fixture(scope="module")
def prepared(dirty_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    run_prepare(str(dirty_data), str(out), SIZE, SequentialExecutor(), PER_SHARD, progress=False)
    return out


def digests(dataset) -> list[tuple[str, int]]:
    """Sorted (pixel digest, label) pairs of a dataset of (image, label)."""
    return sorted((hashlib.sha256(x.tobytes()).hexdigest(), int(y)) for x, y in dataset.as_numpy_iterator())


def test_prepared_shards_decode_to_the_on_the_fly_pixels(prepared):
    catalog = records.prepared_catalog(prepared, SIZE)
    stored = {ex["path"].decode(): ex for ex in records.records_dataset(prepared).as_numpy_iterator()}
    assert sorted(stored) == sorted(catalog.paths) and len(stored) == 24
    on_the_fly = decoded_files(catalog.paths, catalog.labels, SIZE).as_numpy_iterator()
    for path, label, (image, fly_label) in zip(catalog.paths, catalog.labels, on_the_fly):
        assert stored[path]["image"].dtype == np.uint8 and stored[path]["image"].shape == (SIZE, SIZE, 3)
        assert np.array_equal(stored[path]["image"], image), path
        assert stored[path]["label"] == label == fly_label


@pytest.mark.parametrize("shard_index", [0, 1])
def test_each_rank_reads_the_files_sharded_files_gives_it(prepared, shard_index):
    catalog = records.prepared_catalog(prepared, SIZE)
    subset = catalog.paths[::2]  # a "split subset": the records outside it must be left out
    labels = catalog.labels[::2]
    from_records = records.decoded_records(prepared, subset, SIZE, 2, shard_index)
    from_files = decoded_files(subset, labels, SIZE, 2, shard_index)
    assert digests(from_records) == digests(from_files)
    assert len(digests(from_records)) == len(list(sharded_files(subset, labels, 2, shard_index)))


def test_prepared_directory_lists_classes_images_and_skipped_files(dirty_data, prepared):
    meta = json.loads((prepared / "prepared.json").read_text())
    assert meta["image_size"] == SIZE and meta["num_images"] == 24 and meta["num_skipped"] == 2
    assert (prepared / "classes.txt").read_text().split() == ["fogsmog", "lightning", "rainbow"]
    assert sorted(p.name for p in prepared.glob("*.tfrecord")) == [s["file"] for s in meta["shards"]]
    with open(prepared / "skipped.csv", newline="") as handle:
        skipped = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(handle)}
    assert skipped == {"broken.jpg": skipped["broken.jpg"], "empty.png": "empty file (0 bytes)"}
    assert "UnidentifiedImageError" in skipped["broken.jpg"]
    assert records.is_prepared(prepared) and not records.is_prepared(dirty_data) and not records.is_prepared("")


def test_a_prepared_directory_of_another_size_is_refused(prepared):
    with pytest.raises(ConfigError, match="--image-size 300 does not match"):
        records.prepared_catalog(prepared, 300)


@pytest.mark.timeout(180)
def test_multiprocessing_prepare_writes_the_same_bytes(dirty_data, prepared, tmp_path):
    result = run_cli("hvdweather-prepare", str(dirty_data), "--out", str(tmp_path), "--image-size", str(SIZE),
                     "--executor", "multiprocessing", "--processes", "2", "--images-per-shard", str(PER_SHARD),
                     timeout=150)
    assert result.returncode == 0, result.stderr
    assert_same_prepared(prepared, tmp_path)


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_mpi_prepare_under_mpirun_writes_the_same_bytes(dirty_data, prepared, tmp_path):
    result = run_mpirun("hvdweather-prepare", str(dirty_data), "--out", str(tmp_path), "--image-size", str(SIZE),
                        "--executor", "mpi", "--images-per-shard", str(PER_SHARD))
    assert result.returncode == 0, result.stderr
    assert_same_prepared(prepared, tmp_path)


def assert_same_prepared(a: Path, b: Path) -> None:
    shards = sorted(p.name for p in a.glob("*.tfrecord"))
    assert shards == sorted(p.name for p in b.glob("*.tfrecord")) and len(shards) == 2
    for name in [*shards, "images.csv", "skipped.csv", "classes.txt"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.timeout(300)
def test_training_from_a_prepared_directory(prepared, tmp_path):
    run = tmp_path / "run"
    result = run_cli("hvdweather-train", "--data", str(prepared), "--out", str(run), "--epochs", "1",
                     "--batch-size", "4", "--image-size", str(SIZE), "--verbose", "0", timeout=280)
    assert result.returncode == 0, result.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "skipped.csv").read_text() == (prepared / "skipped.csv").read_text()
    with open(run / "split.csv", newline="") as handle:
        split_paths = {row["path"] for row in csv.DictReader(handle)}
    assert split_paths == set(records.prepared_catalog(prepared).paths)


@pytest.mark.timeout(120)
def test_training_refuses_a_prepared_directory_of_another_size(prepared, tmp_path):
    result = run_cli("hvdweather-train", "--data", str(prepared), "--out", str(tmp_path / "run"),
                     "--image-size", "300", timeout=100)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--image-size 300 does not match" in lines[0], result.stderr


@pytest.mark.timeout(60)
def test_prepare_bad_input_is_one_line_exit_2(tmp_path):
    result = run_cli("hvdweather-prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), timeout=50)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "directory not found" in lines[0], result.stderr
