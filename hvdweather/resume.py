"""Exact resume: what a checkpoint holds, how it is put back, and the checks that a resume continues
the same run.

A run killed at any moment and re-launched with --resume ends with the same weights as a run never
interrupted, because everything that decides the next step is restored or is a pure function of
(seed, step): the weights and BatchNorm statistics, the optimizer's slots, iteration count and learning
rate (this file), the data order (the shuffled stream is replayed to the same element, see
`hvdweather.data.sharding.start_element`), augmentation (stateless, seeded by the element's index) and dropout
(`hvdweather.models.layers.StepSeededDropout`, seeded by its own step counter, a weight).

The state is written atomically after last.keras at every epoch end, by the primary (RunWriter).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from hvdweather.config import ConfigError
from hvdweather.data.discovery import Catalog

STATE_FILE = "resume_state.pkl"


def capture(model: tf.keras.Model, epochs_done: int, best_loss: float, best_epoch: int,
            best_weights: list[np.ndarray] | None) -> dict[str, Any]:
    """Everything the next step depends on, as numpy values."""
    optimizer = model.optimizer
    return {"epochs_done": epochs_done, "weights": [_values(v) for v in model.weights],
            "optimizer": [v.numpy() for v in optimizer.variables],
            "learning_rate": float(tf.keras.backend.get_value(optimizer.learning_rate)),
            "best_loss": best_loss, "best_epoch": best_epoch, "best_weights": best_weights}


def restore(model: tf.keras.Model, state: dict[str, Any]) -> None:
    """Put a captured state back into a compiled model, on every rank, before the first step.

    The optimizer's slots only exist after `build`, which fit would otherwise call at the first step;
    building now lets them be assigned (and Horovod's broadcast after step 1 then copies equal values).
    """
    for variable, values in zip(model.weights, state["weights"], strict=True):
        _assign(variable, values)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    if len(optimizer.variables) != len(state["optimizer"]):
        raise ConfigError(f"--resume: the checkpoint holds {len(state['optimizer'])} optimizer variables, "
                          f"this optimizer has {len(optimizer.variables)}; was --optimizer changed?")
    for variable, value in zip(optimizer.variables, state["optimizer"]):
        variable.assign(value)
    optimizer.learning_rate.assign(state["learning_rate"])


def _values(variable: tf.Variable) -> list[np.ndarray]:
    """Every copy a variable has: one, or one per replica under MirroredStrategy, where BatchNorm's
    moving statistics are sync-on-read and each replica keeps (and validates with) its own; their
    mean, which is all `get_weights` returns, would restart the replicas from equal copies."""
    return [np.array(v.numpy()) for v in getattr(variable, "values", (variable,))]


def _assign(variable: tf.Variable, values: list[np.ndarray]) -> None:
    for component, value in zip(getattr(variable, "values", (variable,)), values, strict=True):
        component.assign(value)


def check_same_world(record: dict[str, Any], strategy: str, num_workers: int) -> None:
    """A resume on another number of workers would be another run (global batch, LR, shards)."""
    world = record.get("world", {})
    before = (world.get("strategy"), world.get("num_workers"))
    if before != (strategy, num_workers) and None not in before:
        raise ConfigError(f"--resume: the run trained with {before[1]} {before[0]} worker(s), this launch "
                          f"has {num_workers} {strategy} worker(s); launch it the same way to continue it")


def check_same_files(catalog: Catalog, split_paths: set[str], skipped: set[str], data: str) -> None:
    """The data folder still holds exactly the run's files (those it split and those it skipped)."""
    now = set(catalog.paths)
    gone = sorted(split_paths - now)
    new = sorted(now - split_paths - skipped)
    if gone:
        raise ConfigError(f"--resume: {len(gone)} file(s) of the run's split are no longer in --data {data} "
                          f"(e.g. {gone[0]}); resume needs the same data")
    if new:
        raise ConfigError(f"--resume: --data {data} has {len(new)} file(s) the run did not split "
                          f"(e.g. {new[0]}); resume needs the same data, or start a new run")
