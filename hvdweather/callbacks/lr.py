"""The learning-rate callback: PlannedLR assigns a step -> LR function's value (train.plan.Plan.lr_at)
before each batch; `warmup_lr` is the one definition of Goyal et al.'s linear warm-up ramp, which the
plan starts with."""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def warmup_lr(step: int, warmup_steps: int, base_lr: float, scaled_lr: float) -> float:
    """The LR of global step `step` (0-based) on a linear ramp from base_lr (step 0) to scaled_lr (step
    `warmup_steps` and after); Goyal et al. 2017. warmup_steps 0: scaled_lr from the start."""
    if step >= warmup_steps:
        return scaled_lr
    return base_lr + (step / warmup_steps) * (scaled_lr - base_lr)


class PlannedLR(tf.keras.callbacks.Callback):
    """Assign the LR that `lr_at(global step)` (train.plan.Plan: warm-up, schedule, fine-tuning factor) gives,
    before each batch. A pure function of the step, so a resumed run gets the uninterrupted run's LRs;
    it assigns only when the value changes, so a flat stretch costs no op per step."""

    def __init__(self, lr_at: Callable[[int], float], steps_per_epoch: int):
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
