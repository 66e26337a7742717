"""Several endpoints: spreading over replicas and re-sending on silence, against fake servers (fake_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest
import zmq

from zeroembed.client import AsyncClient, Client, InvalidRequest, ServerBusy, ServerTimeout, ZeroEmbedError
from zeroembed.client.protocol import Op, encode_reply
from zeroembed.client.replicas import Replicas, attempt_timeout

from .fake_server import Error, FakeServer, Hold, Silent, sentence_vectors

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair():
    servers = [FakeServer().start(), FakeServer().start()]
    yield servers
    for server in servers:
        server.stop()


def connected(client: Client) -> Client:
    """``client`` with its sockets made and connected, so the first requests see every replica."""
    for sock in client._socket():
        assert sock.poll(5000, zmq.POLLOUT), "a replica never connected"  # IMMEDIATE=1: writable once connected
    return client


def encodes(server: FakeServer) -> int:
    return sum(r.op == Op.ENCODE for r in server.requests)


def flush(client: Client, pair: list[FakeServer]) -> None:
    """Until each replica has received a status request sent after everything before it on the same
    connection: then no earlier request of ``client`` is still on its way to either."""
    before = [len(s.requests) for s in pair]
    while not all(any(r.op == Op.STATUS for r in s.requests[n:]) for s, n in zip(pair, before)):
        with contextlib.suppress(ZeroEmbedError):  # a scripted error left unused answers it: received all the same
            client.status()


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
        # A deadline is the behaviour here: the silent attempt was waited out (1 s), not cut short. A lower
        # bound only, which load cannot break.
        assert time.monotonic() - start >= 1.0
    # one request waits out one attempt on the silent replica; the rest skip it (backed off)
    assert len(pair[0].requests) == 1
    assert len(pair[1].requests) == 6


def marked(request) -> list:
    """A reply only the first replica gives: its vectors tell who answered."""
    return encode_reply(request.id, [sentence_vectors(request.texts) + 100.0])


def test_late_answer_from_the_first_attempt_wins(pair):
    # The first replica answers only once its attempt expired and the retry reached the second (silent) one.
    pair[0].actions.append(Hold(until=lambda: bool(pair[1].requests), reply=marked))
    silence(pair[1])
    with connected(Client([s.endpoint for s in pair], timeout=4)) as client:  # 1 s per attempt
        got = client.encode(["slow"])
    np.testing.assert_array_equal(got, sentence_vectors(["slow"]) + 100.0)  # the late answer, taken
    assert len(pair[0].requests) == len(pair[1].requests) == 1  # nobody was asked a third time


def test_all_silent_times_out(pair):
    for server in pair:
        silence(server)
    with Client([s.endpoint for s in pair], timeout=2.5) as client:
        start = time.monotonic()
        with pytest.raises(ServerTimeout):
            client.encode(["a"])
        # A deadline is the behaviour: the call's timeout bounds all its attempts together. 5 s of slack for a
        # loaded machine; a client that gave each of its three attempts the whole timeout would take 7.5 s.
        assert time.monotonic() - start < 2.5 + 5


@pytest.mark.parametrize(("error", "exc"), [("invalid_request", InvalidRequest), ("busy", ServerBusy)])
def test_error_replies_are_not_retried(pair, error, exc):
    pair[0].actions.append(Error(error))
    pair[1].actions.append(Error(error))
    with connected(Client([s.endpoint for s in pair], timeout=4)) as client:
        with pytest.raises(exc):
            client.encode(["a"])
        flush(client, pair)
    assert encodes(pair[0]) + encodes(pair[1]) == 1


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
            # Each replica answers a status sent after the encode on the same connection: a retry of it
            # would have reached its replica first.
            before = [len(s.requests) for s in pair]
            while not all(any(r.op == Op.STATUS for r in s.requests[n:]) for s, n in zip(pair, before)):
                with contextlib.suppress(ZeroEmbedError):
                    await client.status()

    asyncio.run(asyncio.wait_for(main(), 15))
    assert encodes(pair[0]) + encodes(pair[1]) == 1
