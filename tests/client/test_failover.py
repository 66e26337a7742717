"""Several endpoints: spreading over replicas and re-sending on silence, against fake servers (fake_server.py)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from zeroembed.client import AsyncClient, Client, InvalidRequest, ServerBusy, ServerTimeout
from zeroembed.client.replicas import Replicas, attempt_timeout

from .fake_server import Error, FakeServer, Reply, Silent, sentence_vectors

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair():
    servers = [FakeServer().start(), FakeServer().start()]
    yield servers
    for server in servers:
        server.stop()


def connected(client: Client) -> Client:
    """``client`` with its sockets made and connected, so the first requests see every replica."""
    client._socket()
    time.sleep(0.3)
    return client


def silence(server: FakeServer, n: int = 100) -> None:
    server.actions.extend(Silent() for _ in range(n))


def test_attempt_timeout_and_replica_order():
    assert attempt_timeout(30.0, 30.0) == 7.5
    assert attempt_timeout(2.0, 2.0) == 1.0  # floor
    assert attempt_timeout(30.0, 0.4) == 0.4  # never past the call
    assert attempt_timeout(None, None) > 0
    replicas = Replicas(3)
    firsts = [replicas.order()[0] for _ in range(6)]
    assert sorted(firsts) == [0, 0, 1, 1, 2, 2]  # round-robin
    replicas.back_off(1)
    assert all(replicas.order()[-1] == 1 for _ in range(3))  # backed off: last resort
    assert replicas.order({0, 2})[0] == 1  # ...but before replicas this request already tried
    replicas.answered(1)
    assert replicas.backed_off() == []


def test_requests_spread_over_both(pair):
    with connected(Client([s.endpoint for s in pair], timeout=5)) as client:
        for i in range(10):
            np.testing.assert_array_equal(client.encode([f"t{i}"]), sentence_vectors([f"t{i}"]))
    assert len(pair[0].requests) == 5 and len(pair[1].requests) == 5


def test_silent_replica_is_retried_elsewhere_and_backed_off(pair):
    silence(pair[0])
    with connected(Client([s.endpoint for s in pair], timeout=4)) as client:  # 1 s per attempt
        start = time.monotonic()
        for i in range(6):
            np.testing.assert_array_equal(client.encode([f"t{i}"]), sentence_vectors([f"t{i}"]))
        elapsed = time.monotonic() - start
    # one request waits out one attempt on the silent replica; the rest skip it (backed off)
    assert 0.9 < elapsed < 2.5, elapsed
    assert len(pair[0].requests) == 1
    assert len(pair[1].requests) == 6


def test_late_answer_from_the_first_attempt_wins(pair):
    pair[0].actions.append(Reply(delay=1.5))  # after its attempt expired at 1 s
    silence(pair[1])
    with connected(Client([s.endpoint for s in pair], timeout=4)) as client:
        np.testing.assert_array_equal(client.encode(["slow"]), sentence_vectors(["slow"]))


def test_all_silent_times_out(pair):
    for server in pair:
        silence(server)
    with Client([s.endpoint for s in pair], timeout=2.5) as client:
        start = time.monotonic()
        with pytest.raises(ServerTimeout):
            client.encode(["a"])
        assert time.monotonic() - start < 3.5


@pytest.mark.parametrize(("error", "exc"), [("invalid_request", InvalidRequest), ("busy", ServerBusy)])
def test_error_replies_are_not_retried(pair, error, exc):
    pair[0].actions.append(Error(error))
    pair[1].actions.append(Error(error))
    with Client([s.endpoint for s in pair], timeout=4) as client:
        with pytest.raises(exc):
            client.encode(["a"])
    time.sleep(0.2)
    assert len(pair[0].requests) + len(pair[1].requests) == 1


def test_chunks_and_status_through_replicas(pair, dead_endpoint):
    silence(pair[1], 2)
    texts = [f"text {i}" for i in range(25)]
    with Client([pair[0].endpoint, pair[1].endpoint, dead_endpoint], timeout=4, max_texts_per_request=4) as client:
        np.testing.assert_array_equal(client.encode(texts), sentence_vectors(texts))
        assert client.status()["model"] == "fake"


def test_async_silent_replica_is_retried(pair):
    silence(pair[0])

    async def main():
        async with AsyncClient([s.endpoint for s in pair], timeout=4) as client:
            results = await asyncio.gather(*(client.encode([f"c{i}"]) for i in range(6)))
            for i, vectors in enumerate(results):
                np.testing.assert_array_equal(vectors, sentence_vectors([f"c{i}"]))
            pair[0].actions.clear()  # the replica answers again and is forgiven after its back-off
            assert (await client.status())["model"] == "fake"

    asyncio.run(asyncio.wait_for(main(), 15))
    assert len(pair[1].requests) >= 6


def test_async_error_replies_are_not_retried(pair):
    pair[0].actions.append(Error("invalid_request"))
    pair[1].actions.append(Error("invalid_request"))

    async def main():
        async with AsyncClient([s.endpoint for s in pair], timeout=4) as client:
            with pytest.raises(InvalidRequest):
                await client.encode(["a"])

    asyncio.run(asyncio.wait_for(main(), 15))
    time.sleep(0.2)
    assert len(pair[0].requests) + len(pair[1].requests) == 1
