"""Real `zeroembed serve` processes on loopback ports, for end-to-end tests; always stopped.

The harness itself is the server package's (``zeroembed.server.launch``), shared with the benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from zeroembed.server.launch import ServerProcess, free_port

__all__ = ["RunningServer", "free_port", "raw_socket", "start_server", "wait_ready"]

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
