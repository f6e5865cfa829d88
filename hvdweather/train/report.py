"""After fit: the test report of the last and of the best weights, the target-accuracy line, and the
run's rank records. Collective: every rank predicts its test shard and gets the whole set back.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from hvdweather.callbacks import Checkpoints, EpochMetrics
from hvdweather.distributed import TrainingBackend
from hvdweather.evaluate.report import (
    TestPredictions,
    format_report,
    predict_probabilities,
    write_checkpoint_report,
    write_test_summaries,
)
from hvdweather.runfiles import first_epoch_reaching
from hvdweather.train.context import FitInputs, RunContext
from hvdweather.train.record import record_ranks


def gather_test(backend: TrainingBackend, model: tf.keras.Model,
                dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every rank predicts its test shard; all ranks get the whole (labels, probabilities) back."""
    parts = backend.allgather_object(predict_probabilities(model, dataset))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def report(run: RunContext, inputs: FitInputs, checkpoints: Checkpoints, last_epoch: int) -> pd.DataFrame | None:
    """Test metrics of the last weights (report/last/) and of the best (report/, as before), both in
    report/test_metrics.json: the CIFAR-10 lab's "best model vs last model". Ends with the best weights."""
    writer, model, datasets, class_names = run.writer, inputs.model, inputs.datasets, inputs.split.class_names
    best_is_last = checkpoints.best_weights is None or checkpoints.best_epoch == last_epoch
    if "test" not in datasets:
        if not best_is_last:
            model.set_weights(checkpoints.best_weights)
        return None
    rows = writer.read_jsonl("metrics.jsonl")
    y_true, probabilities = gather_test(run.backend, model, datasets["test"])  # the weights fit ended with
    test = TestPredictions(y_true, probabilities, class_names)
    _, last = write_checkpoint_report(writer, test, None, "report/last", last_epoch)
    if run.cfg.tensorboard:
        write_test_summaries(writer, "last", last, test)
    if not best_is_last:  # else the best weights are the last ones: no second pass
        model.set_weights(checkpoints.best_weights)
        y_true, probabilities = gather_test(run.backend, model, datasets["test"])
    test = TestPredictions(y_true, probabilities, class_names)
    frame, best = write_checkpoint_report(writer, test, rows, "report", checkpoints.best_epoch or last_epoch)
    if run.cfg.tensorboard:
        write_test_summaries(writer, "best", best, test)
    writer.write_json("report/test_metrics.json", {"best": best, "last": last})
    writer.log(format_report(frame))
    writer.log(f"test accuracy {best['test_accuracy']:.4f} on {len(y_true)} images "
               f"(best epoch {checkpoints.best_epoch or 'resumed'}); last epoch {last_epoch}: "
               f"{last['test_accuracy']:.4f}; report in {writer.path('report')}")
    return frame


def log_target(run: RunContext, metrics: EpochMetrics) -> None:
    """The --target-accuracy line: the first epoch that reached it, or how many epochs did not."""
    target = run.cfg.target_accuracy
    if target > 0:
        epoch = first_epoch_reaching(metrics.rows, target)
        run.writer.log(f"target accuracy {target:g}: " + (f"first reached at epoch {epoch}" if epoch
                       else f"not reached in {len(metrics.rows)} epoch(s)"))


def finish(run: RunContext, inputs: FitInputs, checkpoints: Checkpoints, metrics: EpochMetrics) -> dict[str, Any]:
    """After fit: the test report, the target line, shards.csv and ranks.json (collective: every rank)."""
    # The last epoch trained: early stopping may end before --epochs (the same on every rank).
    # The primary's rows hold every epoch (on a resume of a finished run, other ranks have none).
    last_epoch = run.backend.broadcast_object(metrics.rows[-1]["epoch"] if metrics.rows else 0)
    frame = report(run, inputs, checkpoints, last_epoch)
    log_target(run, metrics)
    record_ranks(run, inputs)
    return {"test_accuracy": None if frame is None else float(frame.loc["accuracy", "f1"]),
            "world_size": run.runtime.num_workers}
