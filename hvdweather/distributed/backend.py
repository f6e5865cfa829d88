"""The hooks every backend offers (TrainingBackend) and the one factory that starts a backend by name."""
from __future__ import annotations

import contextlib
from typing import Any, Protocol

import tensorflow as tf

from hvdweather.distributed.horovod import HorovodBackend
from hvdweather.distributed.mirrored import MirroredBackend
from hvdweather.distributed.options import HorovodOptions
from hvdweather.distributed.runtime import Runtime


class TrainingBackend(Protocol):
    """The hooks the train package uses; Horovod and Mirrored implement them. Sharding (data and the
    decode check) always goes by `shard_count` / `shard_index`, never by the runtime's rank/size."""

    runtime: Runtime
    shard_count: int
    shard_index: int

    def scope(self) -> contextlib.AbstractContextManager: ...

    def wrap_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer: ...

    def callbacks(self) -> list[tf.keras.callbacks.Callback]: ...

    def trace_train_step(self, model: tf.keras.Model, dataset: tf.data.Dataset) -> None: ...

    def allgather_object(self, obj: Any) -> list[Any]: ...

    def broadcast_object(self, obj: Any) -> Any: ...

    def broadcast_weights(self, model: tf.keras.Model) -> None: ...


def make_backend(strategy: str, replicas: int = 1, threads_per_worker: int = 0,
                 timeline: str = "", options: HorovodOptions | None = None) -> TrainingBackend:
    """Start the chosen backend. Call before any other TensorFlow work: it sets threads and devices."""
    if strategy == "horovod":
        return HorovodBackend(threads_per_worker, timeline, options)
    if strategy == "mirrored":
        return MirroredBackend(replicas, threads_per_worker)
    raise ValueError(f"--strategy must be horovod or mirrored, got {strategy!r}")
