"""A client given two real replicas keeps answering when one is killed or frozen."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from zeroembed.client import Client

from ..server.servers import RunningServer, start_server

pytestmark = pytest.mark.timeout(240)

# 8 s per call, so 2 s per attempt: a request caught by the dead replica is re-sent after 2 s.
TIMEOUT = 8.0


@pytest.fixture
def replicas(default_artifact, tmp_path):
    servers: list[RunningServer] = []
    try:
        for _ in range(2):
            servers.append(start_server(default_artifact, tmp_path, "--workers", "1", "--threads-per-worker", "1"))
        yield servers
    finally:
        for server in servers:
            for pid in [server.process.pid, *server.worker_pids]:
                try:
                    os.kill(pid, signal.SIGCONT)  # a frozen replica must be able to stop
                except ProcessLookupError:
                    pass
            server.stop()


def warm_up(client: Client, servers: list[RunningServer]) -> None:
    """Until both replicas have answered (each connection up), so the test starts spread."""
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while len(seen) < len(servers):
        assert time.monotonic() < deadline, "requests never reached both replicas"
        seen.add(client.status()["pid"])


def encode_many(client: Client, n: int, reference: np.ndarray) -> list[float]:
    latencies = []
    for i in range(n):
        start = time.monotonic()
        vectors = client.encode(["replica failover", f"request {i}"])
        latencies.append(time.monotonic() - start)
        np.testing.assert_allclose(vectors[:1], reference, atol=1e-5)
    return latencies


def kill_all(server: RunningServer, sig: int) -> None:
    for pid in [server.process.pid, *server.worker_pids]:
        os.kill(pid, sig)


def test_killed_replica(replicas):
    with Client([s.endpoint for s in replicas], timeout=TIMEOUT) as client:
        warm_up(client, replicas)
        reference = client.encode(["replica failover"])
        encode_many(client, 4, reference)
        kill_all(replicas[0], signal.SIGKILL)
        replicas[0].process.wait(10)
        latencies = encode_many(client, 20, reference)  # every one succeeds
        assert client.status()["pid"] == replicas[1].process.pid
    # at most the requests caught in flight wait out one attempt; the rest go straight to the live one
    assert sorted(latencies)[-3] < 1.0, latencies


def test_frozen_replica(replicas):
    with Client([s.endpoint for s in replicas], timeout=TIMEOUT) as client:
        warm_up(client, replicas)
        reference = client.encode(["replica failover"])
        kill_all(replicas[0], signal.SIGSTOP)  # still connected, never answers
        latencies = encode_many(client, 20, reference)
        assert max(latencies) < TIMEOUT
        # the one request that found the frozen replica waited one attempt (2 s); then it is backed off
        assert sum(lat > 1.5 for lat in latencies) <= 2, latencies
        kill_all(replicas[0], signal.SIGCONT)
        encode_many(client, 4, reference)
