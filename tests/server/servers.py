"""Real `zeroembed serve` processes on loopback ports, for end-to-end tests; always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from zeroembed.client import Client, ZeroEmbedError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for pid in self.worker_pids:  # never leave a worker behind, even when a test failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.returncode


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
    deadline = time.monotonic() + timeout
    with server.client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
            try:
                status = client.status()
            except ZeroEmbedError:
                continue
            server.worker_pids = [w["pid"] for w in status["workers"]]
            return
    server.stop()
    raise AssertionError(f"server did not become ready:\n{server.log()}")


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
