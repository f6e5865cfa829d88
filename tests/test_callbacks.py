"""Callbacks without a training run: the warm-up arithmetic, the target epoch, the progress lines; the
per-phase epoch times on a tiny in-memory fit."""
from __future__ import annotations

import pytest
import tensorflow as tf

from hvdweather.callbacks import (
    PHASES,
    Checkpoints,
    EarlyStop,
    EpochMetrics,
    PhaseTimed,
    PlannedLR,
    ProgressLog,
    first_epoch_reaching,
    phase_of,
    timed_callbacks,
    warmup_lr,
)
from hvdweather.writers import RunWriter


def test_warmup_ramps_from_base_to_scaled():
    assert [warmup_lr(step, 4, 0.01, 0.04) for step in range(6)] == pytest.approx(
        [0.01, 0.0175, 0.025, 0.0325, 0.04, 0.04])
    assert warmup_lr(0, 0, 0.01, 0.07) == 0.07  # no ramp: scaled from the start


def test_planned_lr_assigns_by_global_step_and_only_changes():
    class Optimizer:
        class learning_rate:  # noqa: N801 - stands in for a tf.Variable
            values = []

            @classmethod
            def assign(cls, value):
                cls.values.append(value)

    class Model:
        optimizer = Optimizer

    planned = PlannedLR(lambda step: warmup_lr(step, 4, 0.1, 0.3), steps_per_epoch=2)
    planned.set_model(Model)
    planned.on_train_begin()
    planned.on_epoch_begin(1)
    planned.on_train_batch_begin(1)  # global step 3 of the ramp's 4
    assert Optimizer.learning_rate.values == [pytest.approx(0.25)]
    planned.on_epoch_begin(2)
    planned.on_train_batch_begin(0)  # step 4: the ramp's end
    planned.on_train_batch_begin(1)  # step 5: the same LR, so no second assignment
    assert Optimizer.learning_rate.values == [pytest.approx(0.25), 0.3]


def test_first_epoch_reaching_the_target():
    rows = [{"epoch": 1, "val_accuracy": 0.3}, {"epoch": 2, "val_accuracy": 0.6}, {"epoch": 3, "val_accuracy": 0.7}]
    assert first_epoch_reaching(rows, 0.5) == 2
    assert first_epoch_reaching(rows, 0.9) is None
    assert first_epoch_reaching(rows, 0.0) is None
    assert first_epoch_reaching([{"epoch": 1, "accuracy": 0.8}], 0.5) == 1  # no validation set


class _FakeOptimizer:
    learning_rate = 0.01


class _FakeModel:
    optimizer = _FakeOptimizer


def test_epoch_metrics_record_the_target_epoch_across_a_resume(tmp_path):
    writer = RunWriter(tmp_path, is_primary=True)
    metrics = EpochMetrics(writer, 64, {"world_size": 1}, target_accuracy=0.5,
                           previous=[{"epoch": 1, "val_accuracy": 0.6}])
    metrics.set_model(_FakeModel)
    metrics.on_epoch_begin(1)
    metrics.on_train_batch_end(0)
    metrics.on_epoch_end(1, {"loss": 1.0, "val_accuracy": 0.4})
    row = writer.read_jsonl("metrics.jsonl")[0]
    assert row["epoch"] == 2 and row["target_accuracy_epoch"] == 1


def test_progress_log_prints_whole_lines_every_tenth_of_an_epoch(tmp_path, capsys):
    log = ProgressLog(RunWriter(tmp_path, is_primary=True), epochs=3, images_per_step=16, step_lines=True)
    log.set_params({"steps": 20})
    log.on_epoch_begin(0)
    for batch in range(20):
        log.on_train_batch_end(batch)
    log.on_epoch_end(0, {"loss": 1.5, "accuracy": 0.25, "val_loss": 1.7})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and "\r" not in "".join(lines)
    assert lines[0].startswith("epoch 1/3: 2/20 steps (10%)") and "images/s, ETA" in lines[0]
    assert lines[-1].startswith("epoch 1/3: loss 1.5000 accuracy 0.2500 val_loss 1.7000")


def test_progress_log_epoch_lines_only_and_silent_on_other_ranks(tmp_path, capsys):
    for primary, expected in ((True, 1), (False, 0)):
        log = ProgressLog(RunWriter(tmp_path, is_primary=primary), 1, 8, step_lines=False)
        log.set_params({"steps": 30})
        log.on_epoch_begin(0)
        for batch in range(30):
            log.on_train_batch_end(batch)
        log.on_epoch_end(0, {"loss": 1.0})
        assert len(capsys.readouterr().out.splitlines()) == expected


def _early_stop(tmp_path, patience: int, previous: list[dict]) -> EarlyStop:
    stop = EarlyStop(patience, previous, RunWriter(tmp_path, is_primary=True))
    stop.set_model(tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)]))
    stop.set_params({"epochs": 9})
    return stop


def test_early_stopping_continues_a_resumed_count_and_says_when_it_stops(tmp_path, capsys):
    """A resumed run (3 epochs done, best at epoch 2, 1 epoch since) stops one epoch later at patience
    2, with one line naming the best epoch, its value and the epoch it stopped after."""
    stop = _early_stop(tmp_path, 2, [{"val_loss": 1.0}, {"val_loss": 0.8}, {"val_loss": 0.9}])
    stop.on_epoch_end(3, {"loss": 0.1, "val_loss": 0.85})
    assert stop.model.stop_training and stop.stopped_epoch == 4
    stop.on_train_end()
    assert capsys.readouterr().out == ("early stopping (--early-stopping 2): val_loss has not improved on "
                                       "epoch 2's 0.8000 for 2 epoch(s); stopped after epoch 4 of --epochs 9\n")


def test_early_stopping_on_nan_from_the_start_says_there_was_nothing_to_improve_on(tmp_path, capsys):
    stop = _early_stop(tmp_path, 1, [])
    stop.on_epoch_end(0, {"loss": float("nan")})  # no validation subset: loss is watched
    stop.on_train_end()
    assert capsys.readouterr().out == ("early stopping (--early-stopping 1): no epoch gave a finite loss; "
                                       "stopped after epoch 1 of --epochs 9\n")
    quiet = _early_stop(tmp_path, 3, [])
    quiet.on_epoch_end(0, {"val_loss": 1.0})
    quiet.on_train_end()
    assert not quiet.model.stop_training and capsys.readouterr().out == ""


def _sleeper(phase: str, hook: str, seconds: float):
    """A callback that sleeps `seconds` in `hook`, timed under `phase` (its timer_phase)."""
    import time

    import tensorflow as tf

    callback = tf.keras.callbacks.Callback()
    callback.timer_phase = phase
    setattr(callback, hook, lambda *args, **kwargs: time.sleep(seconds))
    return callback


def test_each_phase_of_an_epoch_lands_in_its_metrics_row(tmp_path):
    """Sleeps placed in known hooks show up in their phases, the checkpoint's too although it runs after
    EpochMetrics wrote the row, and the phases add up to the epoch. Proven to fail: dropping _PhaseEnd's
    rewrite of metrics.jsonl leaves the rows without "phases"; timing the train window up to the epoch's
    end counts validation twice (keras_s, the remainder, turns negative)."""
    import numpy as np
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    writer = RunWriter(tmp_path, is_primary=True)
    metrics = EpochMetrics(writer, 8, {"world_size": 1})
    inner = [_sleeper("metric_averaging", "on_epoch_end", 0.05), _sleeper("bn_averaging", "on_train_batch_end", 0.02),
             metrics, _sleeper("checkpoint", "on_epoch_end", 0.05), _sleeper("other_callbacks", "on_test_end", 0.03)]
    x = np.zeros((8, 2), np.float32)
    model.fit(x, x, batch_size=4, epochs=2, validation_data=(x, x), verbose=0,
              callbacks=timed_callbacks(inner, metrics, writer))
    rows = writer.read_jsonl("metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        phases = row["phases"]
        assert set(phases) == {f"{p}_s" for p in PHASES} | {"epoch_s"}
        assert phases["metric_averaging_s"] >= 0.05 and phases["checkpoint_s"] >= 0.05
        assert phases["bn_averaging_s"] >= 0.04  # 2 batches x 0.02
        assert phases["other_callbacks_s"] >= 0.03  # the sleep at validation's end is not validation's
        assert phases["train_steps_s"] > 0 and phases["validation_s"] > 0
        parts = sum(v for k, v in phases.items() if k != "epoch_s")
        assert parts == pytest.approx(phases["epoch_s"], abs=1e-3)
        assert phases["keras_s"] >= -1e-3  # the remainder: negative if a phase were counted twice


def test_a_timed_callback_keeps_what_keras_sees_and_its_phase(tmp_path):
    """Keras calls batch hooks only when a callback implements them: the wrapper must not claim them."""
    writer = RunWriter(tmp_path, is_primary=True)
    metrics = EpochMetrics(writer, 8, {})
    checkpoints = Checkpoints(writer)
    assert PhaseTimed(metrics, None)._implements_train_batch_hooks()
    assert not PhaseTimed(checkpoints, None)._implements_train_batch_hooks()
    assert phase_of(checkpoints) == "checkpoint" and phase_of(metrics) == "other_callbacks"
    named = type("MetricAverageCallback", (), {})()  # Horovod's, matched by its class name
    assert phase_of(named) == "metric_averaging"
