"""SIGTERM with work provably in flight: the drain finishes it and refuses new work; a grace period too short
answers what is left with ``shutting_down``, over every front end (ZeroMQ, HTTP, bert-as-service).

The only worker is frozen (SIGSTOP) before the requests go in, so they are held in flight for as long as the
test needs, and ``status`` shows them there before the signal: nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from zeroembed.client import ServerBusy

from ..dependencies import require
from .servers import RunningServer, free_port, http_call, start_server, wait_until

require("aiohttp", "server")
pytestmark = pytest.mark.timeout(240)

TEXTS = ["in flight when the signal came", "and a second text"]


class Background:
    """``fn()`` on a thread; ``result()`` is its return value, or raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._outcome: list = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._outcome.append((False, exc))

    def result(self, timeout: float = 60.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"no answer within {timeout:g}s: the call hangs"
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


def start(artifact: Path, tmp_path: Path, grace_s: float, *extra: str) -> RunningServer:
    http_port = free_port()
    # One worker, never declared stuck while the test holds it frozen.
    server = start_server(artifact, tmp_path, "--workers", "1", "--threads-per-worker", "1",
                          "--batch-timeout-s", "600", "--http-port", str(http_port),
                          "--shutdown-grace-s", str(grace_s), *extra)
    server.http_port = http_port
    return server


def in_flight(server: RunningServer) -> int:
    with server.client(timeout=10) as client:
        return client.status()["in_flight_requests"]


def encode_zmq(server: RunningServer) -> Callable[[], np.ndarray]:
    def call() -> np.ndarray:
        with server.client(timeout=120) as client:
            return client.encode(TEXTS)
    return call


def encode_http(server: RunningServer, path: str = "/v1/embeddings", body: Any = None) -> Callable[[], tuple]:
    return lambda: http_call(server.http_port, path, body or {"input": TEXTS}, timeout=120)


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_drain_finishes_work_in_flight_and_refuses_new_work(tiny_artifact, tmp_path):
    server = start(tiny_artifact, tmp_path, grace_s=120)
    (worker,) = server.worker_pids
    try:
        with server.client() as client:
            expected = client.encode(TEXTS)
        freeze(worker)
        zmq_call, http_call_ = Background(encode_zmq(server)), Background(encode_http(server))
        wait_until(lambda: in_flight(server) == 2, "both requests in flight")
        server.process.send_signal(signal.SIGTERM)
        with server.client(timeout=10) as client:
            wait_until(lambda: client.status()["accepting"] is False, "the drain began")
            # New work is refused on every front end, while the old is still held...
            with pytest.raises(ServerBusy) as info:
                client.encode(["too late"])
            assert info.value.code.value == "shutting_down"
            for path in ("/v1/embeddings", "/embeddings"):
                status, body = http_call(server.http_port, path, {"input": ["too late"]})
                assert (status, body["error"]["code"], body["error"]["type"]) == (503, "shutting_down",
                                                                                  "server_error"), body
            status, body = http_call(server.http_port, "/embed", {"inputs": ["too late"]})
            assert (status, body["error_type"]) == (503, "Unhealthy"), body
            status, body = http_call(server.http_port, "/health")
            assert status == 503 and "shutting down" in body["error"], body
            assert client.status()["in_flight_requests"] == 2  # ...and waited for, not dropped
        thaw(worker)
        np.testing.assert_allclose(zmq_call.result(), expected, atol=1e-5)
        status, body = http_call_.result()
        assert status == 200, body
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected, atol=1e-5)
        assert server.process.wait(60) == 0, server.log()
        assert gone(worker)
    finally:
        thaw(worker)
        server.stop()


class BertRaw:
    """A bert-as-service client by hand (PUSH + SUB), subscribed before it sends anything."""

    def __init__(self, port: int, port_out: int) -> None:
        self.identity = str(uuid.uuid4()).encode()
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.sub = self.context.socket(zmq.SUB)
        for sock in (self.push, self.sub):
            sock.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, self.identity)
        self.sub.connect(f"tcp://127.0.0.1:{port_out}")
        self.push.connect(f"tcp://127.0.0.1:{port}")

    def send(self, payload: bytes, req_id: int, count: int) -> None:
        self.push.send_multipart([self.identity, payload, b"%d" % req_id, b"%d" % count])

    def recv(self, timeout_ms: int = 60_000) -> list[bytes]:
        assert self.sub.poll(timeout_ms), "no reply from the bert-as-service port"
        return self.sub.recv_multipart()

    def close(self) -> None:
        self.push.close()
        self.sub.close()
        self.context.term()


def test_grace_too_short_answers_leftovers_with_shutting_down(tiny_artifact, tmp_path):
    bert_port, bert_port_out = free_port(), free_port()
    server = start(tiny_artifact, tmp_path, 1, "--bert-port", str(bert_port), "--bert-port-out", str(bert_port_out))
    (worker,) = server.worker_pids
    bert = BertRaw(bert_port, bert_port_out)
    try:
        bert.send(b"SHOW_CONFIG", 1, 0)
        assert bert.recv()[-1] == b"1"  # the adapter holds replies until the subscription is in: now it is
        freeze(worker)  # the grace period can never be enough
        zmq_call, http_call_ = Background(encode_zmq(server)), Background(encode_http(server))
        bert.send(json.dumps(TEXTS).encode(), 2, len(TEXTS))
        wait_until(lambda: in_flight(server) == 3, "three requests in flight")
        server.process.send_signal(signal.SIGTERM)
        # Every leftover is answered when the grace period ends; none is left to its client's timeout.
        with pytest.raises(ServerBusy) as info:
            zmq_call.result()
        assert info.value.code.value == "shutting_down"
        status, body = http_call_.result()
        assert (status, body["error"]["code"]) == (503, "shutting_down"), body
        frames = bert.recv()
        assert frames[-1] == b"2" and json.loads(frames[1])["error"]["code"] == "shutting_down"
        # The broker has left its loop and is stopping the frozen worker (the pool waits 5 s + 2 s for it before
        # killing it), and the gateway stops only after that, giving handlers 3 s more. Asked now, health and
        # status get no answer from the broker; the gateway answers 503 after its 5 s status timeout.
        health, status_ = (Background(lambda p=p: http_call(server.http_port, p)) for p in ("/health", "/status"))
        status, body = health.result()
        assert (status, body["error_type"]) == (503, "Unhealthy") and "did not answer" in body["error"], body
        status, body = status_.result()
        assert (status, body["error"]["code"]) == (503, "unavailable"), body
        assert server.process.wait(60) == 0, server.log()
        assert gone(worker)
    finally:
        bert.close()
        thaw(worker)
        server.stop()
