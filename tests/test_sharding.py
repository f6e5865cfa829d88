"""hvdweather.data.sharding: the one per-rank stride rule and the numbers derived from it (TF-free)."""
from __future__ import annotations

from hvdweather.data.sharding import shard_of, shard_size, start_element, steps_per_epoch


def test_shards_are_disjoint_cover_everything_and_have_their_sizes():
    items = list(range(11))
    shards = [shard_of(items, 3, i) for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert [len(s) for s in shards] == [shard_size(11, 3, i) for i in range(3)]
    assert list(shard_of(range(5), 2, 1)) == [1, 3]  # ranges too (the PyTorch reference's indices)


def test_steps_follow_the_smallest_shard():
    assert steps_per_epoch(33, 2, 16) == 1  # shards of 17 and 16: both can run exactly 1 step
    assert steps_per_epoch(64, 2, 16) == 2
    assert steps_per_epoch(10, 2, 16) == 0


def test_a_resume_starts_where_the_uninterrupted_stream_was():
    assert start_element(0, 5, 8) == 0 and start_element(3, 5, 8) == 120
