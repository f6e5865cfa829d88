"""Horovod's own training options and the check of Adasum's world, TensorFlow-free and horovod-free: the
values come from the config, and the check needs only the world's counts."""
from __future__ import annotations

from dataclasses import dataclass

from hvdweather.errors import ConfigError


def check_adasum_world(size: int, local_size: int, gpu_nccl: bool) -> None:
    """Horovod's Adasum pairs up ranks (on GPUs with NCCL, nodes): their number must be a power of two.
    Horovod itself raises only when the first training step is traced, after the scan and the model."""
    count, unit = (size // max(1, local_size), "nodes") if gpu_nccl else (size, "ranks")
    if count & (count - 1):  # Horovod: check_num_rank_power_of_2
        raise ConfigError(f"--adasum needs a power-of-two number of {unit} (1, 2, 4, 8...), got {count}: "
                          f"launch on that many {unit} or drop --adasum")


@dataclass(frozen=True)
class HorovodOptions:
    """Horovod's own training options (as in its examples), from the config's fields of the same names."""

    fp16_allreduce: bool = False  # Horovod: gradients sent as float16 (hvd.Compression.fp16)
    backward_passes_per_step: int = 1  # Horovod: local gradient accumulation before each allreduce
    adasum: bool = False  # Horovod: op=hvd.Adasum instead of averaging
    autotune: bool = False  # Horovod: HOROVOD_AUTOTUNE, tunes fusion buffer and cycle time
    autotune_log: str = ""  # Horovod: HOROVOD_AUTOTUNE_LOG, a CSV of what autotune tried
