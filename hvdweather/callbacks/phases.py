"""Where an epoch's time goes: each callback wrapped so its hooks are timed under a phase (PhaseTimed), two
clock callbacks around them that mark Keras's windows (_PhaseStart, _PhaseEnd), and the seconds per phase
put into the epoch's metrics.jsonl row ("phases"). `timed_callbacks` wraps a whole list."""
from __future__ import annotations

import time

import tensorflow as tf

from hvdweather.callbacks.epoch_log import EpochMetrics
from hvdweather.writers import RunWriter

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
