"""A client given two real replicas keeps answering when one is killed or frozen (Client and AsyncClient).

Which replica let an attempt expire is read from the client's own bookkeeping (``Replicas.back_off``, recorded),
with the back-off made longer than any test, so "passed over after one expired attempt" is a count, not a time.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from zeroembed.client import AsyncClient, Client
from zeroembed.client import replicas as replicas_module

from ..server.servers import RunningServer, start_server, wait_until

pytestmark = pytest.mark.timeout(240)

# 8 s per call, so 2 s per attempt: a request caught by the dead replica is re-sent after 2 s.
TIMEOUT = 8.0


def start(artifact, tmp_path) -> RunningServer:
    return start_server(artifact, tmp_path, "--workers", "1", "--threads-per-worker", "1")


@pytest.fixture(scope="module")
def steady(tiny_artifact, tmp_path_factory) -> Iterator[RunningServer]:
    """The replica that stays up through every test."""
    server = start(tiny_artifact, tmp_path_factory.mktemp("steady"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def victim(tiny_artifact, tmp_path) -> Iterator[RunningServer]:
    """The replica a test kills or freezes; thawed and stopped after."""
    server = start(tiny_artifact, tmp_path)
    yield server
    for pid in [server.process.pid, *server.worker_pids]:
        try:
            os.kill(pid, signal.SIGCONT)  # a frozen replica must be able to stop
        except ProcessLookupError:
            pass
    server.stop()


@pytest.fixture
def backoffs(monkeypatch) -> list[int]:
    """Every replica a client backed off (an attempt sent to it expired), in order; a back-off lasts the test."""
    backed: list[int] = []
    back_off = replicas_module.Replicas.back_off
    monkeypatch.setattr(replicas_module, "REPLICA_BACKOFF_S", 3600.0)

    def recording(self, replica: int) -> None:
        backed.append(replica)
        back_off(self, replica)

    monkeypatch.setattr(replicas_module.Replicas, "back_off", recording)
    return backed


def warm_up(client: Client, servers: list[RunningServer]) -> None:
    """Until both replicas have answered (each connection up), so the test starts spread."""
    seen: set[int] = set()
    wait_until(lambda: seen.add(client.status()["pid"]) or len(seen) == len(servers), "both replicas answered")


def encode_many(client: Client, n: int, reference: np.ndarray) -> None:
    for i in range(n):
        vectors = client.encode(["replica failover", f"request {i}"])
        np.testing.assert_allclose(vectors[:1], reference, atol=1e-5)


def kill_all(server: RunningServer, sig: int) -> None:
    for pid in [server.process.pid, *server.worker_pids]:
        os.kill(pid, sig)


def test_killed_replica(victim, steady, backoffs):
    with Client([victim.endpoint, steady.endpoint], timeout=TIMEOUT) as client:
        warm_up(client, [victim, steady])
        reference = client.encode(["replica failover"])
        encode_many(client, 4, reference)
        kill_all(victim, signal.SIGKILL)
        victim.process.wait(10)
        encode_many(client, 20, reference)  # every one succeeds
        assert client.status()["pid"] == steady.process.pid
    # At most a request sent before the client saw the connection drop waited out an attempt; then the dead
    # replica is passed over (its connection is gone, and it is backed off). The live one never failed one.
    assert backoffs in ([], [0]), backoffs


def test_frozen_replica(victim, steady, backoffs):
    with Client([victim.endpoint, steady.endpoint], timeout=TIMEOUT) as client:
        warm_up(client, [victim, steady])
        reference = client.encode(["replica failover"])
        kill_all(victim, signal.SIGSTOP)  # still connected, never answers
        encode_many(client, 20, reference)
        # Round-robin sent one request to the frozen replica; it waited one attempt, then went to the live one,
        # and the frozen replica was passed over from then on: exactly one expired attempt.
        assert backoffs == [0]
        kill_all(victim, signal.SIGCONT)
        encode_many(client, 4, reference)


def test_async_client_with_requests_on_a_killed_replica(victim, steady, backoffs):
    victim_status = victim.client(timeout=10)

    async def main() -> None:
        async with AsyncClient([victim.endpoint, steady.endpoint], timeout=TIMEOUT) as client:
            seen: set[int] = set()
            while len(seen) < 2:  # both connections up (pytest's timeout bounds this)
                seen.add((await client.status())["pid"])
            reference = await client.encode(["replica failover"])
            kill_all_workers(victim, signal.SIGSTOP)  # what reaches the victim now stays in flight there
            calls = [asyncio.create_task(client.encode(["replica failover", f"request {i}"])) for i in range(6)]
            await asyncio.to_thread(wait_until, lambda: victim_status.status()["in_flight_requests"] >= 1,
                                    "requests in flight on the victim")
            kill_all(victim, signal.SIGKILL)
            for vectors in await asyncio.gather(*calls):  # every one answered, by the live replica
                np.testing.assert_allclose(vectors[:1], reference, atol=1e-5)
            assert (await client.status())["pid"] == steady.process.pid

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        victim_status.close()
    assert backoffs and set(backoffs) == {0}, backoffs  # the killed replica's attempts expired and were re-sent


def kill_all_workers(server: RunningServer, sig: int) -> None:
    for pid in server.worker_pids:
        os.kill(pid, sig)
