"""The fixed-world run: `train(cfg)` from the checks to the test report, on one process, under Horovod or
under MirroredStrategy.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN   # or: mpirun -np 4 hvdweather-train ...
    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN

Order of work: cheap checks (flags, image size, data folder, run directory) -> scan images (split
across ranks) -> split -> datasets -> fit -> test report. Anything wrong fails before the scan.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from hvdweather.checks import check_val_shards
from hvdweather.config import ConfigError, TrainConfig
from hvdweather.data.source import Source
from hvdweather.train.context import FitInputs, RunContext, start_run
from hvdweather.train.fit import compile_model, fit
from hvdweather.train.inputs import input_normalization, make_datasets, make_split
from hvdweather.train.plan import make_plan
from hvdweather.train.record import log_start, run_record
from hvdweather.train.report import finish
from hvdweather.train.start import begin, check_resume, load_resume_state, nothing_to_train


def train(cfg: TrainConfig, source: Source | None = None,
          on_checkpoint: Callable[[int], None] = lambda epochs: None) -> dict[str, Any]:
    """Run one fixed-world training job end to end; returns a small summary (every rank). `on_checkpoint(n)`
    hears how many epochs the run's checkpoint holds, at the start and after each epoch's checkpoint, so
    that a caller can say it when the run is interrupted (hvdweather.cli on Ctrl-C). --elastic runs go
    through hvdweather.train.elastic.train_elastic, built on the same steps."""
    if cfg.elastic:
        raise ConfigError("--elastic runs are trained by hvdweather.train.elastic.train_elastic")
    run = RunContext.of(cfg, *start_run(cfg, source))
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every rank
    split = make_split(run)
    if cfg.resume:
        check_resume(run, split)
    state = load_resume_state(run)
    summary = {"run_dir": str(run.writer.run_dir), "test_accuracy": None, "world_size": run.runtime.num_workers}
    finished = nothing_to_train(run, state) if state else ""
    if finished:
        # Killed after its last checkpoint but before the report (a requeue can land there): finish that.
        reported = run.backend.broadcast_object(run.writer.exists("ranks.json"))
        run.writer.log(finished + ("" if reported else "; writing its report"))
        if reported:
            return summary
    check_val_shards(split.size("val"), run.backend.shard_count)
    plan = make_plan(cfg, split.size("train"), run.runtime, run.backend.shard_count)
    normalization = input_normalization(run, split)
    run.writer.write_json("config.json", run_record(run, split, plan) | {"normalization": normalization})
    log_start(run, split, plan)
    epochs_done = state["epochs_done"] if state else 0
    datasets = make_datasets(run, split, plan, epochs_done)  # then the model: the order runs were always built in
    model = compile_model(run, len(split.class_names), plan, normalization, epochs_done)
    inputs = FitInputs(split, plan, model, datasets)
    start = begin(run, inputs.model, state, resuming=not finished)
    on_checkpoint(start.epochs_done)
    saved = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_checkpoint(epoch + 1))
    checkpoints, metrics = fit(run, inputs, start, lambda _: [saved])  # after Checkpoints: the epoch is on disk
    return summary | finish(run, inputs, checkpoints, metrics)
