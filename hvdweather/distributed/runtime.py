"""What a process knows about its place in the job (Runtime) and its thread budget, for both backends."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from hvdweather.host import available_cores
from hvdweather.writers import RunWriter


@dataclass(frozen=True)
class Runtime:
    """Facts about this process in the job; never stored on the config."""

    strategy: str  # "horovod" or "mirrored"
    rank: int  # process rank in the job
    local_rank: int  # process rank on this node (GPU pinning)
    size: int  # processes in the job
    local_size: int  # processes on this node
    replicas_per_process: int  # model replicas inside one process (mirrored: N, horovod: 1)
    threads: int  # TF intra-op threads this process uses

    @property
    def num_workers(self) -> int:
        """Workers that each take a per-worker batch per step: the LR and global-batch factor."""
        return self.size * self.replicas_per_process

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    def writer(self, run_dir: str | Path) -> RunWriter:
        """This process's writer for `run_dir`: it writes on the primary only, so callers never test the rank."""
        return RunWriter(run_dir, self.is_primary)


def default_threads(requested: int, local_size: int) -> int:
    """Threads per process: as requested, else an equal share of the node's cores (at least 1)."""
    return requested if requested > 0 else max(1, available_cores() // max(1, local_size))


def set_threads(intra: int, inter: int) -> None:
    """TF's intra-op and inter-op thread pools of this process; call before any other TensorFlow work."""
    # N ranks each using every core oversubscribe the node (horovod#2295, #2804): cap each one.
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
