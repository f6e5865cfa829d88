"""Input-pipeline benchmark, measuring part: tf.data parallel decode+resize vs sequential loops, and the
cache. The table is built by hvdweather.bench.pipeline_report.

    hvdweather-bench pipeline --data DIR [--image-size 256 --threads N --repeats 3 --out DIR]

Rows (one JSON line each): a plain sequential PIL loop (what a user writes first), the training
pipeline's decode stage (native TF decode, reduced-scale JPEG) on 1 thread and on N threads without
cache, and a cached pipeline's epoch 1 (decode + fill) and epoch 2 (served from the uint8 cache).
Written to --out (if given): pipeline.jsonl (the rows), pipeline.md (the table) and machine.json.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hvdweather.bench.machine import machine_info, write_machine
from hvdweather.data.discovery import DataError, discover, find_unreadable
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import available_cores


@dataclass(frozen=True)
class PipelineSpec:
    """What `hvdweather-bench pipeline` runs; one field per flag."""

    data: str  # class-folder data set
    out: str = ""  # pipeline.jsonl, pipeline.md and machine.json go here ("" = print only)
    image_size: int = 256  # decode + resize target, as in training
    threads: int = 0  # tf.data threads of the parallel rows (0 = all cores)
    repeats: int = 3  # passes per row; the table shows the median

    def check(self) -> None:
        """Everything that can fail in seconds, before the first pass."""
        for flag, value, least in (("--image-size", self.image_size, 1), ("--repeats", self.repeats, 1),
                                   ("--threads", self.threads, 0)):
            if value < least:
                raise ConfigError(f"{flag} must be an integer >= {least}, got {value}")
        discover(self.data)  # DataError names --data
        if self.out:
            check_output_dir(self.out)


def naive_pil_loop(paths: list[str], image_size: int) -> int:
    """What the reference PyTorch project and most scripts do: open, convert, resize, one file after another."""
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


def run_pipeline_bench(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Measure, print the table, and write pipeline.jsonl, pipeline.md and machine.json under --out if given."""
    from hvdweather.bench.pipeline_report import markdown_report

    spec.check()
    catalog = discover(spec.data)
    threads = spec.threads or available_cores()
    bad = find_unreadable(catalog.paths, threads)
    paths = [p for p in catalog.paths if p not in bad]
    if not paths:
        raise DataError(f"--data {spec.data}: no readable images")
    rows = measure(paths, spec.image_size, threads, spec.repeats)
    machine = machine_info()
    text = markdown_report(rows, machine, spec.data, len(bad))
    print(text)
    if spec.out:
        with open(Path(spec.out) / "pipeline.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        (Path(spec.out) / "pipeline.md").write_text(text)
        write_machine(spec.out, machine)
    return rows
