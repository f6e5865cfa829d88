"""The MirroredStrategy backend: one process, N synchronous replicas, the same hooks as Horovod's.

    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN  # one process, 2 replicas
"""
from __future__ import annotations

import contextlib
from typing import Any

import tensorflow as tf

from hvdweather.distributed.runtime import Runtime, set_threads
from hvdweather.host import available_cores


class MirroredBackend:
    """One process holding N synchronous replicas (GPUs, or logical CPU devices on a CPU-only host)."""

    def __init__(self, replicas: int = 1, threads_per_worker: int = 0):
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            if replicas > len(gpus):
                raise ValueError(f"--replicas {replicas}: only {len(gpus)} GPU(s) visible")
            devices = [f"/gpu:{i}" for i in range(replicas)]
            cross_device_ops = None  # NCCL all-reduce, MirroredStrategy's GPU default
        else:
            # TensorFlow sees all cores as one CPU device; split it so that N replicas exist.
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
            devices = [f"/cpu:{i}" for i in range(replicas)]
            cross_device_ops = tf.distribute.ReductionToOneDevice(reduce_to_device="/cpu:0")
        per_replica = threads_per_worker if threads_per_worker > 0 else max(1, available_cores() // replicas)
        threads = per_replica * replicas
        # Replicas share one intra-op pool; inter-op >= replicas lets their steps run side by side.
        set_threads(threads, max(2, replicas))
        self.strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
        self.runtime = Runtime("mirrored", 0, 0, 1, 1, replicas, threads)

    shard_count = 1
    shard_index = 0

    def scope(self) -> contextlib.AbstractContextManager:
        return self.strategy.scope()

    def wrap_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
        return optimizer  # MirroredStrategy all-reduces the replicas' gradients itself

    def callbacks(self) -> list[tf.keras.callbacks.Callback]:
        return []  # one process: variables start mirrored, metrics are already global

    def trace_train_step(self, model: tf.keras.Model, dataset: tf.data.Dataset) -> None:
        pass  # fit builds its own distributed iterator, whose spec differs: tracing now would be wasted

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def broadcast_weights(self, model: tf.keras.Model) -> None:
        pass  # one process: the mirrored variables are already identical
