"""How the files are shared among ranks, as numbers: TensorFlow-free, so the training command's checks can
refuse a batch larger than a rank's shard before TensorFlow loads (the tf.data pipeline uses the same)."""
from __future__ import annotations


def shard_size(n: int, shard_count: int, shard_index: int) -> int:
    """Elements that `Dataset.shard(shard_count, shard_index)` keeps out of `n`."""
    return len(range(shard_index, n, shard_count))


def steps_per_epoch(n_train: int, shard_count: int, per_process_batch_size: int) -> int:
    """Training steps every rank runs: set by the smallest shard, so no rank waits in allreduce."""
    return (n_train // shard_count) // per_process_batch_size
