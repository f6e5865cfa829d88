"""Input-pipeline benchmark: tf.data parallel decode+resize vs sequential loops, and the cache.

    hvdweather-bench pipeline --data DIR [--image-size 256 --threads N --repeats 3 --out DIR]

Rows (one JSON line each): a plain sequential PIL loop (what a user writes first), the training
pipeline's decode stage (native TF decode, reduced-scale JPEG) on 1 thread and on N threads without
cache, and a cached pipeline's epoch 1 (decode + fill) and epoch 2 (served from the uint8 cache).
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hvdweather.data.discovery import DataError, discover, find_unreadable
from hvdweather.distributed import available_cores


def naive_pil_loop(paths: list[str], image_size: int) -> int:
    """What the seeds and most scripts do: open, convert, resize, one file after another."""
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((image_size, image_size), Image.BILINEAR))
    return len(paths)


def _drain(dataset) -> int:
    count = 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count


def decode_stage(paths: list[str], image_size: int, threads: int, cache: bool = False, batch: int = 32):
    """The training chain up to the cache, batched as uint8 (what the naive loop also produces)."""
    import tensorflow as tf

    from hvdweather.data.pipeline import decoded_files

    dataset = decoded_files(paths, [0] * len(paths), image_size)
    dataset = dataset.cache() if cache else dataset
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    return dataset.batch(batch).prefetch(tf.data.AUTOTUNE).with_options(options)


def cached_epochs(paths: list[str], image_size: int, threads: int) -> tuple[float, float]:
    """Seconds for epoch 1 (decode + fill the uint8 cache) and epoch 2 (from the cache)."""
    dataset = decode_stage(paths, image_size, threads, cache=True)  # built (and traced) untimed
    times = []
    for _ in range(2):
        start = time.perf_counter()
        _drain(dataset)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(paths: list[str], image_size: int, threads: int, repeats: int) -> list[dict[str, Any]]:
    """All rows of the benchmark, each the median of `repeats` runs (cache rows: per epoch)."""
    n = len(paths)
    # Built once and drained once untimed, as training does: tracing and thread start-up are one-off.
    stages = {t: decode_stage(paths, image_size, t) for t in sorted({1, threads})}
    for stage in stages.values():
        _drain(stage)
    rows = [
        {"method": "naive PIL loop (1 thread)", "seconds": _timed(lambda: naive_pil_loop(paths, image_size), repeats)},
        {"method": "tf.data parallel map (1 thread)", "seconds": _timed(lambda: _drain(stages[1]), repeats)},
        {"method": f"tf.data parallel map ({threads} threads)",
         "seconds": _timed(lambda: _drain(stages[threads]), repeats)},
    ]
    epochs = [cached_epochs(paths, image_size, threads) for _ in range(repeats)]
    rows.append({"method": "tf.data + cache, epoch 1 (fill)", "seconds": statistics.median(e[0] for e in epochs)})
    rows.append({"method": "tf.data + cache, epoch 2 (cached)", "seconds": statistics.median(e[1] for e in epochs)})
    base = rows[0]["seconds"]
    for row in rows:
        row.update(images=n, image_size=image_size, threads=threads, repeats=repeats,
                   images_per_s=n / row["seconds"], speedup_vs_naive=base / row["seconds"])
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows, speed-ups against the naive loop measured in the same run."""
    lines = ["| method | seconds | images/s | speed-up vs naive loop |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['seconds']:.2f} | {row['images_per_s']:.0f} "
                     f"| {row['speedup_vs_naive']:.2f}x |")
    return "\n".join(lines)


def run_pipeline_bench(data: str, image_size: int = 256, threads: int | None = None, repeats: int = 3,
                       out: str | None = None) -> list[dict[str, Any]]:
    """Measure, print the table, and write results.jsonl under `out` if given."""
    catalog = discover(data)
    threads = threads or available_cores()
    bad = find_unreadable(catalog.paths, threads)
    paths = [p for p in catalog.paths if p not in bad]
    if not paths:
        raise DataError(f"--data {data}: no readable images")
    rows = measure(paths, image_size, threads, repeats)
    table = format_table(rows)
    print(f"{len(paths)} images from {data} at {image_size}x{image_size}, {available_cores()} cores, "
          f"median of {repeats}; {len(bad)} unreadable skipped\n{table}")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(Path(out) / "pipeline.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        (Path(out) / "pipeline.md").write_text(table + "\n")
    return rows
