"""What every EDA executor is: the sequential one, whose hooks the others override, its progress line
and the balanced chunking of the images. The executors themselves and their registry are in
hvdweather.eda.executors; the Spark one, an optional extra, in hvdweather.eda.spark.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

CHUNKS_PER_WORKER = 8  # enough that the last chunks leave little idle time, few enough to be cheap
MIN_CHUNK_IMAGES = 8

T = TypeVar("T")


def balanced_chunks(num_items: int, parts: int) -> list[np.ndarray]:
    """Split indices 0..num_items-1 into `parts` strided chunks whose sizes differ by at most one.

    Strided (k, k+parts, ...) rather than contiguous: files are sorted by class, and images of one
    class tend to share a size, i.e. a cost, so contiguous chunks would not be balanced in time.
    """
    parts = max(1, min(parts, num_items))
    return [np.arange(k, num_items, parts) for k in range(parts)]


def chunk_count(num_items: int, workers: int) -> int:
    """Chunks for `workers`: CHUNKS_PER_WORKER each, fewer if chunks would get tiny."""
    return max(workers, min(workers * CHUNKS_PER_WORKER, num_items // MIN_CHUNK_IMAGES))


class Progress:
    """One progress line on stderr (primary process only), redrawn at most 4 times a second."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.done, self.start, self.last = 0, time.perf_counter(), 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.25 or self.done >= self.total):
            self.last = now
            print(f"\r{self.label}: {self.done}/{self.total} images ({100 * self.done // self.total}%) "
                  f"{now - self.start:.1f} s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


class SequentialExecutor:
    """Everything in this one process, one image after another: the baseline."""

    name = "sequential"
    rank, size, workers = 0, 1, 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    def progress(self, total: int, label: str, wanted: bool) -> Progress:
        """The job's one progress display: drawn by the primary process only."""
        return Progress(total, label, wanted and self.is_primary)

    def share(self, make: Callable[[], T]) -> T:
        return make()

    def map(self, fn: Callable[[Any], T], tasks: Sequence[Any], progress: Progress) -> list[T]:
        results = []
        for task in tasks:
            results.append(fn(task))
            progress.update(len(task.index))
        return results

    def sum_arrays(self, arrays: list[np.ndarray]) -> list[np.ndarray] | None:
        return arrays

    def gather(self, obj: T) -> list[T] | None:
        return [obj]

    def barrier(self) -> None:
        """Nothing to wait for in one process."""
