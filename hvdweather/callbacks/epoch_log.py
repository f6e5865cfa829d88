"""The per-epoch records of a run: metrics.jsonl rows (EpochMetrics), TensorBoard scalars taken from those
rows (TensorBoardLog), and whole progress lines for logs that are files (ProgressLog). They write through a
RunWriter, so none of them tests the rank; place them after the backend's metric averaging."""
from __future__ import annotations

import math
import time
from typing import Any

import tensorflow as tf

from hvdweather.runfiles import first_epoch_reaching
from hvdweather.writers import RunWriter


class EpochMetrics(tf.keras.callbacks.Callback):
    """Appends one metrics.jsonl line per epoch; place it after the metric averaging (hvdweather.distributed.horovod).

    `previous`: rows of the epochs already trained (on --resume), so the target epoch stays the first.
    """

    def __init__(self, writer: RunWriter, images_per_epoch: int, world: dict[str, Any],
                 target_accuracy: float = 0.0, previous: list[dict[str, Any]] | None = None):
        super().__init__()
        self.writer, self.images_per_epoch, self.world = writer, images_per_epoch, world
        self.target_accuracy = target_accuracy
        self.rows: list[dict[str, Any]] = list(previous or [])

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = self.last_batch_end = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.last_batch_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        train_time_s = self.last_batch_end - self.start
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()  # top-k too (--top-k)
                                      if k in ("loss", "accuracy", "val_loss", "val_accuracy")
                                      or k.endswith("_accuracy")},
               "lr": float(tf.keras.backend.get_value(self.model.optimizer.learning_rate)),
               "epoch_time_s": time.perf_counter() - self.start, "train_time_s": train_time_s,
               "images_per_s": self.images_per_epoch / train_time_s if train_time_s > 0 else 0.0,
               **self.world}
        if self.target_accuracy > 0:
            row["target_accuracy_epoch"] = first_epoch_reaching([*self.rows, row], self.target_accuracy)
        self.rows.append(row)
        self.writer.append_jsonl("metrics.jsonl", row)


class TensorBoardLog(tf.keras.callbacks.Callback):
    """Per-epoch TensorBoard scalars (losses, accuracies, lr, images/s) under RUN_DIR/tensorboard/, taken
    from EpochMetrics' row, so TensorBoard and metrics.jsonl show the same (averaged) numbers; place it
    after EpochMetrics. The writer writes on the primary only."""

    TAGS = {"loss": "loss/train", "val_loss": "loss/val", "accuracy": "accuracy/train",
            "val_accuracy": "accuracy/val", "lr": "lr", "images_per_s": "images_per_s",
            "epoch_time_s": "epoch_time_s"}

    def __init__(self, writer: RunWriter, metrics: EpochMetrics):
        super().__init__()
        self.writer, self.metrics = writer, metrics

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A resumed run (or the second fit of a fine-tuning run) rewrites the epochs so far from
        # metrics.jsonl's rows, which a resume has cut back to its checkpoint.
        self.writer.clear_summaries("tensorboard")
        for row in self.metrics.rows:
            self.log(row)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.log(self.metrics.rows[-1])

    def log(self, row: dict[str, Any]) -> None:
        self.writer.write_scalars("tensorboard", row["epoch"], {tag: row[key] for key, tag in self.TAGS.items()
                                                                if row.get(key) is not None})


class ProgressLog(tf.keras.callbacks.Callback):
    """Whole lines for logs that are files (horovodrun, mpirun, SLURM output): Keras's bar there
    becomes one endless line of carriage returns. One line every ~10% of an epoch with images/s and
    an ETA (`step_lines`), and one line per epoch with the averaged metrics. `images_per_step`: the
    images of one of fit's batches over all workers (train.plan.Plan.images_per_step), what images/s counts."""

    def __init__(self, writer: RunWriter, epochs: int, images_per_step: int, step_lines: bool):
        super().__init__()
        self.writer, self.epochs, self.images_per_step = writer, epochs, images_per_step
        self.step_lines = step_lines

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.start = epoch, time.perf_counter()
        steps = self.params.get("steps") or 0
        every = max(1, math.ceil(steps / 10))
        self.report_at = set(range(every, steps, every)) if self.step_lines else set()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = batch + 1
        if done not in self.report_at:
            return
        elapsed = time.perf_counter() - self.start
        steps = self.params["steps"]
        self.writer.log(f"epoch {self.epoch + 1}/{self.epochs}: {done}/{steps} steps ({100 * done // steps}%), "
                        f"{done * self.images_per_step / elapsed:.1f} images/s, "
                        f"ETA {elapsed / done * (steps - done):.0f} s")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                          if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        self.writer.log(f"epoch {epoch + 1}/{self.epochs}: {values} ({time.perf_counter() - self.start:.1f} s)")
