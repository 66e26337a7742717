"""Real `zeroembed serve` processes on loopback ports, for end-to-end tests; always stopped.

The harness itself is the server package's (``zeroembed.server.launch``), shared with the benchmarks.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import zmq

from zeroembed.server.launch import ServerProcess, free_port

__all__ = ["RunningServer", "free_port", "http_call", "raw_socket", "start_server", "wait_ready", "wait_until"]

T = TypeVar("T")

RunningServer = ServerProcess


def start_server(artifact: Path, tmp_path: Path, *args: str, env: dict | None = None,
                 wait: bool = True) -> ServerProcess:
    """Start a CPU server on ``artifact`` with ``args``; its log goes to ``tmp_path``."""
    server = ServerProcess(artifact, *args, env=env, log_dir=tmp_path, ready_timeout=120.0)
    server.start(wait=False)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: ServerProcess, timeout: float = 120.0) -> None:
    """Wait until the server answers status; on failure stop it and fail with its log."""
    try:
        server.wait_ready(timeout)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None


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


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; AssertionError naming ``what``
    after ``timeout`` (a backstop against hanging, generous because 2 loaded cores can be slow)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s")
        time.sleep(interval)


def http_call(port: int, path: str, body: Any = None, *, timeout: float = 60.0) -> tuple[int, Any]:
    """``POST`` ``body`` as JSON (``GET`` when it is None) to a server's HTTP port; (status, decoded JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
