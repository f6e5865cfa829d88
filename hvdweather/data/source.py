"""One way to open a data set, whatever its form: class folders (WEAPD / ImageFolder layout) or a
directory written by `hvdweather-prepare` (decoded TFRecord shards).

    source = open_source(path, image_size)
    source.catalog                      # class names, paths, labels
    source.unreadable(paths, threads)   # files that would fail mid-epoch, with the reason
    source.inspect(paths, threads)      # the same check, plus each file's SHA-256 (duplicates) and format
    source.skipped_rows()               # files dropped before this run (by hvdweather-prepare)
    source.decoded(paths, labels, image_size, shard_count, shard_index)  # tf.data of (uint8, label)

Training, and later prediction and evaluation, ask the source and never test which form it is.
TensorFlow is imported only by `decoded`.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hvdweather.data import records
from hvdweather.data.discovery import Catalog, discover, find_unreadable
from hvdweather.data.fingerprint import FileFacts, inspect_files


class Source(Protocol):
    catalog: Catalog

    def unreadable(self, paths: tuple[str, ...], threads: int) -> dict[str, str]: ...

    def inspect(self, paths: tuple[str, ...], threads: int, perceptual: bool = False) -> dict[str, FileFacts]: ...

    def skipped_rows(self) -> list[list[str]]: ...

    def decoded(self, paths: tuple[str, ...], labels: tuple[int, ...], image_size: int,
                shard_count: int = 1, shard_index: int = 0) -> Any: ...


@dataclass(frozen=True)
class FolderSource:
    """Class folders: images are decoded on the fly (and cached) by tf.data."""

    catalog: Catalog

    def unreadable(self, paths: tuple[str, ...], threads: int) -> dict[str, str]:
        """Decode-check with the training decoder itself, so no file can fail mid-epoch."""
        from hvdweather.data.decode_tf import check_decodable

        return find_unreadable(paths, threads=threads, check=check_decodable)

    def inspect(self, paths: tuple[str, ...], threads: int, perceptual: bool = False) -> dict[str, FileFacts]:
        """`unreadable`'s check, and the facts the split needs to keep duplicates together."""
        from hvdweather.data.decode_tf import check_decodable

        return inspect_files(paths, check_decodable, threads, perceptual)

    def skipped_rows(self) -> list[list[str]]:
        return []

    def decoded(self, paths, labels, image_size, shard_count=1, shard_index=0):
        from hvdweather.data.pipeline import decoded_files

        return decoded_files(paths, labels, image_size, shard_count, shard_index)


@dataclass(frozen=True)
class PreparedSource:
    """hvdweather-prepare output: pixels were decoded, checked and resized once, offline."""

    catalog: Catalog
    root: str

    def unreadable(self, paths: tuple[str, ...], threads: int) -> dict[str, str]:
        return {}  # every stored record decoded when it was written

    def inspect(self, paths: tuple[str, ...], threads: int, perceptual: bool = False) -> dict[str, FileFacts]:
        """Every record decoded when it was written; its digest is the one prepare recorded."""
        digests = records.source_digests(self.root)
        return {path: FileFacts("", digests.get(path, "")) for path in paths}

    def skipped_rows(self) -> list[list[str]]:
        rows = list(csv.reader(io.StringIO(records.skipped_csv(self.root))))
        return [row for row in rows[1:] if row]

    def decoded(self, paths, labels, image_size, shard_count=1, shard_index=0):
        return records.decoded_records(self.root, paths, image_size, shard_count, shard_index)


def open_source(path: str | Path, image_size: int | None = None, label: str = "--data") -> Source:
    """The data set at `path`; a prepared directory must have been prepared at `image_size`. Class
    folders' files get absolute paths (a prepared set's paths are its records' names, absolute already)."""
    if records.is_prepared(path):
        return PreparedSource(records.prepared_catalog(path, image_size), str(path))
    return FolderSource(discover(path, label).absolute())
