"""Early stopping (--early-stopping): the callback, its one closing line, and the count a resumed run
continues from."""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvdweather.writers import RunWriter


def epochs_without_improvement(rows: list[dict[str, Any]]) -> tuple[float, int]:
    """(best val_loss, else loss) and how many epochs since it, from metrics rows: what early stopping
    needs to continue a resumed run exactly as the uninterrupted one."""
    best, wait = float("inf"), 0
    for row in rows:
        value = row.get("val_loss", row.get("loss"))
        if value is not None and value < best:
            best, wait = value, 0
        else:
            wait += 1
    return best, wait


class EarlyStop(tf.keras.callbacks.Callback):
    """Stop after `patience` epochs without a better val_loss (else loss), and say so in one line. Place
    it after the ranks' metric averaging: every rank then reads the same averaged value and stops at the
    same epoch, so none is left waiting in an allreduce. `previous`: the rows of a resumed run's epochs
    (the same on every rank)."""

    def __init__(self, patience: int, previous: list[dict[str, Any]] | None = None,
                 writer: RunWriter | None = None):
        super().__init__()
        self.patience, self.writer = patience, writer
        previous = previous or []
        self.best, self.wait = epochs_without_improvement(previous)
        self.best_epoch = len(previous) - self.wait
        self.stopped_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        monitor = "val_loss" if "val_loss" in logs else "loss"
        value = logs.get(monitor)
        if value is None:
            return
        if value < self.best:
            self.best, self.wait, self.best_epoch = float(value), 0, epoch + 1
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch, self.monitor = epoch + 1, monitor
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        """The line, after the last epoch's own (a silent stop looks like a crash or a short --epochs)."""
        if self.stopped_epoch and self.writer is not None:
            self.writer.log(stop_line(self.monitor, self.best, self.best_epoch, self.patience, self.stopped_epoch,
                                      self.params.get("epochs")))


def stop_line(monitor: str, best: float, best_epoch: int, patience: int, stopped_epoch: int,
              epochs: int | None) -> str:
    """The one line early stopping prints when it ends a run (after epoch `stopped_epoch`)."""
    why = (f"{monitor} has not improved on epoch {best_epoch}'s {best:.4f} for {patience} epoch(s)" if best_epoch
           else f"no epoch gave a finite {monitor}")  # NaN from the first epoch on: nothing to improve on
    of = f" of --epochs {epochs}" if epochs else ""
    return f"early stopping (--early-stopping {patience}): {why}; stopped after epoch {stopped_epoch}{of}"
