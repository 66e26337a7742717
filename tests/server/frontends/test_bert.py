"""bert-as-service compatibility (server/bert_adapter.py): the real, unmodified bert-serving-client 1.10.0
against `zeroembed serve --bert-port`, raw PUSH/SUB sockets for what that client cannot send, and the
adapter in process against a stand-in broker for the slow-joiner bookkeeping."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from zeroembed.cli import main
from zeroembed.client.protocol import EncodeOptions, decode_reply, encode_reply, encode_request
from zeroembed.server.frontends.bert_wire import (
    BERT_PROTOCOL_VERSION,
    BertRequestError,
    error_reply,
    parse_request,
    vectors_reply,
)
from zeroembed.server.config import load_settings
from zeroembed.server.metrics import Metrics

from ...dependencies import require
from ..servers import RunningServer, free_port, start_server, wait_ready

bert_client = require("bert_serving.client", "dev")
BertClient, ConcurrentBertClient = bert_client.BertClient, bert_client.ConcurrentBertClient

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café, Zürich — ünïcödé",
    "東京は日本の首都です。",
    " ".join(["a considerably longer sentence that goes on"] * 12),
]
TIMEOUT_MS = 30_000


class BertServer:
    """A RunningServer with its two bert-as-service ports."""

    def __init__(self, running: RunningServer, port: int, port_out: int) -> None:
        self.running, self.port, self.port_out = running, port, port_out

    def bert(self, **kwargs) -> BertClient:
        return BertClient(port=self.port, port_out=self.port_out, **{"timeout": TIMEOUT_MS, **kwargs})

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(self.running.metrics_url, timeout=5).read().decode()
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
        return sum(values)


def start_bert_server(artifact: Path, tmp_path: Path, *args: str, wait: bool = True) -> BertServer:
    port, port_out = free_port(), free_port()
    running = start_server(artifact, tmp_path, "--bert-port", str(port), "--bert-port-out", str(port_out),
                           "--workers", "1", "--threads-per-worker", "1", *args, wait=wait)
    return BertServer(running, port, port_out)


@pytest.fixture(scope="module")
def bert_server(default_artifact, tmp_path_factory):
    server = start_bert_server(default_artifact, tmp_path_factory.mktemp("bert"))
    yield server
    assert server.running.stop() == 0, server.running.log()


@pytest.fixture(scope="module")
def expected(bert_server):
    with bert_server.running.client() as client:
        return client.encode(TEXTS, show_tokens=True)


class RawClient:
    """A bert-as-service client by hand: PUSH now, SUB whenever the test says so."""

    def __init__(self, server: BertServer, identity: bytes | None = None) -> None:
        self.server = server
        self.identity = identity or str(uuid.uuid4()).encode()
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{server.port}")
        self.sub = None

    def send(self, *frames: bytes) -> None:
        self.push.send_multipart(list(frames))

    def subscribe(self) -> None:
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, self.identity)
        self.sub.connect(f"tcp://127.0.0.1:{self.server.port_out}")

    def unsubscribe(self) -> None:
        self.sub.close()
        self.sub = None

    def recv(self, timeout_ms: int = 10_000) -> list[bytes]:
        assert self.sub.poll(timeout_ms), "no reply"
        return self.sub.recv_multipart()

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()
        self.push.close()
        self.context.term()


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# --------------------------------------------------------------- the real client


@pytest.mark.timeout(120)
def test_default_bert_client_gets_the_same_vectors(bert_server, expected):
    vectors, _ = expected
    # Every default: version, length and token-info checks on, no timeout (pytest's guards the test).
    with BertClient(port=bert_server.port, port_out=bert_server.port_out) as bc:
        config = bc.server_config
        got = bc.encode(TEXTS)
    assert config["server_version"] == BERT_PROTOCOL_VERSION == bert_client.__version__
    assert config["max_seq_len"] == 256 and config["show_tokens_to_client"] is True
    assert config["pooling_strategy"] == "REDUCE_MEAN" and config["zeroembed"]["dim"] == 384
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, vectors, atol=1e-5)


def test_show_config_and_status(bert_server):
    with bert_server.bert(show_server_config=True) as bc:
        bc.encode(["one", "two"])
        status = bc.server_status
    assert status["statistic"]["num_data_request"] >= 1 and status["statistic"]["num_total_seq"] >= 2
    assert status["num_worker"] == 1 and status["zeroembed"]["workers"][0]["ready"]


def test_show_tokens(bert_server, expected):
    vectors, tokens = expected
    with bert_server.bert() as bc:
        got, got_tokens = bc.encode(TEXTS, show_tokens=True)
    np.testing.assert_allclose(got, vectors, atol=1e-5)
    assert got_tokens == tokens
    assert got_tokens[0] == ["[CLS]", "hello", "world", "[SEP]"]


def test_is_tokenized_takes_the_words_as_given(bert_server):
    words = [["hello", "world"], ["New York", "is", "big"], ["unbelievably", "tokenized", "!"]]
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.connect(bert_server.running.endpoint)
    dealer.send_multipart(encode_request("ref", words, EncodeOptions(is_tokenized=True, show_tokens=True)))
    assert dealer.poll(30_000)
    reference = decode_reply(dealer.recv_multipart())
    dealer.close(0)
    context.term()
    with bert_server.bert() as bc:
        got, tokens = bc.encode(words, is_tokenized=True, show_tokens=True)
    np.testing.assert_allclose(got, reference.arrays[0], atol=1e-5)
    assert tokens == reference.header["tokens"]
    with bert_server.running.client() as client:
        joined = client.encode([" ".join(w) for w in words[:1]])
    np.testing.assert_allclose(got[:1], joined, atol=1e-5)  # plain words: the same as the sentence


def test_concurrent_bert_client_in_threads(bert_server, expected):
    vectors, _ = expected
    bc = ConcurrentBertClient(max_concurrency=4, port=bert_server.port, port_out=bert_server.port_out,
                              timeout=TIMEOUT_MS)
    failures: list = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(5):
                order = rng.permutation(len(TEXTS))
                got = bc.encode(texts=[TEXTS[i] for i in order])
                np.testing.assert_allclose(got, vectors[order], atol=1e-5)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bc.close()
    assert not failures, failures


@pytest.mark.timeout(120)
def test_non_blocking_encode_then_fetch(bert_server, expected):
    vectors, _ = expected
    with bert_server.bert() as bc:
        for i in range(len(TEXTS)):
            assert bc.encode([TEXTS[i]], blocking=False) is None
        fetched = sorted(bc.fetch(), key=lambda r: r.id)
        assert [r.id for r in fetched] == list(range(bc.request_id - len(TEXTS) + 1, bc.request_id + 1))
        np.testing.assert_allclose(np.concatenate([r.embedding for r in fetched]), vectors, atol=1e-5)
        bc.encode(TEXTS[:2], blocking=False)
        bc.encode(TEXTS[2:], blocking=False)
        np.testing.assert_allclose(bc.fetch_all(concat=True), vectors, atol=1e-5)


def test_errors_surface_in_the_client_with_their_message(bert_server):
    with bert_server.bert() as bc:
        with pytest.raises(TypeError, match=r"zeroembed error \[limit_exceeded\]: texts\[1\] has 200000 characters"):
            bc.encode(["fine", "x" * 200_000])
        np.testing.assert_equal(bc.encode(["still fine"]).shape, (1, 384))  # the client works on


# --------------------------------------------------------------- raw sockets


def test_bad_payloads_get_errors_and_do_not_stall_others(bert_server):
    raw = RawClient(bert_server)
    raw.subscribe()
    before = bert_server.metric("zeroembed_bert_errors_total")
    try:
        bad = [
            (b"not json", "malformed"),
            (b'{"a": 1}', "invalid_request"),
            (b'["text", ["mixed"]]', "invalid_request"),
            (b"[[1, 2]]", "invalid_request"),  # is_tokenized with non-string words: the broker says so
            (b"TERMINATION", "invalid_request"),
            (b"\xff\xfe", "malformed"),
        ]
        for i, (payload, _) in enumerate(bad, start=1):
            raw.send(raw.identity, payload, b"%d" % i, b"1")
        raw.send(raw.identity, b'["x"]')  # two frames, no request id: nobody can be told, logged and counted
        raw.send(b"", b'["x"]', b"99", b"1")  # no client id either
        with bert_server.bert() as bc:  # a real client meanwhile is served
            assert bc.encode(["good"]).shape == (1, 384)
        replies = {}
        for _ in bad:
            frames = raw.recv()
            assert frames[0] == raw.identity and len(frames) == 4
            replies[int(frames[-1])] = json.loads(frames[1])
        for i, (_, code) in enumerate(bad, start=1):
            info = replies[i]
            assert info["error"]["code"] == code, info
            assert info["dtype"].startswith(f"zeroembed error [{code}]")
            with pytest.raises(TypeError, match="zeroembed error"):  # what BertClient._recv_ndarray does
                np.frombuffer(memoryview(b""), dtype=str(info["dtype"]))
        assert "does not stop on a client's request" in replies[5]["error"]["message"]
        wait_for(lambda: bert_server.metric("zeroembed_bert_errors_total") >= before + len(bad) + 2)
        assert "dropped a request nobody can be told about" in bert_server.running.log()
    finally:
        raw.close()


def test_slow_joiner_gets_its_reply(bert_server, expected):
    vectors, _ = expected
    raw = RawClient(bert_server)
    try:
        held = bert_server.metric("zeroembed_bert_held_replies")
        raw.send(raw.identity, json.dumps(TEXTS[:2]).encode(), b"1", b"2")
        raw.send(raw.identity, b"SHOW_CONFIG", b"2", b"0")
        # Both replies are ready, and nobody has subscribed to this id: they wait in the adapter.
        wait_for(lambda: bert_server.metric("zeroembed_bert_held_replies") == held + 2)
        raw.subscribe()
        replies = {int(f[-1]): f for f in (raw.recv(), raw.recv())}
        info = json.loads(replies[1][1])
        got = np.frombuffer(replies[1][2], dtype=info["dtype"]).reshape(info["shape"])
        np.testing.assert_allclose(got, vectors[:2], atol=1e-5)
        assert json.loads(replies[2][1])["server_version"] == BERT_PROTOCOL_VERSION
        assert bert_server.metric("zeroembed_bert_held_replies") == held
        # Unsubscribing (here: disconnecting) makes the adapter forget the id: the next reply waits again.
        with bert_server.bert() as probe:
            active = probe.server_status["statistic"]["num_active_client"]
            raw.unsubscribe()
            wait_for(lambda: probe.server_status["statistic"]["num_active_client"] == active - 1)
        raw.send(raw.identity, json.dumps(TEXTS[:1]).encode(), b"3", b"1")
        wait_for(lambda: bert_server.metric("zeroembed_bert_held_replies") == held + 1)
        raw.subscribe()
        frames = raw.recv()
        assert int(frames[-1]) == 3
        assert bert_server.metric("zeroembed_bert_expired_replies_total") == 0
    finally:
        raw.close()


# --------------------------------------------------------------- starting and stopping


def test_port_clash_is_an_error_at_start(capsys):
    assert main(["serve", "--bert-port", "5555", "--device", "cpu"]) == 2  # the default --port is 5555
    assert "--port and --bert-port are both 5555" in capsys.readouterr().err
    assert main(["serve", "--port", "7000", "--bert-port", "6999", "--device", "cpu"]) == 2  # out = 7000
    assert "--port and --bert-port-out are both 7000" in capsys.readouterr().err
    assert main(["serve", "--bert-port", "7001", "--bert-port-out", "7001", "--device", "cpu"]) == 2
    assert "--bert-port and --bert-port-out are both 7001" in capsys.readouterr().err
    assert main(["serve", "--bert-port-out", "7001", "--device", "cpu"]) == 2
    assert "--bert-port-out needs --bert-port" in capsys.readouterr().err
    settings = load_settings(device="cpu", bert_port=6000)
    assert settings.bert_port_out == 6001


def test_curve_with_bert_is_refused_without_the_opt_in(tmp_path, capsys):
    assert main(["keys", str(tmp_path)]) == 0
    curve = ["--curve-secret", str(tmp_path / "server.key_secret"), "--curve-clients", str(tmp_path)]
    assert main(["serve", *curve, "--bert-port", str(free_port()), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "bert-serving-client cannot do CurveZMQ" in err and "--allow-insecure-bert" in err
    settings = load_settings(device="cpu", bert_port=6000, allow_insecure_bert=True,
                             curve_secret=tmp_path / "server.key_secret", curve_clients=tmp_path)
    assert settings.allow_insecure_bert


def test_curve_with_the_opt_in_serves_and_warns(default_artifact, tmp_path):
    keys = tmp_path / "keys"
    assert main(["keys", str(keys)]) == 0
    admitted = keys / "admitted"
    admitted.mkdir()
    (admitted / "client.key").write_bytes((keys / "client.key").read_bytes())
    server = start_bert_server(default_artifact, tmp_path, "--curve-secret", str(keys / "server.key_secret"),
                               "--curve-clients", str(admitted), "--allow-insecure-bert", wait=False)
    server.running.client_keys = dict(server_key=keys / "server.key", client_key=keys / "client.key_secret")
    try:
        wait_ready(server.running)
        with server.bert() as bc:
            assert bc.encode(["hello"]).shape == (1, 384)
        assert "plain TCP without CurveZMQ" in server.running.log()
    finally:
        assert server.running.stop() == 0, server.running.log()


def test_bert_port_in_use_exits_2_and_leaves_no_worker(default_artifact, tmp_path):
    with zmq.Context() as context, context.socket(zmq.PULL) as taken:
        port = taken.bind_to_random_port("tcp://127.0.0.1")
        running = start_server(default_artifact, tmp_path, "--bert-port", str(port), "--bert-port-out",
                               str(free_port()), "--workers", "1", wait=False)
        try:
            assert running.process.wait(120) == 2
        finally:
            running.stop()
    log = running.log()
    assert f"cannot listen for bert-as-service clients on tcp://127.0.0.1:{port}" in log, log


@pytest.mark.timeout(180)
def test_sigterm_answers_bert_clients_and_exits_0(default_artifact, tmp_path):
    server = start_bert_server(default_artifact, tmp_path)
    results: list = []
    with server.bert() as bc:
        for _ in range(8):
            bc.encode(TEXTS, blocking=False)
        server.running.process.send_signal(15)
        try:
            for response in bc.fetch():
                results.append(response.embedding.shape)
        except TypeError as exc:  # answered with shutting_down: surfaced, not left to time out
            results.append(str(exc))
    assert server.running.stop() == 0, server.running.log()
    assert results and all(r == (len(TEXTS), 384) or "shutting_down" in str(r) for r in results), results


# --------------------------------------------------------------- the adapter in process


def test_parse_request_and_error_reply():
    request = parse_request([b"c", b'[["a", "b"]]', b"7", b"1"])
    assert request.is_tokenized and request.count == 1 and request.req_id == b"7"
    assert parse_request([b"c", b"SHOW_STATUS", b"1"]).command == b"SHOW_STATUS"  # old 3-frame clients
    with pytest.raises(BertRequestError) as exc:
        parse_request([b"c", b"[]", b"x1", b"0"])
    assert not exc.value.answerable
    frames = error_reply(b"c", b"3", "busy", "the server is full (1, 2, 3)")
    info = json.loads(frames[1])
    with pytest.raises(TypeError, match=r"zeroembed error \[busy\]: the server is full \[1; 2; 3\]"):
        np.frombuffer(memoryview(frames[2]), dtype=str(info["dtype"]))


class StandInBroker:
    """A ROUTER on an ipc endpoint answering v1 encode requests with zeros, only when told to."""

    def __init__(self, tmp_path: Path) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"ipc://{tmp_path / 'internal'}"
        self.router.bind(self.endpoint)

    def answer(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.router.poll(5000)
            identity, header, _texts = self.router.recv_multipart()
            request_id = json.loads(header)["id"]
            self.router.send_multipart([identity, *encode_reply(request_id, [np.zeros((1, 4), np.float32)],
                                                                tokens=[["x"]])])

    def close(self) -> None:
        self.router.close()
        self.context.term()


def test_held_replies_expire_and_are_bounded(tmp_path):
    from zeroembed.server.frontends.bert import BertAdapter

    broker = StandInBroker(tmp_path)
    port = free_port()
    metrics = Metrics()
    adapter = BertAdapter(broker.endpoint, metrics.for_model("m"), bind="127.0.0.1", port=port, port_out=free_port(),
                          max_message_bytes=2**20, request_timeout_s=120.0, hold_s=2.0, max_held=2)
    adapter.start()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")

    def sample(name: str) -> float:
        return metrics.registry.get_sample_value(name, {"model": "m"}) or 0.0

    try:
        for i in range(3):  # three replies for a client that never subscribes; room to hold two
            push.send_multipart([b"ghost", b'["x"]', b"%d" % i, b"1"])
        broker.answer(3)
        wait_for(lambda: sample("zeroembed_bert_expired_replies_total") == 1, timeout=30)
        assert sample("zeroembed_bert_held_replies") == 2  # bounded by count, the oldest went first
        # Then by time (hold_s = 2 s); the 30 s is a backstop for a loaded machine, not the bound tested.
        wait_for(lambda: sample("zeroembed_bert_expired_replies_total") == 3, timeout=30)
        assert sample("zeroembed_bert_held_replies") == 0
        assert adapter._held == {} and not adapter._held_fifo  # nothing left behind
    finally:
        push.close()
        context.term()
        adapter.stop()
        broker.close()


class InProcessAdapter:
    """A BertAdapter in this process before ``internal_endpoint`` (a StandInBroker's, or nobody's), with a
    subscribed client: ``send`` PUSHes a request, ``recv`` takes a reply."""

    def __init__(self, internal_endpoint: str, **bounds) -> None:
        from zeroembed.server.frontends.bert import BertAdapter

        self.port, port_out = free_port(), free_port()
        self.metrics = Metrics()
        self.adapter = BertAdapter(internal_endpoint, self.metrics.for_model("m"), bind="127.0.0.1", port=self.port,
                                   port_out=port_out, max_message_bytes=2**20, request_timeout_s=120.0, **bounds)
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.sub = self.context.socket(zmq.SUB)
        for sock in (self.push, self.sub):
            sock.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"me")
        self.sub.connect(f"tcp://127.0.0.1:{port_out}")
        self.push.connect(f"tcp://127.0.0.1:{self.port}")

    def send(self, req_id: int, client: bytes = b"me") -> None:
        self.push.send_multipart([client, b'["x"]', b"%d" % req_id, b"1"])

    def recv(self) -> tuple[int, dict]:
        assert self.sub.poll(20_000), "no reply"
        frames = self.sub.recv_multipart()
        return int(frames[-1]), json.loads(frames[1])

    def sample(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, {"model": "m", **labels}) or 0.0

    def close(self) -> None:
        self.push.close()
        self.sub.close()
        self.context.term()
        self.adapter.stop()


def test_held_replies_are_bounded_by_bytes(tmp_path):
    broker = StandInBroker(tmp_path)
    # What one held reply weighs (the stand-in answers every request with one 4-float vector): room for one.
    one = sum(len(f) for f in vectors_reply(b"ghost", b"0", "<f4", [1, 4], bytes(16), [["x"]]))
    side = InProcessAdapter(broker.endpoint, hold_s=600.0, max_held=100, max_held_bytes=one * 3 // 2)
    side.adapter.start()
    try:
        for i in range(3):  # for a client that never subscribes: only the byte bound can release them
            side.send(i, client=b"ghost")
        broker.answer(3)
        wait_for(lambda: side.sample("zeroembed_bert_expired_replies_total") == 2, timeout=10)
        assert side.sample("zeroembed_bert_held_replies") == 1
    finally:
        side.close()
        broker.close()


def test_a_full_queue_to_the_broker_answers_busy(tmp_path):
    # Nobody serves the internal endpoint: the adapter's DEALER queues up to its high-water mark (1000), then
    # refuses; those requests are answered busy at once instead of piling up.
    side = InProcessAdapter(f"ipc://{tmp_path / 'nobody'}")
    side.adapter.start()
    try:
        for i in range(1200):
            side.send(i)
        req_id, reply = side.recv()
        assert reply["error"]["code"] == "busy" and "queue to the model is full" in reply["error"]["message"]
        assert req_id >= 1000  # the first thousand were queued, not refused
        wait_for(lambda: side.sample("zeroembed_bert_errors_total", code="busy") >= 150, timeout=10)
    finally:
        side.close()


def test_backstop_answers_timeout_when_the_broker_never_does(tmp_path):
    broker = StandInBroker(tmp_path)  # takes the request and never answers
    # The backstop is the server's request timeout + 30 s by default; shortened here to reach it.
    side = InProcessAdapter(broker.endpoint, pending_timeout_s=0.5)
    side.adapter.start()
    try:
        side.send(7)
        assert broker.router.poll(5000)  # the request reached the broker, which stays silent
        req_id, reply = side.recv()
        assert (req_id, reply["error"]["code"]) == (7, "timeout")
        assert "did not answer in time" in reply["error"]["message"]
    finally:
        side.close()
        broker.close()


def test_stop_answers_what_the_broker_left_unanswered_with_shutting_down(tmp_path):
    broker = StandInBroker(tmp_path)
    side = InProcessAdapter(broker.endpoint)
    side.adapter.start()
    try:
        side.send(1)
        broker.answer(1)
        assert side.recv()[0] == 1  # held until the subscription arrived: it is in place now
        side.send(2)
        assert broker.router.poll(5000)  # forwarded, pending in the adapter; the broker will never answer
        broker.router.recv_multipart()
        side.adapter.stop()
        req_id, reply = side.recv()
        assert (req_id, reply["error"]["code"]) == (2, "shutting_down")
    finally:
        side.close()
        broker.close()
