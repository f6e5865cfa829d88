"""Where fit starts: a new run from rank 0's initial weights, or a --resume from the run's checkpoint
(after the checks that it continues the same run), or a finished run that has nothing left to train.

What a checkpoint holds and how it is put back is `hvdweather.resume` (the Checkpoints callback writes
it too); this module is the run's side of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from hvdweather.callbacks import epochs_without_improvement
from hvdweather.config import TrainConfig
from hvdweather.data.split import Split
from hvdweather.resume import STATE_FILE, check_same_files, check_same_world, restore
from hvdweather.runfiles import rebase, split_root
from hvdweather.train.context import RunContext


@dataclass(frozen=True)
class Start:
    """Where fit starts: epochs already trained and the best checkpoint so far (a resume or an elastic
    reset carries them over; a new run starts from nothing)."""

    epochs_done: int = 0
    best_loss: float = float("inf")
    best_epoch: int = 0
    best_weights: list | None = None


def load_resume_state(run: RunContext) -> dict[str, Any] | None:
    """The run's resume state on every rank (the primary reads it and broadcasts); None for a new run
    or one killed before its first epoch ended."""
    state = run.writer.read_state(STATE_FILE) if run.cfg.resume else None
    return run.backend.broadcast_object(state)


def check_resume(run: RunContext, split: Split) -> None:
    """A resume continues the same run: same world, same files (config: see config.resume_config)."""
    cfg, backend, writer, rt = run.cfg, run.backend, run.writer, run.runtime
    record = backend.broadcast_object(writer.read_json("config.json")) or {}
    if not cfg.elastic:  # an elastic run changes its world by design; its plan follows each world
        check_same_world(record, rt.strategy, rt.num_workers)
    # The run's files live on the primary's disk; every rank then checks the same sets, so all stop.
    skipped = backend.broadcast_object(set(rebase([row["path"] for row in writer.read_csv("skipped.csv")],
                                                  split_root(record), cfg.data)))
    check_same_files(run.source.catalog, set().union(*split.paths.values()), skipped, cfg.data)


def stopped_early(cfg: TrainConfig, rows: list[dict[str, Any]]) -> int:
    """The epoch at which early stopping ended the run these metrics rows are of (0: it did not)."""
    if not cfg.early_stopping or not rows:
        return 0
    return int(rows[-1]["epoch"]) if epochs_without_improvement(rows)[1] >= cfg.early_stopping else 0


def nothing_to_train(run: RunContext, state: dict[str, Any]) -> str:
    """Why a resumed run has no epoch left to train: all of --epochs done, or early stopping ended it
    ("" when it has). Collective: every rank holds the same state, and gets rank 0's metrics rows."""
    cfg = run.cfg
    done = state["epochs_done"]
    if done >= cfg.epochs:
        return (f"{cfg.out} already trained {done} epoch(s) of --epochs {cfg.epochs}; nothing to resume "
                "(raise --epochs to train on)")
    rows = run.backend.broadcast_object(run.writer.read_jsonl("metrics.jsonl")[:done])
    epoch = stopped_early(cfg, rows)
    if not epoch:
        return ""
    monitor = "val_loss" if "val_loss" in rows[-1] else "loss"
    return (f"{cfg.out} stopped early after epoch {epoch} (--early-stopping {cfg.early_stopping}: no better "
            f"{monitor} for {cfg.early_stopping} epoch(s)); nothing to resume")


def begin(run: RunContext, model: tf.keras.Model, state: dict[str, Any] | None, resuming: bool = True) -> Start:
    """Every rank's model before step 1: the resume state restored, or rank 0's initial weights.
    `resuming` False: a finished run only writing its report (it trains nothing, so it says nothing)."""
    if not state:
        run.backend.broadcast_weights(model)
        return Start()
    with run.backend.scope():  # the optimizer's slots are created here: mirrored ones under mirrored
        restore(model, state)
    if resuming:
        run.writer.log(f"resuming after epoch {state['epochs_done']} (from {run.writer.path(STATE_FILE)})")
    return Start(state["epochs_done"], state["best_loss"], state["best_epoch"], state["best_weights"])
