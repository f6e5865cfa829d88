"""Everything that lands in the run directory. Writers know whether they are the primary process;
on other ranks they do nothing, so callers never test the rank.

Run directory: config.json, split.csv, skipped.csv, metrics.jsonl, best.keras, last.keras, report/.
"""
from __future__ import annotations

import csv
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf


def _primary_only(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a writer method on the primary process; on other ranks it is a no-op returning None."""

    @functools.wraps(method)
    def wrapper(self: RunWriter, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **kwargs) if self.is_primary else None

    return wrapper


class RunWriter:
    """Writes (and reads back) files under `run_dir` on the primary process only."""

    def __init__(self, run_dir: str | Path, is_primary: bool):
        self.run_dir = Path(run_dir)
        self.is_primary = is_primary

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @_primary_only
    def log(self, message: str) -> None:
        """One line on the primary's stdout (one voice for the whole job)."""
        print(message, flush=True)

    def keras_verbose(self, level: int) -> int:
        """Keras's `verbose` for this process: the primary draws the one progress bar, others stay quiet."""
        return level if self.is_primary else 0

    @_primary_only
    def write_json(self, name: str, obj: Any) -> None:
        self._target(name).write_text(json.dumps(obj, indent=2, default=str) + "\n")

    @_primary_only
    def append_jsonl(self, name: str, row: dict[str, Any]) -> None:
        with self._target(name).open("a") as handle:
            handle.write(json.dumps(row, default=float) + "\n")

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Rows of a JSON-lines file of the run; other ranks get none (the file may be on rank 0's disk)."""
        return read_jsonl(self.path(name)) if self.is_primary else []

    @_primary_only
    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        with self._target(name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    @_primary_only
    def write_text(self, name: str, text: str) -> None:
        self._target(name).write_text(text)

    @_primary_only
    def write_with(self, name: str, write: Callable[[Path], None]) -> None:
        """Let `write(path)` produce the file (for formats other modules own, e.g. split.csv)."""
        write(self._target(name))

    @_primary_only
    def save_figure(self, name: str, make_figure: Callable[[], Any]) -> None:
        """Build a matplotlib figure with `make_figure()` and save it (built on the primary only)."""
        import matplotlib.pyplot as plt

        figure = make_figure()
        figure.savefig(self._target(name), dpi=110, bbox_inches="tight")
        plt.close(figure)

    @_primary_only
    def save_model(self, name: str, model: tf.keras.Model) -> None:
        model.save(self._target(name))

    def _target(self, name: str) -> Path:
        target = self.run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class EpochMetrics(tf.keras.callbacks.Callback):
    """Appends one metrics.jsonl line per epoch; place it after Horovod's metric averaging."""

    def __init__(self, writer: RunWriter, images_per_epoch: int, world: dict[str, Any]):
        super().__init__()
        self.writer, self.images_per_epoch, self.world = writer, images_per_epoch, world
        self.rows: list[dict[str, Any]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = self.last_batch_end = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.last_batch_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        train_time_s = self.last_batch_end - self.start
        row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in
                                      ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs},
               "lr": float(tf.keras.backend.get_value(self.model.optimizer.learning_rate)),
               "epoch_time_s": time.perf_counter() - self.start, "train_time_s": train_time_s,
               "images_per_s": self.images_per_epoch / train_time_s if train_time_s > 0 else 0.0,
               **self.world}
        self.rows.append(row)
        self.writer.append_jsonl("metrics.jsonl", row)


class Checkpoints(tf.keras.callbacks.Callback):
    """last.keras every epoch; best.keras when val_loss (else loss) improves.

    Files are written by the primary only (via the writer). Every rank keeps the best weights in
    memory: the averaged val_loss is the same on all ranks, so all restore the same weights for the
    test report without reading a file another node wrote.
    """

    def __init__(self, writer: RunWriter, best_loss: float = float("inf")):
        super().__init__()
        self.writer, self.best_loss = writer, best_loss
        self.best_epoch = 0
        self.best_weights: list | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        monitor = logs.get("val_loss", logs.get("loss"))
        self.writer.save_model("last.keras", self.model)
        if monitor is not None and monitor < self.best_loss:
            self.best_loss, self.best_epoch = float(monitor), epoch + 1
            self.best_weights = self.model.get_weights()
            self.writer.save_model("best.keras", self.model)
