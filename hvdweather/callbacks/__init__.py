"""The training callbacks that are not distributed code, one module per concern: the LR (lr), the
per-epoch records (epoch_log), checkpoints, early stopping (early_stop) and where an epoch's time goes
(phases). They write through a RunWriter, so none of them tests the rank.

Order in fit (train.fit.fit), each kept for a reason:
  1. the backend's own: under Horovod, hvdweather.distributed's metric averaging (AverageEpochMetrics),
     then BatchNorm averaging (AverageBatchNormStatistics); none under MirroredStrategy. Rank 0's start
     is broadcast before the first step (train.start.begin), not by a callback;
  2. the LR: PlannedLR (train.plan.Plan.lr_at: warm-up, schedule, fine-tuning), none when the LR never changes;
  3. the readers of averaged metrics: EpochMetrics, Checkpoints, then EarlyStop (after the checkpoint, so
     the last epoch trained is saved), TensorBoardLog (after EpochMetrics: it logs that row), ProgressLog;
  4. last, under --elastic, the backend's elastic commit (after the checkpoint).
`timed_callbacks` then wraps each in a PhaseTimed, in the same order, between _PhaseStart and _PhaseEnd.
"""
from hvdweather.callbacks.checkpoints import Checkpoints
from hvdweather.callbacks.early_stop import EarlyStop, epochs_without_improvement, stop_line
from hvdweather.callbacks.epoch_log import EpochMetrics, ProgressLog, TensorBoardLog
from hvdweather.callbacks.lr import PlannedLR, warmup_lr
from hvdweather.callbacks.phases import PHASES, PhaseClock, PhaseTimed, phase_of, timed_callbacks
from hvdweather.runfiles import first_epoch_reaching  # TF-free home; imported from here by train

__all__ = ["PHASES", "Checkpoints", "EarlyStop", "EpochMetrics", "PhaseClock", "PhaseTimed",
           "PlannedLR", "ProgressLog", "TensorBoardLog", "epochs_without_improvement", "first_epoch_reaching",
           "phase_of", "stop_line", "timed_callbacks", "warmup_lr"]
