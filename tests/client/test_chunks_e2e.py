"""Large inputs split into chunks, against a real `zeroembed serve` (not the fake server, which shares the
protocol module with the client): 5 000 texts past the server's per-request limit, and chunks answered out of
the order they were sent."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from zeroembed.client import Client
from zeroembed.client import client as client_module

from ..server.servers import RunningServer, start_server

pytestmark = pytest.mark.timeout(240)

LIMIT = 1024  # the server's --max-texts-per-request, and the client's default chunk size


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory) -> Iterator[RunningServer]:
    running = start_server(tiny_artifact, tmp_path_factory.mktemp("chunks"), "--workers", "1",
                           "--threads-per-worker", "1", "--max-texts-per-request", str(LIMIT))
    yield running
    assert running.stop() == 0, running.log()


def encode_requests(server: RunningServer) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("zeroembed_requests_total{") and 'op="encode"' in line)


def test_5000_texts_go_in_chunks_and_come_back_in_order(server):
    texts = [f"text {i} " + "word " * (i % 7) for i in range(5000)]
    before = encode_requests(server)
    with server.client(timeout=120) as client:
        vectors = client.encode(texts)
        assert encode_requests(server) - before == 5  # 1024 × 4 + 904: one request would have been refused
        sample = [0, 1, 1023, 1024, 2047, 2048, 3071, 3072, 4095, 4096, 4999]  # both sides of each seam
        alone = client.encode([texts[i] for i in sample])
    assert vectors.shape == (5000, 64)
    np.testing.assert_allclose(vectors[sample], alone, atol=1e-5)


def test_chunks_answered_out_of_order_are_put_back_in_order(server, monkeypatch):
    # The first chunk carries over 1 MiB of text, which the server tokenizes on a background thread; the
    # second, short, runs at once and is answered first. Which came first is recorded, not assumed.
    sent: list[str] = []
    answered: list[str] = []
    build_chunks, open_reply = client_module.build_chunks, client_module.open_reply

    def recording_build(*args, **kwargs):
        chunks = build_chunks(*args, **kwargs)
        sent.extend(c.request_id for c in chunks)
        return chunks

    def recording_open(frames):
        request_id, outcome = open_reply(frames)
        answered.append(request_id)
        return request_id, outcome

    long_texts = [f"{i} " + "lorem ipsum dolor " * 3500 for i in range(20)]  # 63 000 characters each
    short_texts = [f"short text {i}" for i in range(20)]
    with server.client(timeout=120) as reference_client:
        expected = reference_client.encode(long_texts[:3] + short_texts[:3])
    monkeypatch.setattr(client_module, "build_chunks", recording_build)
    monkeypatch.setattr(client_module, "open_reply", recording_open)
    with Client(server.endpoint, timeout=120, max_texts_per_request=20) as client:
        vectors = client.encode(long_texts + short_texts)
    assert len(sent) == 2 and answered == sent[::-1], (sent, answered)  # the second chunk's reply came first
    np.testing.assert_allclose(vectors[[0, 1, 2, 20, 21, 22]], expected, atol=1e-5)
