"""The training callbacks that are not distributed code: LR warm-up, per-epoch metrics, checkpoints,
and the progress log. They write through a RunWriter, so none of them tests the rank.

Order in fit (train.py): the backend's own (under Horovod, distributed.py's metric averaging and
BatchNorm averaging; rank 0's start is broadcast before the first step, not by a callback), the LR
callbacks, then the readers of averaged metrics: EpochMetrics, Checkpoints, EarlyStop, TensorBoardLog,
ProgressLog.
"""
from __future__ import annotations

import math
import time
from typing import Any

import tensorflow as tf

from hvdweather.resume import STATE_FILE, capture
from hvdweather.runfiles import first_epoch_reaching  # TF-free home; imported here by train
from hvdweather.writers import RunWriter


class LinearWarmup(tf.keras.callbacks.Callback):
    """Ramp the LR per batch from base_lr to scaled_lr over `warmup_steps` steps (Goyal et al. 2017).

    Same ramp as Horovod's LearningRateWarmupCallback, but it also works for MirroredStrategy and it
    leaves momentum alone (Horovod 0.28.1's momentum correction assigns to the Keras 2.11+ optimizers'
    plain-float `momentum`, which fails). After the ramp it does nothing, so it costs no step time.
    """

    def __init__(self, base_lr: float, scaled_lr: float, warmup_steps: int, steps_per_epoch: int):
        super().__init__()
        self.base_lr, self.scaled_lr = base_lr, scaled_lr
        self.warmup_steps, self.steps_per_epoch = warmup_steps, steps_per_epoch
        self.epoch = 0

    def lr_at(self, step: int) -> float | None:
        """The LR for global step `step` (0-based) during the ramp; None once it is over."""
        if step > self.warmup_steps:
            return None
        return self.base_lr + (step / self.warmup_steps) * (self.scaled_lr - self.base_lr)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        lr = self.lr_at(self.epoch * self.steps_per_epoch + batch)
        if lr is not None:
            self.model.optimizer.learning_rate.assign(lr)


class EpochMetrics(tf.keras.callbacks.Callback):
    """Appends one metrics.jsonl line per epoch; place it after the metric averaging (distributed.py).

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


class Checkpoints(tf.keras.callbacks.Callback):
    """last.keras every epoch; best.keras when val_loss (else loss) improves; then the resume state
    (hvdweather.resume), so last.keras is never newer than what a resume continues from.

    Files are written atomically by the primary only (via the writer). Every rank keeps the best weights
    in memory: the averaged val_loss is the same on all ranks, so all restore the same weights for the
    test report without reading a file another node wrote.
    """

    def __init__(self, writer: RunWriter, best_loss: float = float("inf"), best_epoch: int = 0,
                 best_weights: list | None = None):
        super().__init__()
        self.writer, self.best_loss = writer, best_loss
        self.best_epoch = best_epoch
        self.best_weights: list | None = best_weights

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        monitor = logs.get("val_loss", logs.get("loss"))
        self.writer.save_model("last.keras", self.model)
        if monitor is not None and monitor < self.best_loss:
            self.best_loss, self.best_epoch = float(monitor), epoch + 1
            self.best_weights = self.model.get_weights()
            # The model just saved as last.keras: a link to that file, not a second save (~0.1 s of
            # Keras serialising the same model again, paid once per improving epoch while the other
            # ranks wait in the next step's allreduce).
            self.writer.copy_file("last.keras", "best.keras")
        self.writer.save_state(STATE_FILE, lambda: capture(self.model, epoch + 1, self.best_loss,
                                                           self.best_epoch, self.best_weights))


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
    an ETA (`steps_lines`), and one line per epoch with the averaged metrics."""

    def __init__(self, writer: RunWriter, epochs: int, global_batch_size: int, step_lines: bool):
        super().__init__()
        self.writer, self.epochs, self.global_batch_size = writer, epochs, global_batch_size
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
                        f"{done * self.global_batch_size / elapsed:.1f} images/s, "
                        f"ETA {elapsed / done * (steps - done):.0f} s")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                          if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        self.writer.log(f"epoch {epoch + 1}/{self.epochs}: {values} ({time.perf_counter() - self.start:.1f} s)")


class PlannedLR(tf.keras.callbacks.Callback):
    """Assign the LR that `lr_at(global step)` (train.Plan: warm-up, schedule, fine-tuning factor) gives,
    before each batch. A pure function of the step, so a resumed run gets the uninterrupted run's LRs;
    it assigns only when the value changes, so a flat stretch costs no op per step."""

    def __init__(self, lr_at, steps_per_epoch: int):
        super().__init__()
        self.lr_at, self.steps_per_epoch = lr_at, steps_per_epoch
        self.epoch = 0
        self.last: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.last = None  # a recompiled model (fine-tuning) has a new optimizer: assign afresh

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        lr = self.lr_at(self.epoch * self.steps_per_epoch + batch)
        if lr != self.last:
            self.model.optimizer.learning_rate.assign(lr)
            self.last = lr


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


# Where an epoch's time goes, per phase, on the primary's clock: metrics.jsonl's "phases" (seconds).
# train_steps: Keras's training loop less the callbacks' hooks in it; validation: the same for its
# evaluation pass; then each callback's hooks by what they do; keras: the rest (Keras's own work between
# the phases, e.g. fetching the epoch's logs).
PHASES = ("train_steps", "validation", "bn_averaging", "metric_averaging", "checkpoint", "tensorboard",
          "other_callbacks", "keras")
# A callback's phase: its `timer_phase` attribute, else by class name (Horovod's and our own), else
# other_callbacks (LR, EpochMetrics, ProgressLog, EarlyStop, the elastic commit).
_PHASE_OF_CLASS = {"MetricAverageCallback": "metric_averaging", "AverageEpochMetrics": "metric_averaging",
                   "AverageBatchNormStatistics": "bn_averaging", "Checkpoints": "checkpoint",
                   "TensorBoardLog": "tensorboard"}
_HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
          "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
          "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")


def phase_of(callback: tf.keras.callbacks.Callback) -> str:
    """The phase a callback's hooks are timed under (see PHASES)."""
    return getattr(callback, "timer_phase", None) or _PHASE_OF_CLASS.get(type(callback).__name__, "other_callbacks")


class PhaseClock:
    """perf_counter times of one epoch: the windows Keras runs in (training loop, validation, epoch end)
    and the seconds each callback phase took, in total and inside the current window."""

    def __init__(self) -> None:
        self.start_epoch()

    def start_epoch(self) -> None:
        self.marks: dict[str, float] = {"epoch_begin": time.perf_counter()}
        self.window = "train"
        self.callback_s = {phase: 0.0 for phase in PHASES}
        self.hooks_in = {"train": 0.0, "validation": 0.0, "end": 0.0}

    def mark(self, name: str, window: str) -> None:
        """A window boundary (validation_begin, validation_end, end_begin, epoch_end); the window now open."""
        self.marks[name], self.window = time.perf_counter(), window

    def add(self, phase: str, seconds: float) -> None:
        self.callback_s[phase] += seconds
        self.hooks_in[self.window] += seconds

    def phases(self) -> dict[str, float]:
        """Seconds per phase of the epoch now ending, and the epoch's total (epoch_s)."""
        m = self.marks
        end = m.get("epoch_end", time.perf_counter())
        loop_end = m.get("validation_begin", m.get("end_begin", end))
        times = dict(self.callback_s)
        times["train_steps"] = loop_end - m["epoch_begin"] - self.hooks_in["train"]
        if "validation_begin" in m:
            times["validation"] = m.get("validation_end", end) - m["validation_begin"] - self.hooks_in["validation"]
        total = end - m["epoch_begin"]
        times["keras"] = total - sum(v for k, v in times.items() if k != "keras")
        return {f"{k}_s": round(v, 4) for k, v in times.items()} | {"epoch_s": round(total, 4)}


class PhaseTimed(tf.keras.callbacks.Callback):
    """A callback whose every hook is timed under its phase on `clock`; otherwise it is the callback (Keras
    sees its batch hooks and log support, so wrapping adds no per-step work for callbacks without hooks)."""

    def __init__(self, inner: tf.keras.callbacks.Callback, clock: PhaseClock):
        super().__init__()
        self.inner, self.clock, self.phase = inner, clock, phase_of(inner)
        self._supports_tf_logs = getattr(inner, "_supports_tf_logs", False)
        for name in _HOOKS:
            setattr(self, name, self._timed(getattr(inner, name)))

    def _timed(self, hook):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.clock.add(self.phase, time.perf_counter() - start)

        return timed

    def set_model(self, model: tf.keras.Model) -> None:
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.inner.set_params(params)

    def _implements_train_batch_hooks(self) -> bool:
        return self.inner._implements_train_batch_hooks()

    def _implements_test_batch_hooks(self) -> bool:
        return self.inner._implements_test_batch_hooks()

    def _implements_predict_batch_hooks(self) -> bool:
        return self.inner._implements_predict_batch_hooks()


class _PhaseStart(tf.keras.callbacks.Callback):
    """First in the list: its hooks run before every other callback's, so they open the windows."""

    def __init__(self, clock: PhaseClock):
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.clock.start_epoch()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.clock.mark("validation_begin", "validation")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.clock.mark("end_begin", "end")


class _PhaseEnd(tf.keras.callbacks.Callback):
    """Last in the list: closes the windows and puts the epoch's phases into its metrics.jsonl row. The
    row was appended by EpochMetrics before the checkpoint (a resume relies on that order), so the file is
    rewritten here, atomically, with the times of the callbacks that ran after it."""

    def __init__(self, clock: PhaseClock, metrics: EpochMetrics, writer: RunWriter):
        super().__init__()
        self.clock, self.metrics, self.writer = clock, metrics, writer

    def on_test_end(self, logs: dict | None = None) -> None:
        self.clock.mark("validation_end", "end")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.clock.mark("epoch_end", "end")
        if self.metrics.rows and self.metrics.rows[-1]["epoch"] == epoch + 1:
            self.metrics.rows[-1]["phases"] = self.clock.phases()
            self.writer.write_jsonl("metrics.jsonl", self.metrics.rows)


def timed_callbacks(callbacks: list[tf.keras.callbacks.Callback], metrics: EpochMetrics,
                    writer: RunWriter) -> list[tf.keras.callbacks.Callback]:
    """`callbacks` in the same order, each timed under its phase, between the two clock callbacks: each
    metrics.jsonl row then says where its epoch went (PHASES)."""
    clock = PhaseClock()
    return [_PhaseStart(clock), *(PhaseTimed(callback, clock) for callback in callbacks),
            _PhaseEnd(clock, metrics, writer)]
