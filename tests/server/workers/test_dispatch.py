"""The dispatcher's watch over workers: when a worker counts as stuck, and what its batches cost."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from zeroembed.server.core.batcher import Batch, Batcher, Item
from zeroembed.server.config import load_settings
from zeroembed.server.workers.dispatch import Dispatcher, InFlight
from zeroembed.server.metrics import Metrics
from zeroembed.server.workers.pool import WorkerHandle
from zeroembed.server.workers.messages import RESULT

TIMEOUT_S = 10.0


class FakeProcess:
    """Alive until killed; stands in for a worker process."""

    pid = 4242
    exitcode = None

    def __init__(self) -> None:
        self.killed = False

    def is_alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed, self.exitcode = True, -9

    def join(self, timeout: float | None = None) -> None:
        pass


class Sink:
    """Stands in for the request core: records what the dispatcher hands back."""

    def __init__(self) -> None:
        self.delivered: list = []
        self.failed: list = []

    def deliver(self, batch, arrays) -> None:
        self.delivered.append((batch, arrays))

    def fail(self, owners, code, message) -> None:
        self.failed.extend((owner, code) for owner in owners)


@pytest.fixture
def dispatcher(tmp_path: Path):
    settings = load_settings(device="cpu", workers=1, threads_per_worker=2, parallel_batches=2,
                             batch_timeout_s=TIMEOUT_S)
    batcher = Batcher(max_batch_tokens=2048, max_batch_size=8, wait_s=0.0, max_added_padding=4)
    sink = Sink()
    dispatcher = Dispatcher(tmp_path, settings.worker_config, tmp_path / "model.onnx",
                            ("input_ids", "attention_mask"), Metrics().for_model("m"), batcher, sink)
    failed = sink.failed
    worker = WorkerHandle(index=0, process=FakeProcess(), channel=object())
    dispatcher.pool.workers = {0: worker}
    yield dispatcher, worker, batcher, failed
    dispatcher.pool.workers = {}
    dispatcher.stop()


def hold(dispatcher, worker, *ages_s: float) -> list[Item]:
    """Give ``worker`` one batch per age (oldest first), each of one text sent once."""
    now, items = time.monotonic(), []
    for number, age in enumerate(ages_s):
        item = Item(owner=SimpleNamespace(failed=False), index=number, length=4, enqueued_at=now, attempts=1)
        flight = InFlight(number, Batch([item], width=4), ["sentence_embedding"], worker, sent_at=now - age)
        worker.batches.append(flight)
        dispatcher.in_flight[flight.id] = flight
        items.append(item)
    return items


def test_depth_is_a_waiting_batch_per_lane(dispatcher):
    assert dispatcher[0].depth == 4


def test_a_worker_finishing_batches_is_not_stuck(dispatcher):
    dispatcher_, worker, _, _ = dispatcher
    hold(dispatcher_, worker, TIMEOUT_S * 2, 1.0)  # a long wait behind others, but it finishes batches
    worker.progress_at = time.monotonic() - 1.0
    dispatcher_.check_workers(replace=False)
    assert not worker.process.killed


def test_a_worker_that_finishes_nothing_for_a_batch_time_is_killed(dispatcher):
    dispatcher_, worker, _, _ = dispatcher
    hold(dispatcher_, worker, TIMEOUT_S + 1)
    worker.progress_at = time.monotonic() - (TIMEOUT_S + 1)
    dispatcher_.check_workers(replace=False)
    assert worker.process.killed


def test_one_frozen_lane_is_noticed_while_the_other_keeps_finishing(dispatcher):
    dispatcher_, worker, _, _ = dispatcher
    hold(dispatcher_, worker, TIMEOUT_S * dispatcher_.depth + 1, 0.5)
    worker.progress_at = time.monotonic()  # the other lane just finished one
    dispatcher_.check_workers(replace=False)
    assert worker.process.killed


def test_a_dead_workers_batches_are_retried_and_only_those_that_could_run_spend_an_attempt(dispatcher):
    dispatcher_, worker, batcher, failed = dispatcher
    items = hold(dispatcher_, worker, 4.0, 3.0, 2.0, 1.0)
    worker.process.kill()
    dispatcher_.check_workers(replace=False)
    # Two lanes: the two oldest may have been running and keep their attempt; the two behind them could not.
    assert [item.attempts for item in items] == [1, 1, 0, 0]
    assert len(batcher) == 4 and not failed and not dispatcher_.in_flight and not worker.batches


def test_a_result_counts_only_from_the_worker_its_batch_went_to(dispatcher):
    dispatcher_, worker, _, _ = dispatcher
    delivered = dispatcher_.sink.delivered
    items = hold(dispatcher_, worker, 0.1)
    vector = np.arange(4, dtype=np.float32)
    message = [RESULT, json.dumps({"batch": 0, "run_s": 0.01, "alone": True, "arrays": [[1, 4]]}).encode(),
               vector.tobytes()]
    dispatcher_.on_message(object(), message)  # a socket that is no worker's: ignored
    assert not delivered and 0 in dispatcher_.in_flight
    dispatcher_.on_message(worker.channel, message)
    assert [batch.items for batch, _ in delivered] == [items]
    np.testing.assert_array_equal(delivered[0][1]["sentence_embedding"], vector[None])
    assert not dispatcher_.in_flight and not worker.batches
