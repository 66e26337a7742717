"""The HTTP gateway end to end: a real `zeroembed serve --http-port`, the real openai SDK, plain HTTP."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ...dependencies import require
from ..servers import RunningServer, free_port, start_server

openai = require("openai", "dev")
require("aiohttp", "server")

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "naïve café — ünïcödé", "東京"]


@pytest.fixture(scope="module")
def http_server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    running = start_server(default_artifact, tmp_path_factory.mktemp("http"), "--workers", "1",
                           "--threads-per-worker", "1", "--http-port", str(port))
    running.http_port = port
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def small_server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a tiny queue and message limit: 429 and 413."""
    port = free_port()
    running = start_server(default_artifact, tmp_path_factory.mktemp("http-small"), "--workers", "1",
                           "--threads-per-worker", "1", "--http-port", str(port), "--max-queue", "2",
                           "--max-message-bytes", "4096")
    running.http_port = port
    yield running
    assert running.stop() == 0, running.log()


def call(server: RunningServer, path: str, body: object = None, *, raw: bytes | None = None,
         method: str | None = None) -> tuple[int, object]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def sdk(server: RunningServer):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="unused", max_retries=0)


def vectors(result) -> np.ndarray:
    """The SDK's embeddings as an array; it hands base64 back as it came when that format was asked for."""
    rows = [d.embedding for d in sorted(result.data, key=lambda d: d.index)]
    return np.stack([np.frombuffer(base64.b64decode(r), dtype="<f4") if isinstance(r, str) else np.array(r, np.float32)
                     for r in rows])


def reference(server: RunningServer, texts: list[str], **options) -> np.ndarray:
    with server.client() as client:
        return client.encode(texts, **options)


# ---------------------------------------------------------------------- OpenAI


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_sdk_gets_the_zeromq_clients_vectors(http_server, encoding_format):
    result = sdk(http_server).embeddings.create(model="anything", input=TEXTS, encoding_format=encoding_format)
    got = vectors(result)
    np.testing.assert_allclose(got, reference(http_server, TEXTS), atol=1e-5)
    assert result.model == "all-MiniLM-L6-v2"
    with http_server.client() as client:
        _, pieces = client.encode(TEXTS, show_tokens=True)
    assert result.usage.prompt_tokens == result.usage.total_tokens == sum(map(len, pieces))


def test_openai_sdk_default_and_single_string(http_server):
    # The SDK asks for base64 when no format is given, and decodes it itself.
    result = sdk(http_server).embeddings.create(model="m", input="hello world")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 384
    np.testing.assert_allclose(result.data[0].embedding, reference(http_server, ["hello world"])[0], atol=1e-5)


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_dimensions_truncate_and_renormalise(http_server, encoding_format):
    result = sdk(http_server).embeddings.create(model="m", input=TEXTS, dimensions=64,
                                                encoding_format=encoding_format)
    got = vectors(result)
    full = reference(http_server, TEXTS)[:, :64]
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)


def test_openai_raw_shape_and_base64_bytes(http_server):
    status, body = call(http_server, "/v1/embeddings", {"input": ["hello world"], "model": "x",
                                                         "encoding_format": "base64"})
    assert status == 200
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, reference(http_server, ["hello world"])[0], atol=1e-6)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "input"),
    ({"input": [1, 2, 3]}, "input"),
    ({"input": [[1, 2], [3]]}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", 3]}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 385}, "dimensions"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
])
def test_openai_bad_bodies_are_400(http_server, body, param):
    status, answer = call(http_server, "/v1/embeddings", body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["param"] == param
    assert answer["error"]["message"]


def test_token_ids_say_so(http_server):
    _, answer = call(http_server, "/v1/embeddings", {"input": [[101, 102]]})
    assert "token ids" in answer["error"]["message"]


def test_sdk_raises_its_own_errors(http_server, small_server):
    with pytest.raises(openai.BadRequestError):
        sdk(http_server).embeddings.create(model="m", input=["x"], dimensions=1000)
    with pytest.raises(openai.RateLimitError):
        sdk(small_server).embeddings.create(model="m", input=["a", "b", "c"])


def test_not_json_is_400(http_server):
    status, answer = call(http_server, "/v1/embeddings", raw=b"{nope")
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"


def test_busy_is_429(small_server):
    status, answer = call(small_server, "/v1/embeddings", {"input": ["a", "b", "c"]})
    assert status == 429 and answer["error"]["code"] == "busy"
    status, answer = call(small_server, "/embed", {"inputs": ["a", "b", "c"]})
    assert status == 429 and answer["error_type"] == "Overloaded"


def test_oversized_body_is_413(small_server):
    status, answer = call(small_server, "/v1/embeddings", {"input": ["x" * 5000]})
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    status, answer = call(small_server, "/embed", {"inputs": ["x" * 5000]})
    assert status == 413 and answer["error_type"] == "Validation"


def test_unknown_path_is_404_and_wrong_method_405(http_server):
    status, answer = call(http_server, "/v2/nothing")
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = call(http_server, "/v1/embeddings", method="GET")
    assert status == 405


# ---------------------------------------------------------------------- TEI, health, models, status


def test_tei_embed(http_server):
    status, body = call(http_server, "/embed", {"inputs": TEXTS})
    assert status == 200
    np.testing.assert_allclose(np.array(body, dtype=np.float32), reference(http_server, TEXTS), atol=1e-5)
    status, body = call(http_server, "/embed", {"inputs": "hello world", "normalize": False})
    assert status == 200 and len(body) == 1
    np.testing.assert_allclose(body[0], reference(http_server, ["hello world"], normalize=False)[0], atol=1e-5)


def test_tei_truncates_only_when_asked(http_server):
    long_text = "word " * 600
    status, body = call(http_server, "/embed", {"inputs": long_text})
    assert status == 413 and body["error_type"] == "Validation"  # TEI's default: truncate=false
    status, body = call(http_server, "/embed", {"inputs": long_text, "truncate": True})
    assert status == 200 and len(body[0]) == 384


def test_tei_errors(http_server):
    status, body = call(http_server, "/embed", {"inputs": []})
    assert status == 400 and body["error_type"] == "Empty"
    status, body = call(http_server, "/embed", {"inputs": 5})
    assert status == 422 and body["error_type"] == "Validation"


def test_health_models_status(http_server):
    assert call(http_server, "/health") == (200, {"status": "ok"})
    status, models = call(http_server, "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["all-MiniLM-L6-v2"] and models["data"][0]["object"] == "model"
    assert [m.id for m in sdk(http_server).models.list()] == ["all-MiniLM-L6-v2"]
    status, body = call(http_server, "/status")
    assert status == 200 and body["dim"] == 384 and body["workers"][0]["ready"]


# ---------------------------------------------------------------------- startup


def test_http_port_taken_exits_2_and_leaves_no_worker(default_artifact, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = start_server(default_artifact, tmp_path, "--workers", "1", "--http-port", str(port), wait=False)
        try:
            assert server.process.wait(120) == 2, server.log()
        finally:
            server.stop()
    log = server.log()
    assert "cannot serve HTTP on 127.0.0.1:" in log
    assert "worker 0 ready: pid" in log
    pid = int(log.split("worker 0 ready: pid ")[1].split(",")[0])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_http_port_must_differ_from_the_others(default_artifact, tmp_path):
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "zeroembed.cli", "serve", "--model", str(default_artifact),
                             "--port", str(port), "--http-port", str(port), "--device", "cpu"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "http_port" in result.stderr


def test_json_writes_float32_vectors_exactly():
    from zeroembed.server.frontends.http_gateway import HttpGateway

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((3, 7)).astype(np.float32)
    body = {"rows": matrix, "view": matrix[:, ::2], "first": list(matrix), "scalar": np.float32(0.1), "ids": {1: "a"}}
    response = HttpGateway._json(body)
    assert response.content_type == "application/json"
    got = json.loads(response.body)
    np.testing.assert_array_equal(np.array(got["rows"], np.float32), matrix)  # shortest form, read back bit for bit
    np.testing.assert_array_equal(np.array(got["view"], np.float32), matrix[:, ::2])  # not contiguous: via tolist
    np.testing.assert_array_equal(np.array(got["first"], np.float32), matrix)
    assert np.float32(got["scalar"]) == np.float32(0.1) and got["ids"] == {"1": "a"}
