"""End to end over loopback: a real `zeroembed serve` process, the real client, the default model."""

from __future__ import annotations

import random
import threading
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import zmq
from tokenizers import Tokenizer

from zeroembed.client import InvalidRequest
from zeroembed.client.protocol import EncodeOptions, decode_reply, encode_request

from ..servers import raw_socket, start_server

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors.",
    "naïve café, Zürich — ünïcödé",
    "東京は日本の首都です。",
    "emoji 🚀🔥 and symbols ∑∫",
    "a",
    " ".join(["a considerably longer sentence that goes on"] * 12),
]


class Reference:
    """The artifact run in process, one text at a time: what the server must reproduce."""

    def __init__(self, artifact: Path) -> None:
        self.session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, text: str, output: str) -> np.ndarray:
        ids = np.array([self.tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return self.session.run([output], feeds)[0][0]


@pytest.fixture(scope="module")
def reference(default_artifact: Path) -> Reference:
    return Reference(default_artifact)


def test_vectors_equal_the_artifact_in_process(server, reference):
    with server.client() as client:
        vectors = client.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    expected = np.stack([reference.run(t, "sentence_embedding") for t in TEXTS])
    np.testing.assert_allclose(vectors, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_request_gives_zero_rows(server):
    with server.client() as client:
        assert client.encode([]).shape == (0, 384)


def test_request_larger_than_a_batch_keeps_order(server, reference):
    texts = [f"sentence number {i} " + "word " * (i % 37) for i in range(150)]
    with server.client() as client:
        vectors = client.encode(texts)
    for i in (0, 1, 57, 149):
        np.testing.assert_allclose(vectors[i], reference.run(texts[i], "sentence_embedding"), atol=2e-5)


def hammer_with_clients(server, reference, clients: int = 8) -> None:
    """Concurrent clients sending random requests; every vector must be its own text's."""
    rng = random.Random(7)
    pool = [f"client text {i}: " + " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(i % 40))
            for i in range(64)]
    expected = {t: reference.run(t, "sentence_embedding") for t in pool}
    failures: list[str] = []

    def hammer(seed: int) -> None:
        local = random.Random(seed)
        try:
            with server.client() as client:
                for _ in range(6):
                    texts = local.sample(pool, local.randint(1, 12))
                    got = client.encode(texts)
                    for text, vector in zip(texts, got):
                        if not np.allclose(vector, expected[text], atol=2e-5):
                            failures.append(f"client {seed} got a wrong vector for {text!r}")
        except Exception as exc:  # collected and asserted below, not lost in a thread
            failures.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:5]


def test_concurrent_clients_each_get_their_own_vectors(server, reference):
    hammer_with_clients(server, reference)


def test_batches_run_side_by_side_give_each_client_its_own_vectors(default_artifact, reference, tmp_path):
    # One worker, two threads, two batches at once; padding bound 0 makes many small batches: a backlog.
    server = start_server(default_artifact, tmp_path, "--workers", "1", "--threads-per-worker", "2",
                          "--parallel-batches", "2", "--max-added-padding", "0")
    try:
        hammer_with_clients(server, reference)
        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            metrics = response.read().decode()
        runs = {mode: float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith("zeroembed_batch_runs_total{") for mode in ("alone", "side_by_side")
                if f'mode="{mode}"' in line}
        assert runs.get("side_by_side", 0) > 0 and runs.get("alone", 0) > 0, runs
    finally:
        assert server.stop() == 0, server.log()


def test_token_output_and_show_tokens(server, reference):
    with server.client() as client:
        tokens, pieces = client.encode(TEXTS[:3], output="tokens", show_tokens=True)
    assert pieces[0] == ["[CLS]", "hello", "world", "[SEP]"]
    for text, vectors, words in zip(TEXTS[:3], tokens, pieces):
        assert vectors.shape == (len(words), 384)
        np.testing.assert_allclose(vectors, reference.run(text, "token_embeddings"), atol=5e-5)


def test_normalize_option(server, reference):
    with server.client() as client:
        raw = client.encode(TEXTS[:2], normalize=False)
        unit = client.encode(TEXTS[:2], normalize=True)
    np.testing.assert_allclose(raw[0], reference.run(TEXTS[0], "pooled_embedding"), atol=5e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_truncation_and_truncate_false(server):
    long_text = "word " * 1000
    with server.client() as client:
        assert client.encode([long_text]).shape == (1, 384)  # truncated at 256 tokens by default
        with pytest.raises(InvalidRequest) as info:
            client.encode(["fine", long_text], truncate=False)
    assert info.value.code.value == "text_too_long" and info.value.index == 1
    assert "texts[1]" in str(info.value) and "256" in str(info.value)


def test_limits_name_themselves(server):
    with server.client() as client:
        with pytest.raises(InvalidRequest) as info:
            client.encode(["ok", "x" * 100_001])
    assert info.value.code.value == "limit_exceeded" and info.value.index == 1


def test_garbage_frames_get_errors_and_the_server_serves_on(server):
    garbage = [[b"\xff\xfe"], [b"{}"], [b"[1,2]", b"x"], [b'{"v":99,"id":"a","op":"encode"}', b"[]"],
               [b'{"v":1,"id":"b","op":"encode"}', b'["ok", 5]'],
               [b'{"v":1,"id":"c","op":"encode","normalize":"yes"}', b'["ok"]'],
               [b'{"v":1,"id":"d","op":"explode"}'], [b"x", b"y", b"z"]]
    with raw_socket(server.endpoint) as sock:
        codes = []
        for frames in garbage:
            sock.send_multipart(frames)
            codes.append(decode_reply(sock.recv_multipart()).error["code"])
        assert codes == ["malformed", "malformed", "malformed", "unsupported_version", "invalid_request",
                         "invalid_request", "invalid_request", "malformed"]
        # A well-formed request on the same socket still works.
        sock.send_multipart(encode_request("ok-1", ["hello world"], EncodeOptions()))
        reply = decode_reply(sock.recv_multipart())
        assert reply.ok and reply.id == "ok-1" and reply.arrays[0].shape == (1, 384)
    with server.client() as client:
        assert client.encode(["still serving"]).shape == (1, 384)


def test_a_req_socket_client_is_answered_too(server):
    with raw_socket(server.endpoint, zmq.REQ) as sock:
        sock.send_multipart(encode_request("req-1", ["hello world"], EncodeOptions()))
        reply = decode_reply(sock.recv_multipart())
    assert reply.ok and reply.arrays[0].shape == (1, 384)


def test_metrics_count_requests_batches_and_errors(server):
    with server.client() as client:
        client.encode(["metrics please", "two texts"])
        with pytest.raises(InvalidRequest):
            client.encode(["x" * 100_001])
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    for name in ("zeroembed_requests_total", "zeroembed_texts_total", "zeroembed_tokens_total",
                 "zeroembed_padding_tokens_total", "zeroembed_request_latency_seconds_bucket",
                 "zeroembed_queue_wait_seconds_bucket", "zeroembed_batch_size_bucket",
                 "zeroembed_batch_tokens_bucket", "zeroembed_inference_seconds_bucket", "zeroembed_queue_depth",
                 "zeroembed_busy_workers"):
        assert name in text, name
    model = server.client().status()["name"]
    assert f'zeroembed_errors_total{{code="limit_exceeded",model="{model}",op="encode"}}' in text
    texts_total = next(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith(f'zeroembed_texts_total{{model="{model}"}}'))
    assert texts_total >= 2


def test_status_reports_the_server(server):
    with server.client() as client:
        status = client.status()
    assert status["dim"] == 384 and status["max_seq_length"] == 256 and status["pooling"] == "mean"
    assert status["device"] == "cpu" and status["protocol"] == 1
    assert [w["provider"] for w in status["workers"]] == ["CPUExecutionProvider"] * 2
    assert all(isinstance(w["pid"], int) for w in status["workers"])
    assert status["model"]["manifest"]["precision"] == "fp32"
    assert status["uptime_s"] > 0 and status["queue_depth"] == 0


def test_client_sends_pretokenized_input(server, reference):
    with server.client() as client:
        vectors, pieces = client.encode([["hello", "world"], ["New-York"]], is_tokenized=True, show_tokens=True)
        with pytest.raises(InvalidRequest) as info:
            client.encode(["not", "word lists"], is_tokenized=True)
    np.testing.assert_allclose(vectors[0], reference.run("hello world", "sentence_embedding"), atol=2e-5)
    assert pieces[1] == ["[CLS]", "new", "-", "york", "[SEP]"]
    assert info.value.index == 0
