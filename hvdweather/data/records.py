"""Sharded TFRecords of decoded images: a data set prepared once, offline, by `hvdweather-prepare`.

    hvdweather-prepare DATA --out PREPARED --image-size 256
    hvdweather-train --data PREPARED --out RUN --image-size 256

A prepared directory holds
    part-00000-of-00004.tfrecord ...  tf.train.Example records: image (raw uint8 bytes, S x S x 3),
                                      label (int64), path (the original file, bytes)
    images.csv     path, label, class_name, shard, sha256 (of the original file) of every stored image,
                   in the source's order
    classes.txt    the class names, one a line, in label order
    skipped.csv    path, reason of every file that did not decode
    prepared.json  format marker, image size, class names, shard list; written last, so a directory
                   with it is complete

Training reads the catalog from images.csv (no shard is opened for that) and the pixels from the
shards, so no image is decoded during training. TensorFlow is imported inside the functions that
use it: the prepare stage's parent process and `is_prepared` stay light.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hvdweather.config import ConfigError
from hvdweather.data.discovery import Catalog, DataError
from hvdweather.data.sharding import shard_of

MARKER = "prepared.json"
FORMAT = "hvdweather-prepared-tfrecord"
VERSION = 1
SHARD_GLOB = "part-*-of-*.tfrecord"


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.tfrecord"


def is_prepared(path: str | Path) -> bool:
    """True if `path` is a complete prepared directory (it has prepared.json)."""
    return bool(path) and (Path(path) / MARKER).is_file()


def read_meta(path: str | Path) -> dict[str, Any]:
    """prepared.json of a prepared directory, checked to be ours."""
    file = Path(path) / MARKER
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"--data {path}: cannot read {MARKER} ({exc}); run hvdweather-prepare again") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"--data {path}: {MARKER} is not a version-{VERSION} hvdweather prepared directory")
    return meta


def prepared_catalog(path: str | Path, image_size: int | None = None) -> Catalog:
    """The catalog of a prepared directory (paths are the original image files), from images.csv.

    `image_size`: the size training wants; a directory prepared at another size is refused.
    """
    meta = read_meta(path)
    if image_size is not None and meta["image_size"] != image_size:
        raise ConfigError(f"--image-size {image_size} does not match --data {path}, prepared at "
                          f"{meta['image_size']}; pass --image-size {meta['image_size']} or run "
                          f"hvdweather-prepare --image-size {image_size}")
    class_names = tuple(meta["class_names"])
    with open(Path(path) / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DataError(f"--data {path}: the prepared directory holds no images (see its skipped.csv)")
    return Catalog(str(path), class_names, tuple(r["path"] for r in rows), tuple(int(r["label"]) for r in rows))


def source_digests(path: str | Path) -> dict[str, str]:
    """Path -> SHA-256 of the original file, from images.csv (empty for directories prepared before
    digests were recorded: their duplicates cannot be grouped; prepare them again)."""
    with open(Path(path) / "images.csv", newline="") as handle:
        return {row["path"]: row.get("sha256") or "" for row in csv.DictReader(handle)}


def skipped_csv(path: str | Path) -> str:
    """The text of the prepared directory's skipped.csv (the header alone if it is missing)."""
    file = Path(path) / "skipped.csv"
    return file.read_text() if file.is_file() else "path,reason\n"


def shard_files(path: str | Path) -> list[str]:
    """The shard files listed in prepared.json, in order."""
    return [str(Path(path) / shard["file"]) for shard in read_meta(path)["shards"]]


def write_shard(file: str | Path, items: Iterable[tuple[np.ndarray, int, str]]) -> int:
    """Write (uint8 image, label, path) items as tf.train.Example records; returns how many.

    Written to a temporary name and renamed at the end, so a crashed run leaves no half shard.
    """
    import tensorflow as tf

    tmp, count = f"{file}.tmp", 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for pixels, label, path in items:
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels.tobytes()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            count += 1
    os.replace(tmp, file)
    return count


def clear(out: str | Path) -> None:
    """Remove a previous preparation's marker and shards from `out` (nothing else)."""
    out = Path(out)
    (out / MARKER).unlink(missing_ok=True)
    for old in [*out.glob(SHARD_GLOB), *out.glob(SHARD_GLOB + ".tmp")]:
        old.unlink()


def write_metadata(out: str | Path, meta: dict[str, Any], images: list[list[Any]],
                   skipped: list[list[str]]) -> None:
    """images.csv, classes.txt, skipped.csv, then prepared.json (last: it marks the directory complete)."""
    out = Path(out)
    with open(out / "images.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "class_name", "shard", "sha256"], *images])
    with open(out / "skipped.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "reason"], *skipped])
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in meta["class_names"]))
    (out / MARKER).write_text(json.dumps({"format": FORMAT, "version": VERSION, **meta}, indent=2) + "\n")


def _parse(record, image_size: int):
    import tensorflow as tf

    example = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
        "path": tf.io.FixedLenFeature([], tf.string)})
    image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), (image_size, image_size, 3))
    return {"image": image, "label": tf.cast(example["label"], tf.int32), "path": example["path"]}


def records_dataset(path: str | Path):
    """Every stored record as {image: uint8 [S, S, 3], label: int32, path: string}, in shard order."""
    import tensorflow as tf

    image_size = read_meta(path)["image_size"]
    return tf.data.TFRecordDataset(shard_files(path)).map(lambda r: _parse(r, image_size),
                                                          num_parallel_calls=tf.data.AUTOTUNE)


def decoded_records(path: str | Path, paths, image_size: int, shard_count: int = 1, shard_index: int = 0):
    """(uint8 image [S, S, 3], int32 label) of this rank's share of `paths`, read from the shards.

    The same pairs as `pipeline.decoded_files` for the same files, with no decoding: the rank takes
    the same files `pipeline.sharded_files` gives it (every shard_count-th of `paths`) and keeps the
    records of exactly those, so shards.csv and `shard_size` hold for prepared data too. The order
    is the shards' order, not `paths`' (training shuffles; evaluation gathers labels with predictions).
    """
    import tensorflow as tf

    stored = read_meta(path)["image_size"]
    if stored != image_size:
        raise ConfigError(f"--image-size {image_size} does not match --data {path}, prepared at {stored}")
    keys = tf.constant([str(p) for p in shard_of(list(paths), shard_count, shard_index)], tf.string)
    mine = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones(tf.shape(keys), tf.int32)), default_value=0)
    ds = tf.data.TFRecordDataset(shard_files(path)).map(lambda r: _parse(r, image_size),
                                                        num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda ex: mine.lookup(ex["path"]) > 0)
    return ds.map(lambda ex: (ex["image"], ex["label"]))
