"""The run's batch, step and learning-rate arithmetic: one `Plan`, derived once per world from the config
and the runtime (a fixed-world run has one world; an elastic run recomputes it in each).

The LR of every step, warm-up included, is `Plan.lr_at(step)`, a pure function of the step; one callback
(`hvdweather.callbacks.PlannedLR`) assigns it, so a resumed run gets the uninterrupted run's LRs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from hvdweather.callbacks import PlannedLR, warmup_lr
from hvdweather.checks import check_batch
from hvdweather.config import ConfigError, TrainConfig, decay_epochs
from hvdweather.data.sharding import steps_per_epoch
from hvdweather.distributed import Runtime


@dataclass(frozen=True)
class Plan:
    """Batch, step and learning-rate arithmetic, derived once from the config and the runtime."""

    per_worker_batch_size: int
    global_batch_size: int  # per worker x workers: what one optimizer step averages over
    per_process_batch_size: int  # what one process batches: per worker x replicas in the process
    steps_per_epoch: int
    base_lr: float  # the LR for one worker (--lr)
    scaled_lr: float  # Horovod: base x workers (Goyal et al.), reached at the end of the warm-up
    warmup_steps: int  # steps of the linear ramp from base_lr to scaled_lr; 0 = start at scaled_lr
    # After the warm-up, with scaled_lr as the peak: constant, step (x decay_factor from each of
    # decay_steps on) or cosine (to zero at total_steps). Steps are fit's batches, from 0.
    schedule: str = "constant"
    total_steps: int = 0
    decay_steps: tuple[int, ...] = ()
    decay_factor: float = 1.0
    fine_tune_step: int = 0  # --freeze-backbone-epochs: the backbone trains from this step on (0 = always)
    fine_tune_lr_factor: float = 1.0  # the LR multiplier from fine_tune_step on
    backward_passes_per_step: int = 1  # Horovod: batches summed per optimizer update (global batch x this)

    def lr_at(self, step: int) -> float:
        """The LR of fit's batch `step` (0-based): the whole schedule in one pure function. The warm-up
        is Goyal et al.'s linear ramp (Horovod's LearningRateWarmupCallback ramps the same way)."""
        if step < self.warmup_steps:
            return warmup_lr(step, self.warmup_steps, self.base_lr, self.scaled_lr)
        lr = self.scaled_lr
        if self.schedule == "step":
            lr *= self.decay_factor ** sum(step >= d for d in self.decay_steps)
        elif self.schedule == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if self.fine_tune_step and step >= self.fine_tune_step:
            lr *= self.fine_tune_lr_factor
        return lr

    def lr_callbacks(self) -> list[tf.keras.callbacks.Callback]:
        """The callback that assigns `lr_at` before each batch; none when the LR never changes (the
        optimizer was built at `initial_lr`), so a flat run has no per-step LR op at all."""
        # Not Horovod's LearningRateWarmupCallback: it works under Horovod only (not MirroredStrategy),
        # and Horovod 0.28.1's momentum correction assigns to the Keras 2.11+ optimizers' plain-float
        # `momentum`, which fails.
        if self.schedule == "constant" and not self.fine_tune_step and not self.warmup_steps:
            return []
        return [PlannedLR(self.lr_at, self.steps_per_epoch)]

    def initial_lr(self) -> float:
        """The optimizer's LR before the first step: the ramp (if any) starts at the base."""
        return self.lr_at(0)

    @property
    def images_per_step(self) -> int:
        """Images in one of fit's batches over all workers (an update takes backward_passes_per_step)."""
        return self.global_batch_size // self.backward_passes_per_step


def make_plan(cfg: TrainConfig, n_train: int, runtime: Runtime, shard_count: int) -> Plan:
    """Batches, steps and the LR schedule; a batch larger than a process's shard is an error."""
    per_process = cfg.per_worker_batch_size * runtime.replicas_per_process
    check_batch(cfg.per_worker_batch_size, per_process, n_train, shard_count, runtime.num_workers)
    steps = steps_per_epoch(n_train, shard_count, per_process)
    passes = cfg.backward_passes_per_step
    if steps < passes:
        raise ConfigError(f"--backward-passes-per-step {passes}: an epoch has only {steps} batch(es) per worker")
    steps -= steps % passes  # whole updates per epoch: no half-summed gradient across a checkpoint
    workers = runtime.num_workers
    # Horovod: LR scaled by the number of workers; with Adasum not (its combination of gradients is
    # scale-preserving; Horovod's docs scale by local size only for GPU+NCCL, not on CPU).
    lr_factor = 1 if cfg.adasum else workers
    warmup = max(1, round(cfg.warmup_epochs * steps)) if cfg.warmup_epochs > 0 and lr_factor > 1 else 0
    return Plan(cfg.per_worker_batch_size, cfg.per_worker_batch_size * workers * passes, per_process, steps,
                cfg.lr, cfg.lr * lr_factor, warmup, cfg.lr_schedule, cfg.epochs * steps,
                tuple((e - 1) * steps for e in decay_epochs(cfg)), cfg.lr_decay_factor,
                cfg.freeze_backbone_epochs * steps if cfg.freeze_backbone_epochs else 0,
                cfg.fine_tune_lr_factor, passes)
