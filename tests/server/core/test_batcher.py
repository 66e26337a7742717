"""The batcher's policy: token budget, length grouping, waiting, fairness."""

from __future__ import annotations

import pytest

from zeroembed.server.core.batcher import Batcher, Item


def items(lengths, owner="r", at=0.0):
    return [Item(owner=owner, index=i, length=n, enqueued_at=at) for i, n in enumerate(lengths)]


def test_budget_bounds_size_times_longest():
    batcher = Batcher(max_batch_tokens=100, max_batch_size=64, wait_s=0.0)
    batcher.add(items([10] * 50))
    batch = batcher.next_batch(1.0, pipeline_idle=True)
    assert len(batch.items) == 10 and batch.width == 10
    assert batch.padded_tokens <= 100
    assert len(batcher) == 40


def test_max_batch_size_caps_count():
    batcher = Batcher(max_batch_tokens=10_000, max_batch_size=4, wait_s=0.0)
    batcher.add(items([5] * 9))
    assert [len(batcher.next_batch(1.0, pipeline_idle=True).items) for _ in range(3)] == [4, 4, 1]
    assert batcher.next_batch(1.0, pipeline_idle=True) is None


def test_groups_similar_lengths_and_keeps_oldest_first():
    batcher = Batcher(max_batch_tokens=4 * 100, max_batch_size=4, wait_s=0.0)
    lengths = [100, 5, 98, 6, 97, 7, 99, 8]
    batcher.add(items(lengths))
    first = batcher.next_batch(1.0, pipeline_idle=True)
    assert sorted(i.length for i in first.items) == [97, 98, 99, 100]
    assert first.items[0].index == 0  # the oldest text always rides in the next batch
    second = batcher.next_batch(1.0, pipeline_idle=True)
    assert sorted(i.length for i in second.items) == [5, 6, 7, 8]
    assert second.width == 8  # short texts are not padded to the long ones


def test_a_text_longer_than_the_budget_still_runs_alone():
    batcher = Batcher(max_batch_tokens=64, max_batch_size=8, wait_s=0.0)
    batcher.add(items([200, 3]))
    batch = batcher.next_batch(0.0, pipeline_idle=True)
    assert [i.length for i in batch.items] == [200]


def test_partial_batch_waits_only_while_others_run():
    batcher = Batcher(max_batch_tokens=1000, max_batch_size=8, wait_s=0.005)
    batcher.add(items([10, 10], at=1.0))
    # Something else is running: a partial batch may wait for company...
    assert batcher.next_batch(1.001, pipeline_idle=False) is None
    assert batcher.deadline() == pytest.approx(1.005)
    # ...until its wait runs out.
    assert len(batcher.next_batch(1.006, pipeline_idle=False).items) == 2


def test_lone_request_is_not_held_back():
    batcher = Batcher(max_batch_tokens=1000, max_batch_size=8, wait_s=10.0)
    batcher.add(items([10], at=1.0))
    assert batcher.next_batch(1.0, pipeline_idle=True) is not None


def test_full_batch_goes_without_waiting():
    batcher = Batcher(max_batch_tokens=1000, max_batch_size=4, wait_s=10.0)
    batcher.add(items([10] * 5, at=1.0))
    assert len(batcher.next_batch(1.0, pipeline_idle=False).items) == 4
    assert batcher.next_batch(1.0, pipeline_idle=False) is None  # the fifth waits for company


def test_no_starvation_under_a_stream_of_short_texts():
    batcher = Batcher(max_batch_tokens=256, max_batch_size=8, wait_s=0.0)
    batcher.add(items([250], owner="long"))
    for round_ in range(5):
        batcher.add(items([4] * 8, owner=f"short{round_}", at=float(round_ + 1)))
    first = batcher.next_batch(10.0, pipeline_idle=True)
    assert [i.owner for i in first.items] == ["long"]


def test_requeue_and_remove_owner():
    batcher = Batcher(max_batch_tokens=1000, max_batch_size=2, wait_s=0.0)
    batcher.add(items([1, 2, 3], owner="a") + items([4], owner="b"))
    batch = batcher.next_batch(0.0, pipeline_idle=True)
    batcher.requeue(batch.items)
    assert [i.length for i in batcher.next_batch(0.0, pipeline_idle=True).items] == [1, 2]
    assert batcher.remove_owner("a") == 1
    assert len(batcher) == 1


def test_added_padding_bound_splits_mixed_lengths():
    batcher = Batcher(max_batch_tokens=4096, max_batch_size=8, wait_s=0.0, max_added_padding=4)
    batcher.add(items([10, 200, 30, 11, 256, 9, 80, 15]))
    batches = []
    while (batch := batcher.next_batch(0.0, pipeline_idle=True)) is not None:
        batches.append(sorted(i.length for i in batch.items))
    # 10 takes 11 (+1 padding) and 9 (+2); 15 would pad the three of them by 4 each: it waits.
    assert batches[0] == [9, 10, 11]
    assert sorted(n for b in batches for n in b) == [9, 10, 11, 15, 30, 80, 200, 256]
    assert all(len(b) == 1 for b in batches[1:])  # none of the others is within 4 tokens of another
    # Without the bound, all of them would ride together padded to 256.
    unbounded = Batcher(max_batch_tokens=4096, max_batch_size=16, wait_s=0.0)
    unbounded.add(items([10, 200, 30, 11, 256, 9, 80, 15]))
    assert len(unbounded.next_batch(0.0, pipeline_idle=True).items) == 8


def test_added_padding_counts_every_text_padded_to_a_longer_one():
    # Two texts of 20: a 22 would add 2 tokens to each of them (4), a 19 only 1 to itself.
    batcher = Batcher(max_batch_tokens=4096, max_batch_size=8, wait_s=0.0, max_added_padding=3)
    batcher.add(items([20, 20, 22, 19]))
    first = batcher.next_batch(0.0, pipeline_idle=True)
    assert sorted(i.length for i in first.items) == [19, 20, 20]
    assert first.padded_tokens - first.tokens == 1
    assert [i.length for i in batcher.next_batch(0.0, pipeline_idle=True).items] == [22]


def test_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        Batcher(max_batch_tokens=0, max_batch_size=1, wait_s=0)
    with pytest.raises(ValueError):
        Batcher(max_batch_tokens=10, max_batch_size=1, wait_s=0, max_added_padding=-1)
