"""The model and its training: build and compile the --model network, then model.fit with the callbacks in
Horovod's order, in two phases under --freeze-backbone-epochs (the head alone, then everything).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from hvdweather.callbacks import (
    Checkpoints,
    EarlyStop,
    EpochMetrics,
    ProgressLog,
    TensorBoardLog,
    timed_callbacks,
)
from hvdweather.config import TrainConfig
from hvdweather.data.normalization import Moments
from hvdweather.data.split import Split
from hvdweather.models import create_model, reorder_weights, set_backbone_trainable
from hvdweather.optim import balanced_class_weights, make_loss, make_metrics, make_optimizer
from hvdweather.train.context import FitInputs, RunContext
from hvdweather.train.plan import Plan
from hvdweather.train.start import Start, stopped_early


def compile_model(run: RunContext, num_classes: int, plan: Plan, normalization: Moments | None = None,
                  epochs_done: int = 0) -> tf.keras.Model:
    """The --model network (weights, input normalisation), its backbone frozen when the run is (or a
    resumed run was, at its last checkpoint) inside --freeze-backbone-epochs; compiled."""
    cfg = run.cfg
    with run.backend.scope():
        model = create_model(cfg.model, num_classes, cfg.image_size, cfg.weights, normalization)
        if cfg.freeze_backbone_epochs and epochs_done <= cfg.freeze_backbone_epochs:
            set_backbone_trainable(model, False)
        recompile(run, model, num_classes, plan.initial_lr())
    return model


def recompile(run: RunContext, model: tf.keras.Model, num_classes: int, lr: float) -> None:
    """Compile with a fresh optimizer: at the start, and when fine-tuning unfreezes the backbone (every
    rank does it at the same epoch, so all build their slots for the same new trainable set)."""
    cfg, backend = run.cfg, run.backend
    with backend.scope():
        model.compile(optimizer=backend.wrap_optimizer(make_optimizer(cfg, lr)), loss=make_loss(cfg),
                      metrics=make_metrics(cfg, num_classes))


def class_weights(cfg: TrainConfig, split: Split) -> dict[int, float] | None:
    return (balanced_class_weights(np.asarray(split.labels["train"]), len(split.class_names))
            if cfg.class_weights == "balanced" else None)


def unfreeze(run: RunContext, inputs: FitInputs, checkpoints: Checkpoints) -> None:
    """End of --freeze-backbone-epochs: everything trains, with a fresh optimizer at the fine-tuning LR.
    Keras lists trainable weights first, so the best weights kept so far are put in the new order."""
    model, plan = inputs.model, inputs.plan
    before = list(model.weights)
    set_backbone_trainable(model, True)
    if checkpoints.best_weights is not None:
        checkpoints.best_weights = reorder_weights(checkpoints.best_weights, before, model.weights)
    recompile(run, model, model.output_shape[-1], plan.lr_at(plan.fine_tune_step))


def fit_phases(run: RunContext, inputs: FitInputs, initial_epoch: int, checkpoints: Checkpoints,
               **fit_args: Any) -> None:
    """model.fit; under --freeze-backbone-epochs in two parts: the head alone, then everything. Every
    rank switches at the same epoch. A run resumed exactly at the switch was compiled frozen (its
    checkpoint was) and switches before its first step, as the uninterrupted run did."""
    cfg, model, plan = run.cfg, inputs.model, inputs.plan
    freeze = cfg.freeze_backbone_epochs
    parts = [(initial_epoch, cfg.epochs)]
    if freeze and initial_epoch <= freeze:
        parts = [(initial_epoch, min(freeze, cfg.epochs)), (freeze, cfg.epochs)]
    for index, (start, end) in enumerate(parts):
        if index == 1:
            if model.stop_training or start >= end:  # early stopping ended the run in the first part
                return
            unfreeze(run, inputs, checkpoints)
        if start >= end:
            continue
        # Each fit opens a new iterator, at the stream's first batch (initial_epoch's): the second part
        # skips what the first took, so it goes on with the batches a run resumed at the switch sees.
        train = inputs.datasets["train"].skip((start - initial_epoch) * plan.steps_per_epoch)
        run.backend.trace_train_step(model, train)
        model.fit(train, epochs=end, initial_epoch=start, steps_per_epoch=plan.steps_per_epoch,
                  validation_data=inputs.datasets.get("val"), **fit_args)


def fit(run: RunContext, inputs: FitInputs, start: Start,
        last_callbacks: Callable[[Checkpoints], list[tf.keras.callbacks.Callback]] = lambda _: [],
        ) -> tuple[Checkpoints, EpochMetrics]:
    """model.fit from `start`, with the callbacks in Horovod's order: average, LR, then the readers of
    averaged metrics; `last_callbacks(checkpoints)` run after all of them (the elastic commit)."""
    cfg, backend, writer, rt, plan = run.cfg, run.backend, run.writer, run.runtime, inputs.plan
    # Every rank's EarlyStop must see the same epochs, or one stops while another waits in an allreduce.
    previous = backend.broadcast_object(writer.read_jsonl("metrics.jsonl")[:start.epochs_done])
    writer.write_jsonl("metrics.jsonl", previous)  # drop rows of an epoch whose checkpoint never landed
    world = {"world_size": rt.num_workers, "processes": rt.size, "strategy": rt.strategy,
             "global_batch_size": plan.global_batch_size}
    metrics = EpochMetrics(writer, plan.steps_per_epoch * plan.images_per_step, world,
                           cfg.target_accuracy, previous)
    checkpoints = Checkpoints(writer, start.best_loss, start.best_epoch, start.best_weights)
    callbacks = [*backend.callbacks(), *plan.lr_callbacks(), metrics, checkpoints]
    if cfg.early_stopping:  # after the checkpoint, so the last epoch trained is saved
        callbacks.append(EarlyStop(cfg.early_stopping, previous, writer))
        if stopped_early(cfg, previous):
            return checkpoints, metrics  # it stopped at its last checkpoint: nothing left to train
    if cfg.tensorboard:  # after EpochMetrics: it logs that callback's row
        callbacks.append(TensorBoardLog(writer, metrics))
    keras_verbose = writer.keras_verbose(cfg.verbose)
    if cfg.verbose and not keras_verbose:  # a log file, not a terminal: whole lines
        callbacks.append(ProgressLog(writer, cfg.epochs, plan.images_per_step, step_lines=cfg.verbose == 1))
    callbacks.extend(last_callbacks(checkpoints))
    callbacks = timed_callbacks(callbacks, metrics, writer)  # metrics.jsonl's per-phase times
    fit_phases(run, inputs, start.epochs_done, checkpoints, callbacks=callbacks, verbose=keras_verbose,
               class_weight=class_weights(cfg, inputs.split))
    return checkpoints, metrics
