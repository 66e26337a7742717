"""Fixtures of the client tests: fake servers (fake_server.py) and an endpoint nobody serves."""

from __future__ import annotations

import socket

import pytest
from .fake_server import FakeServer


@pytest.fixture
def server():
    fake = FakeServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def jittery_server():
    fake = FakeServer(jitter=True).start()
    yield fake
    fake.stop()


@pytest.fixture
def dead_endpoint() -> str:
    """An endpoint nobody listens on (a port the OS just handed out and we gave back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"
