"""How the files are shared among ranks, as numbers: one stride rule (rank r of n takes items r, r + n,
r + 2n, ...), the same one tf.data's `Dataset.shard` applies. TensorFlow-free, so the training command's
checks can refuse a batch larger than a rank's shard before TensorFlow loads; training's scan, the
prepared records, predict, the EDA's MPI ranks and the PyTorch DDP reference all take their share here."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def shard_of(items: Sequence[T], shard_count: int, shard_index: int) -> Sequence[T]:
    """Rank `shard_index`'s share of `items` out of `shard_count`: every shard_count-th, from its index."""
    return items[shard_index::shard_count]


def shard_size(n: int, shard_count: int, shard_index: int) -> int:
    """Elements that `Dataset.shard(shard_count, shard_index)` (and `shard_of`) keeps out of `n`."""
    return len(range(shard_index, n, shard_count))


def steps_per_epoch(n_train: int, shard_count: int, per_process_batch_size: int) -> int:
    """Training steps every rank runs: set by the smallest shard, so no rank waits in allreduce."""
    return (n_train // shard_count) // per_process_batch_size


def start_element(epochs_done: int, steps_per_epoch: int, per_process_batch_size: int) -> int:
    """Where a resumed run's training stream starts: the element the uninterrupted run was at."""
    return epochs_done * steps_per_epoch * per_process_batch_size
