"""The HTTP gateway's error statuses, each provoked for real on a running `zeroembed serve --http-port`:
a worker whose model fails (500 OpenAI, 424 TEI), the server's request timeout (504), a full queue (429),
on ``/v1/embeddings``, its ``/embeddings`` alias and TEI's ``/embed``. Draining (503) is in test_drain.py.

The model fails for real: the tiny model has 128 positions, and its artifact here claims 512, so the server
lets a 300-token text through and ONNX Runtime refuses it in the worker. Short texts run normally.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ...dependencies import require
from ..servers import RunningServer, free_port, http_call, start_server, wait_until

require("aiohttp", "server")

OPENAI_ROUTES = ("/v1/embeddings", "/embeddings")
TOO_LONG_FOR_THE_MODEL = "word " * 300  # 302 tokens: within the claimed 512, past the model's 128 positions
REQUEST_TIMEOUT_S = 2  # the server's own deadline (504); short, since each 504 below waits it out
MAX_QUEUE = 16


@pytest.fixture(scope="module")
def broken_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny artifact, its manifest claiming more positions than the model has."""
    out = tmp_path_factory.mktemp("artifacts") / "positions-overclaimed"
    shutil.copytree(tiny_artifact, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["max_seq_length"] = 512
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def server(broken_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    running = start_server(broken_artifact, tmp_path_factory.mktemp("http-failures"), "--workers", "1",
                           "--threads-per-worker", "1", "--http-port", str(port),
                           "--request-timeout-s", str(REQUEST_TIMEOUT_S), "--max-queue", str(MAX_QUEUE))
    running.http_port = port
    yield running
    for pid in running.worker_pids:  # a failed test may have left it frozen
        os.kill(pid, signal.SIGCONT)
    assert running.stop() == 0, running.log()


def post(server: RunningServer, path: str, body: dict) -> tuple[int, dict]:
    return http_call(server.http_port, path, body)


def served_normally(server: RunningServer) -> None:
    """The server still answers short texts, on every route."""
    for path in OPENAI_ROUTES:
        status, body = post(server, path, {"input": ["short text"]})
        assert status == 200 and len(body["data"][0]["embedding"]) == 64, body
    status, body = post(server, "/embed", {"inputs": ["short text"]})
    assert status == 200 and len(body[0]) == 64, body


def test_alias_is_the_openai_route(server):
    status, alias = post(server, "/embeddings", {"input": ["hello world"], "model": "m"})
    assert status == 200
    _, original = post(server, "/v1/embeddings", {"input": ["hello world"], "model": "m"})
    assert alias == original
    status, body = post(server, "/embeddings", {"input": []})
    assert status == 400 and body["error"]["param"] == "input"


def test_worker_failure_is_500_on_openai_and_424_on_tei(server):
    for path in OPENAI_ROUTES:
        status, body = post(server, path, {"input": ["short text", TOO_LONG_FOR_THE_MODEL]})
        assert (status, body["error"]["code"], body["error"]["type"]) == (500, "worker_failed", "server_error"), body
        assert "the model failed on this request" in body["error"]["message"]
    status, body = post(server, "/embed", {"inputs": [TOO_LONG_FOR_THE_MODEL]})
    assert (status, body["error_type"]) == (424, "Backend"), body
    served_normally(server)  # one batch failed; the worker serves on


def test_request_timeout_is_504(server):
    (worker,) = server.worker_pids
    os.kill(worker, signal.SIGSTOP)  # nothing runs: only the server's request timeout can answer
    try:
        for path in OPENAI_ROUTES:
            status, body = post(server, path, {"input": ["never run"]})
            assert (status, body["error"]["code"], body["error"]["type"]) == (504, "timeout", "server_error"), body
            assert "request timeout" in body["error"]["message"]
        status, body = post(server, "/embed", {"inputs": ["never run"]})
        assert (status, body["error_type"]) == (504, "Backend"), body
    finally:
        os.kill(worker, signal.SIGCONT)
    with server.client() as client:
        wait_until(lambda: client.status()["in_flight_requests"] == 0, "nothing left in flight")
    served_normally(server)


def test_full_queue_is_429(server):
    texts = [f"text {i}" for i in range(MAX_QUEUE + 1)]
    for path in OPENAI_ROUTES:
        status, body = post(server, path, {"input": texts})
        assert (status, body["error"]["code"], body["error"]["type"]) == (429, "busy", "rate_limit_error"), body
    status, body = post(server, "/embed", {"inputs": texts})
    assert (status, body["error_type"]) == (429, "Overloaded"), body
    served_normally(server)
