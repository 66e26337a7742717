"""Faults and floods, for real: workers killed and frozen, clients vanishing, oversized and random messages."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest
import zmq

from zeroembed.client import InvalidRequest, ServerTimeout
from zeroembed.client.protocol import EncodeOptions, decode_reply, encode_request

from .servers import RunningServer, raw_socket, start_server


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def ready_pids(server: RunningServer) -> list[int]:
    with server.client(timeout=5) as client:
        return [w["pid"] for w in client.status()["workers"] if w["ready"]]


def hammer(server: RunningServer, clients: int, rounds: int, failures: list, done: list) -> list[threading.Thread]:
    texts = [f"fault tolerance text {i} " + "word " * (i % 30) for i in range(16)]

    def run(seed: int) -> None:
        rng = random.Random(seed)
        with server.client(timeout=60) as client:
            for _ in range(rounds):
                batch = rng.sample(texts, 8)
                try:
                    vectors = client.encode(batch)
                    assert vectors.shape == (8, 384)
                    done.append(1)
                except Exception as exc:  # asserted by the caller
                    failures.append(repr(exc))

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def test_killed_worker_loses_no_request_and_is_replaced(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--workers", "2", "--threads-per-worker", "1")
    try:
        before = ready_pids(server)
        failures: list = []
        done: list = []
        threads = hammer(server, clients=4, rounds=15, failures=failures, done=done)
        wait_for(lambda: len(done) >= 4)
        os.kill(before[0], signal.SIGKILL)
        for thread in threads:
            thread.join(120)
        assert not failures, failures[:3]
        assert len(done) == 60
        pids = wait_for(lambda: (p := ready_pids(server)) and len(p) == 2 and before[0] not in p and p, timeout=20)
        server.worker_pids = pids + before
        with server.client() as client:
            assert client.status()["worker_restarts"] >= 1
    finally:
        assert server.stop() == 0, server.log()


def test_stuck_worker_is_replaced_and_its_batch_retried(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--workers", "2", "--threads-per-worker", "1",
                          "--batch-timeout-s", "1")
    try:
        before = ready_pids(server)
        os.kill(before[0], signal.SIGSTOP)  # frozen, not dead: only a deadline can notice
        with server.client(timeout=30) as client:
            for i in range(6):
                assert client.encode([f"still answered {i}", "and this"]).shape == (2, 384)
        pids = wait_for(lambda: (p := ready_pids(server)) and len(p) == 2 and before[0] not in p and p, timeout=20)
        server.worker_pids = pids + before
    finally:
        if _alive(before[0]):  # normally killed by the broker already
            os.kill(before[0], signal.SIGCONT)
        assert server.stop() == 0, server.log()


def test_frozen_worker_holding_two_batches_loses_neither(default_artifact, tmp_path):
    # One worker holds a running batch and the next one queued in its socket; both come back after
    # the broker replaces it, including the queued one that never ran.
    server = start_server(default_artifact, tmp_path, "--workers", "1", "--batch-timeout-s", "1",
                          "--max-added-padding", "0")
    try:
        (before,) = ready_pids(server)
        short, long_ = "short text", "a much longer text " * 20  # never in one batch: padding bound 0
        with server.client(timeout=30) as client:
            expected = client.encode([short, long_])
        os.kill(before, signal.SIGSTOP)
        results: dict = {}

        def send(name: str, texts: list[str]) -> None:
            with server.client(timeout=30) as client:
                results[name] = client.encode(texts)

        threads = [threading.Thread(target=send, args=(name, [text])) for name, text in (("a", short), ("b", long_))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # The broker's own account of the worker it replaced (read after the fact, not raced for in status).
        assert "oldest of its 2 batches" in server.log(), server.log()
        np.testing.assert_allclose(results["a"][0], expected[0], atol=1e-5)
        np.testing.assert_allclose(results["b"][0], expected[1], atol=1e-5)
        pids = wait_for(lambda: (p := ready_pids(server)) and before not in p and p, timeout=20)
        server.worker_pids = pids + [before]
    finally:
        if _alive(before):
            os.kill(before, signal.SIGCONT)
        assert server.stop() == 0, server.log()


def test_huge_request_is_tokenized_aside_while_others_are_served(tiny_artifact, tmp_path):
    # About 4 MB of text: seconds of tokenizing, done on the broker's background thread.
    texts = [f"text {i} " + "lorem ipsum dolor " * 280 for i in range(800)]
    server = start_server(tiny_artifact, tmp_path)
    try:
        big: dict = {}

        def send_big() -> None:
            with server.client(timeout=120) as client:
                big["vectors"] = client.encode(texts)

        thread = threading.Thread(target=send_big)
        thread.start()
        seen_tokenizing = False
        with server.client(timeout=30) as client:
            while thread.is_alive() and not seen_tokenizing:
                seen_tokenizing = client.status()["tokenizing_requests"] == 1
            small = client.encode(["answered whatever the big request is doing"])
        thread.join(120)
        assert seen_tokenizing  # the loop answered while the big request was being tokenized
        assert small.shape == (1, 64) and big["vectors"].shape == (800, 64)
        with server.client(timeout=30) as client:
            alone = client.encode(texts[:2] + texts[-2:])
            np.testing.assert_allclose(big["vectors"][[0, 1, -2, -1]], alone, atol=1e-5)
            # An error found after background tokenization still names the text.
            with pytest.raises(InvalidRequest) as info:
                client.encode(texts, truncate=False)
            assert info.value.code.value == "text_too_long" and info.value.index == 0
            assert client.status()["in_flight_requests"] == 0
    finally:
        assert server.stop() == 0, server.log()


def test_request_timeout_answers_instead_of_hanging(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--workers", "1", "--request-timeout-s", "1")
    pids = ready_pids(server)
    try:
        os.kill(pids[0], signal.SIGSTOP)
        with server.client(timeout=60) as client:
            with pytest.raises(ServerTimeout) as info:
                client.encode(["nobody will run this"])
        # The server's answer, not the client giving up (its 60 s would say "no reply from ...").
        assert info.value.code.value == "timeout" and "the server's 1s request timeout" in info.value.message
    finally:
        os.kill(pids[0], signal.SIGCONT)
        assert server.stop() == 0, server.log()


def gauges(server: RunningServer) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    names = ("zeroembed_queue_depth", "zeroembed_in_flight_texts", "zeroembed_busy_workers")
    # One model: each gauge has one line, labelled with its name.
    return {line.split("{")[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(names)}


def test_gauges_show_the_work_in_progress_when_scraped(default_artifact, tmp_path):
    # The worker may hold 2 × 2 batches; it is frozen for as long as the scrapes take, never declared stuck.
    server = start_server(default_artifact, tmp_path, "--workers", "1", "--parallel-batches", "2",
                          "--batch-timeout-s", "600")
    pids = ready_pids(server)
    try:
        os.kill(pids[0], signal.SIGSTOP)  # the batches sent to it stay in flight
        with raw_socket(server.endpoint, timeout_ms=60_000) as sock:
            # Lengths too far apart to share a batch: three batches, all held by the one worker.
            texts = ["one", "one two three four five six seven eight", " ".join(["word"] * 30)]
            sock.send_multipart(encode_request("held", texts, EncodeOptions()))
            assert wait_for(lambda: gauges(server) == {"zeroembed_queue_depth": 0.0, "zeroembed_in_flight_texts": 3.0,
                                                      "zeroembed_busy_workers": 1.0})
            os.kill(pids[0], signal.SIGCONT)
            reply = decode_reply(sock.recv_multipart())
        assert reply.ok and reply.arrays[0].shape == (3, 384)
        assert gauges(server) == {"zeroembed_queue_depth": 0.0, "zeroembed_in_flight_texts": 0.0,
                                  "zeroembed_busy_workers": 0.0}
    finally:
        if _alive(pids[0]):
            os.kill(pids[0], signal.SIGCONT)
        assert server.stop() == 0, server.log()


def test_vanished_client_leaves_nothing_behind(server):
    context = zmq.Context()
    for i in range(5):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(server.endpoint)
        sock.send_multipart(encode_request(f"gone-{i}", [f"text {j}" for j in range(40)], EncodeOptions()))
        sock.close()  # gone before the reply
    context.term()
    with server.client() as client:
        wait_for(lambda: client.status()["in_flight_requests"] == 0)
        assert client.encode(["the rest are served"]).shape == (1, 384)


def test_random_message_storm_then_correct_vectors(server):
    with server.client() as client:
        expected = client.encode(["storm survivor"])
    rng = random.Random(1234)
    context = zmq.Context()
    socks = [context.socket(zmq.DEALER) for _ in range(4)]
    try:
        for sock in socks:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.endpoint)
        for _ in range(400):
            frames = [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 5))]
            if rng.random() < 0.3:  # some with a plausible header, to get past the first checks
                frames[0] = rng.choice([b'{"v":1,"id":"x","op":"encode"}', b'{"v":1,"id":"y","op":"status"}',
                                        b'{"v":1,"id":"z"}', b'{"v":"1","id":1}'])
            rng.choice(socks).send_multipart(frames)
    finally:
        for sock in socks:
            sock.close()
        context.term()
    with server.client() as client:
        np.testing.assert_allclose(client.encode(["storm survivor"]), expected, atol=1e-6)
        assert client.status()["in_flight_requests"] == 0


def test_oversized_message_is_dropped_and_the_server_serves_on(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--max-message-bytes", "4096")
    try:
        with pytest.raises(ServerTimeout):  # dropped, so never answered: only the client's timeout ends the wait
            with server.client(timeout=1.5) as client:
                client.encode(["x" * 10_000])
        with server.client() as client:
            assert client.encode(["small is fine"]).shape == (1, 384)
    finally:
        assert server.stop() == 0, server.log()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_flood_past_max_queue_gets_prompt_busy_and_nothing_is_lost(default_artifact, tmp_path):
    server = start_server(default_artifact, tmp_path, "--max-queue", "64", "--workers", "1",
                          "--batch-timeout-s", "600")
    (worker,) = ready_pids(server)
    try:
        os.kill(worker, signal.SIGSTOP)  # nothing finishes: a busy answer cannot have waited for room
        with raw_socket(server.endpoint, timeout_ms=60_000) as sock:
            texts = [f"flood text {i} " + "word " * 30 for i in range(16)]
            for i in range(60):  # 960 texts at once against a queue of 64
                sock.send_multipart(encode_request(f"flood-{i}", texts, EncodeOptions()))
            # The queue takes four requests; the other 56 are refused at once, while the worker is still frozen.
            refused = [decode_reply(sock.recv_multipart()) for _ in range(56)]
            assert all(not r.ok and r.error["code"] == "busy" for r in refused), refused[0]
            os.kill(worker, signal.SIGCONT)
            served = [decode_reply(sock.recv_multipart()) for _ in range(4)]  # none lost
        assert all(r.ok and r.arrays[0].shape == (16, 384) for r in served)
        assert {r.id for r in refused + served} == {f"flood-{i}" for i in range(60)}
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGCONT)
        assert server.stop() == 0, server.log()
