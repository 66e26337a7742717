"""The worker's loop, against a stand-in runtime: a lone batch alone, several side by side, each answered."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import numpy as np
import pytest

from zeroembed.server.workers.channel import Channel
from zeroembed.server.workers.messages import BATCH, FAILED, RESULT, STOP
from zeroembed.server.workers.process import WorkerLoop


class FakeRuntime:
    """Echoes each text's length as its vector; records how it was asked to run; batch 99 fails.

    ``together``: the first that many runs wait for each other (10 s at most, then they fail), so a test
    proves they ran at the same time instead of hoping a sleep made them overlap.
    """

    def __init__(self, run_s: float = 0.05, together: int = 0) -> None:
        self.run_s = run_s
        self._meet = threading.Barrier(together) if together else None
        self._meetings = together
        self.calls: list[tuple[int, bool]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def run(self, ids, lengths, outputs, *, alone):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.calls.append((int(ids[0]), alone))
            meet, self._meetings = self._meetings > 0, self._meetings - 1
        try:
            if meet:
                self._meet.wait(10)
            else:
                time.sleep(self.run_s)  # stands for the model's run time; nothing waits on it
            if ids[0] == 99:
                raise RuntimeError("this batch is poison")
            return {name: lengths.astype(np.float32)[:, None].repeat(3, axis=1) for name in outputs}
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def worker():
    """(start(runtime, parallel), send, receive) with the worker's loop on a thread, stopped after."""
    broker_end, worker_end = (Channel(sock) for sock in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    threads = []
    inbox: list = []

    def start(runtime, parallel: int) -> None:
        thread = threading.Thread(target=WorkerLoop(worker_end, runtime, parallel).serve)
        thread.start()
        threads.append(thread)

    def send(batch_id: int, lengths: list[int]) -> None:
        ids = np.full(sum(lengths), batch_id, dtype=np.int32)
        broker_end.send_all([BATCH, json.dumps({"batch": batch_id, "outputs": ["sentence_embedding"]}).encode(),
                             ids, np.array(lengths, dtype=np.int32)])

    def receive(count: int) -> dict[int, tuple[bytes, dict, list]]:
        poller = select.poll()
        poller.register(broker_end.fileno(), select.POLLIN)
        while len(inbox) < count:
            assert poller.poll(5000), "the worker did not answer"
            inbox.extend(broker_end.receive())
        replies = {}
        for kind, header, *buffers in inbox[:count]:
            replies[json.loads(bytes(header))["batch"]] = (bytes(kind), json.loads(bytes(header)), buffers)
        del inbox[:count]
        return replies

    yield start, send, receive
    broker_end.send_all([STOP])
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    broker_end.close()
    worker_end.close()


def test_the_worker_leaves_when_the_broker_is_gone():
    broker_end, worker_end = (Channel(sock) for sock in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    thread = threading.Thread(target=WorkerLoop(worker_end, FakeRuntime(), 2).serve)
    thread.start()
    broker_end.close()  # what the kernel does when the broker process dies
    thread.join(10)
    assert not thread.is_alive()
    worker_end.close()


def test_as_many_waiting_as_can_run_at_once_still_run_alone(worker):
    # No backlog: side by side, the last of them would hold one core while the other idles.
    start, send, receive = worker
    runtime = FakeRuntime(run_s=0.01)
    send(1, [2])
    send(2, [2])
    start(runtime, parallel=2)
    assert sorted(receive(2)) == [1, 2]
    assert runtime.calls == [(1, True), (2, True)] and runtime.most_at_once == 1


def test_a_lone_batch_runs_alone_on_every_thread(worker):
    start, send, receive = worker
    runtime = FakeRuntime()
    start(runtime, parallel=2)
    for batch_id in (1, 2):  # one at a time: each is alone when it arrives
        send(batch_id, [3, 5])
        kind, header, buffers = receive(1)[batch_id]
        assert kind == RESULT and header["arrays"] == [[2, 3]] and header["alone"] is True
        np.testing.assert_array_equal(np.frombuffer(buffers[0], np.float32).reshape(2, 3)[:, 0], [3, 5])
    assert runtime.calls == [(1, True), (2, True)]


def test_batches_waiting_together_run_side_by_side_never_more_than_parallel(worker):
    start, send, receive = worker
    runtime = FakeRuntime(together=2)  # the first two can only finish by running at the same time
    for batch_id in range(1, 6):  # all waiting before the loop starts
        send(batch_id, [batch_id])
    start(runtime, parallel=2)
    replies = receive(5)
    assert sorted(replies) == [1, 2, 3, 4, 5]
    for batch_id, (kind, _, buffers) in replies.items():
        assert kind == RESULT and np.frombuffer(buffers[0], np.float32)[0] == batch_id  # its own vector
    assert runtime.most_at_once == 2
    assert all(not alone for _, alone in runtime.calls[:4])
    assert [replies[b][1]["alone"] for b in (1, 2)] == [False, False]


def test_one_worker_thread_runs_one_batch_at_a_time(worker):
    start, send, receive = worker
    runtime = FakeRuntime(run_s=0.01)
    for batch_id in range(1, 4):
        send(batch_id, [2])
    start(runtime, parallel=1)
    assert sorted(receive(3)) == [1, 2, 3]
    assert runtime.most_at_once == 1 and all(alone for _, alone in runtime.calls)


def test_a_failing_batch_fails_alone(worker):
    start, send, receive = worker
    runtime = FakeRuntime()
    for batch_id in (98, 99, 100):
        send(batch_id, [4])
    start(runtime, parallel=2)
    replies = receive(3)
    assert replies[99][0] == FAILED and "poison" in replies[99][1]["message"]
    assert replies[98][0] == RESULT and replies[100][0] == RESULT
