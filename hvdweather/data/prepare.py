"""The offline preprocessing stage: decode, convert to RGB and resize every image once, into TFRecords.

It writes training input, so it lives in the data package; it spreads the work over the EDA's
executors (`hvdweather.eda.executors`: sequential, multiprocessing or mpi).

    hvdweather-prepare DATA --out PREPARED --image-size 256 [--executor multiprocessing --processes 2]
    mpirun -np 4 hvdweather-prepare DATA --out PREPARED --image-size 256 --executor mpi
    hvdweather-train --data PREPARED --image-size 256 ...

The primary lists the images, checks --out and clears a previous preparation there; each shard is
one task (a strided, class-mixed set of images, see `balanced_chunks`) that a worker decodes and
writes itself, so no pixels travel between processes; the primary then writes images.csv,
classes.txt, skipped.csv and, last, prepared.json (format in `hvdweather.data.records`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hvdweather.data import records
from hvdweather.data.discovery import Catalog
from hvdweather.data.fingerprint import file_sha256
from hvdweather.eda.analyse import list_images, run_facts
from hvdweather.eda.executor import SequentialExecutor, balanced_chunks
from hvdweather.errors import ConfigError
from hvdweather.geometry import MODEL_GEOMETRY, WEATHER_CNN_MIN_IMAGE_SIZE


@dataclass(frozen=True)
class ShardTask:
    """One shard for one worker call: picklable, so it travels to pool processes."""

    file: str  # the shard file to write
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    index: tuple[int, ...]  # positions of these images in the catalog
    image_size: int


@dataclass
class ShardResult:
    """What a worker wrote: which catalog images went into the shard and which were skipped."""

    file: str
    written: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    sha256: dict[int, str] = field(default_factory=dict)  # of each written file's bytes: training groups duplicates
    tensorflow_import_s: float = 0.0  # this process's one-off TensorFlow import, paid by its first shard


def write_shard_task(task: ShardTask) -> ShardResult:
    """Decode, resize and write one shard; undecodable files are recorded and left out."""
    start = time.perf_counter()
    import tensorflow  # noqa: F401  (TFRecordWriter; imported here, timed, so the cost is reported)

    from hvdweather.data.decode_tf import training_pixels  # the training decoder: same pixels as on the fly

    result = ShardResult(Path(task.file).name, tensorflow_import_s=time.perf_counter() - start)

    def items():
        for path, label, position in zip(task.paths, task.labels, task.index):
            pixels, error = training_pixels(path, task.image_size)
            if pixels is None:
                result.skipped[position] = error
                continue
            result.written.append(position)
            result.sha256[position] = file_sha256(path)
            yield pixels, label, os.path.abspath(path)

    records.write_shard(task.file, items())
    return result


def shard_count(num_images: int, images_per_shard: int, workers: int) -> int:
    """Shards of about `images_per_shard`, rounded up to a multiple of the workers (equal work each)."""
    shards = math.ceil(num_images / images_per_shard)
    return max(1, min(num_images, math.ceil(shards / workers) * workers))


def check_image_size(image_size: int) -> None:
    """Refuse a size no model of the zoo can train on, before any image is decoded; training then checks
    the size against the model it builds."""
    smallest = min(int(g["min_image_size"]) for g in MODEL_GEOMETRY.values())
    if image_size < smallest:
        raise ConfigError(f"--image-size {image_size}: no model trains on images under {smallest} pixels, so "
                          f"training could not use these shards; pass --image-size {smallest} or more "
                          f"(the weather CNN needs {WEATHER_CNN_MIN_IMAGE_SIZE}; default 256)")


def _start(data: str, out: str, image_size: int) -> Catalog:
    check_image_size(image_size)
    catalog = list_images(data, out)
    records.clear(out)  # a previous preparation's shards must not mix with this one's
    return catalog


def _metadata(catalog: Catalog, results: list[ShardResult], image_size: int) -> tuple[dict, list, list]:
    shard_of = {i: r.file for r in results for i in r.written}
    sha256 = {i: digest for r in results for i, digest in r.sha256.items()}
    skipped = {i: reason for r in results for i, reason in r.skipped.items()}
    images = [[os.path.abspath(catalog.paths[i]), catalog.labels[i],
               catalog.class_names[catalog.labels[i]], shard_of[i], sha256[i]] for i in sorted(shard_of)]
    meta = {"image_size": image_size, "channels": 3, "dtype": "uint8",
            "class_names": list(catalog.class_names), "source": os.path.abspath(catalog.root),
            "num_images": len(images), "num_skipped": len(skipped),
            "shards": [{"file": r.file, "images": len(r.written)} for r in results]}
    return meta, images, [[os.path.abspath(catalog.paths[i]), skipped[i]] for i in sorted(skipped)]


def run_prepare(data: str, out: str, image_size: int, executor: SequentialExecutor,
                images_per_shard: int = 256, progress: bool = True) -> dict[str, Any] | None:
    """The whole prepare stage; prepared.json's content on the primary, None on other ranks."""
    executor.barrier()  # MPI: start the clock when every rank is up
    start = time.perf_counter()
    catalog = executor.share(lambda: _start(data, out, image_size))
    count = shard_count(len(catalog.paths), images_per_shard, executor.workers)
    tasks = [ShardTask(str(Path(out) / records.shard_name(k, count)),
                       tuple(catalog.paths[i] for i in chunk), tuple(catalog.labels[i] for i in chunk),
                       tuple(int(i) for i in chunk), image_size)
             for k, chunk in enumerate(balanced_chunks(len(catalog.paths), count))]
    bar = executor.progress(len(catalog.paths), "prepare", progress)
    gathered = executor.gather(executor.map(write_shard_task, tasks, bar))
    bar.close()
    if gathered is None:
        return None
    results = sorted((r for part in gathered for r in part), key=lambda r: r.file)
    meta, images, skipped = _metadata(catalog, results, image_size)
    meta["run"] = {**run_facts(executor), "elapsed_s": time.perf_counter() - start,
                   "tensorflow_import_s": max(r.tensorflow_import_s for r in results)}
    records.write_metadata(out, meta, images, skipped)
    print(f"wrote {meta['num_images']} images at {image_size}x{image_size} in {len(results)} shard(s) to "
          f"{out} in {meta['run']['elapsed_s']:.2f} s with {executor.name} x {executor.workers}; "
          f"{meta['num_skipped']} skipped (see {Path(out) / 'skipped.csv'}); train with: "
          f"hvdweather-train --data {out} --image-size {image_size}", flush=True)
    return meta
