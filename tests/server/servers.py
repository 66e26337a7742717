"""Real `zeroembed serve` processes on loopback ports, for end-to-end tests; always stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from zeroembed.benchmarks.serverproc import free_port, terminate, wait_until_ready
from zeroembed.client import Client

__all__ = ["RunningServer", "free_port", "raw_socket", "start_server", "wait_ready"]


@dataclass
class RunningServer:
    """A `zeroembed serve` process and how to reach it."""

    process: subprocess.Popen
    port: int
    metrics_port: int
    log_path: Path
    worker_pids: list[int] = field(default_factory=list)
    client_keys: dict = field(default_factory=dict)  # server_key/client_key for a CurveZMQ server

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.endpoint, timeout=timeout, **self.client_keys)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; kill as a last resort (the test then fails on the exit code)."""
        return terminate(self.process, self.worker_pids, timeout)


def start_server(artifact: Path, tmp_path: Path, *args: str, env: dict | None = None,
                 wait: bool = True) -> RunningServer:
    port, metrics_port = free_port(), free_port()
    log_path = tmp_path / f"serve-{port}.log"
    command = [sys.executable, "-m", "zeroembed.cli", "serve", "--model", str(artifact), "--port", str(port),
               "--metrics-port", str(metrics_port), "--device", "cpu", *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
    server = RunningServer(process, port, metrics_port, log_path)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: RunningServer, timeout: float = 120.0) -> None:
    """Wait until the server answers status; on failure stop it and fail with its log."""
    try:
        with server.client(timeout=1.0) as client:
            status = wait_until_ready(server.process, client, timeout, server.log)
    except RuntimeError as exc:
        server.stop()
        raise AssertionError(str(exc)) from None
    server.worker_pids = [w["pid"] for w in status["workers"]]


@contextmanager
def raw_socket(endpoint: str, kind: int = zmq.DEALER, timeout_ms: int = 5000) -> Iterator[zmq.Socket]:
    """A bare ZeroMQ socket connected to a server, for speaking the wire protocol by hand; always closed."""
    context = zmq.Context()
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        context.term()
