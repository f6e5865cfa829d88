"""The learning-rate callbacks: PlannedLR assigns any step -> LR function's value before each batch;
LinearWarmup is PlannedLR with Goyal et al.'s linear warm-up ramp only, the one definition of that ramp
(`warmup_lr`, which train.Plan's schedule starts with too)."""
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
    """Assign the LR that `lr_at(global step)` (train.Plan: warm-up, schedule, fine-tuning factor) gives,
    before each batch. A pure function of the step, so a resumed run gets the uninterrupted run's LRs;
    it assigns only when the value changes, so a flat stretch costs no op per step. `lr_at` returning None
    assigns nothing: the optimizer keeps the LR it has."""

    def __init__(self, lr_at: Callable[[int], float | None], steps_per_epoch: int):
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
        if lr is not None and lr != self.last:
            self.model.optimizer.learning_rate.assign(lr)
            self.last = lr


class LinearWarmup(PlannedLR):
    """Ramp the LR per batch from base_lr to scaled_lr over `warmup_steps` steps (`warmup_lr`).

    Same ramp as Horovod's LearningRateWarmupCallback, but it also works for MirroredStrategy and it
    leaves momentum alone (Horovod 0.28.1's momentum correction assigns to the Keras 2.11+ optimizers'
    plain-float `momentum`, which fails). After the ramp it assigns nothing, so it costs no step time and
    leaves the optimizer's LR as it is (a resumed or elastic run's restored one included).
    """

    def __init__(self, base_lr: float, scaled_lr: float, warmup_steps: int, steps_per_epoch: int):
        self.base_lr, self.scaled_lr, self.warmup_steps = base_lr, scaled_lr, warmup_steps
        super().__init__(self.lr_at, steps_per_epoch)

    def lr_at(self, step: int) -> float | None:
        """The LR for global step `step` (0-based) during the ramp; None once it is over."""
        if step > self.warmup_steps:
            return None
        return warmup_lr(step, self.warmup_steps, self.base_lr, self.scaled_lr)
