"""The blocking Client against the fake server (conftest.py): no real server, no model."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from .fake_server import DIM, Error, FakeServer, Reply, Silent, sentence_vectors, token_vectors, word_pieces

from zeroembed.client import Client, ErrorCode, InvalidRequest, ServerBusy, ServerError, ServerTimeout
from zeroembed.client.protocol import encode_reply

pytestmark = pytest.mark.timeout(20)

EXPECTED_CLASS = {
    ErrorCode.MALFORMED: InvalidRequest,
    ErrorCode.UNSUPPORTED_VERSION: InvalidRequest,
    ErrorCode.INVALID_REQUEST: InvalidRequest,
    ErrorCode.TEXT_TOO_LONG: InvalidRequest,
    ErrorCode.LIMIT_EXCEEDED: InvalidRequest,
    ErrorCode.BUSY: ServerBusy,
    ErrorCode.SHUTTING_DOWN: ServerBusy,
    ErrorCode.TIMEOUT: ServerTimeout,
    ErrorCode.WORKER_FAILED: ServerError,
    ErrorCode.INTERNAL: ServerError,
}


@pytest.fixture
def client(server):
    with Client(server.endpoint, timeout=5) as c:
        yield c


def test_import_pulls_in_no_heavy_dependency():
    code = (
        "import sys, zeroembed.client\n"
        "heavy = [m for m in ('onnxruntime', 'tokenizers', 'pydantic', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert zeroembed.client.PROTOCOL_VERSION == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=15)


def test_sentence_vectors(client, server):
    texts = ["hello world", "zeroembed", "ünïcödé ✓"]
    vectors = client.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, DIM)
    np.testing.assert_array_equal(vectors, sentence_vectors(texts))
    header = server.requests[0].header
    assert (header["output"], header["normalize"], header["truncate"], header["show_tokens"]) == (
        "sentence", None, True, False,
    )


def test_options_go_on_the_wire(client, server):
    client.encode(("a",), normalize=False, truncate=False)
    header = server.requests[0].header
    assert header["normalize"] is False and header["truncate"] is False


def test_empty_list_asks_the_server_for_dim(client, server):
    vectors = client.encode([])
    assert vectors.shape == (0, DIM) and vectors.dtype == np.float32
    assert [r.texts for r in server.requests] == [[]]
    assert client.encode([], output="tokens") == []


def test_token_output_is_split_per_text_without_copies(client):
    texts = ["one", "two words here", "three more words"]
    arrays = client.encode(texts, output="tokens")
    assert [a.shape for a in arrays] == [(len(word_pieces(t)), DIM) for t in texts]
    for text, array in zip(texts, arrays):
        np.testing.assert_array_equal(array, token_vectors(text))
    assert all(not a.flags.owndata for a in arrays) and len({id(a.base) for a in arrays}) == 1


def test_show_tokens(client):
    texts = ["Hello world", "x"]
    vectors, tokens = client.encode(texts, show_tokens=True)
    assert vectors.shape == (2, DIM)
    assert tokens == [word_pieces(t) for t in texts]
    arrays, tokens = client.encode(texts, output="tokens", show_tokens=True)
    assert [len(a) for a in arrays] == [len(t) for t in tokens]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_each_error_code_raises_its_class_with_index(client, server, code):
    server.actions.append(Error(code, "it went wrong", index=1))
    with pytest.raises(EXPECTED_CLASS[code]) as info:
        client.encode(["a", "b"])
    assert info.value.code == code and info.value.index == 1 and "it went wrong" in str(info.value)


def test_unknown_error_code_is_a_server_error(client, server):
    server.actions.append(lambda r: [f'{{"v":1,"id":"{r.id}","ok":false,"error":{{"code":"new"}}}}'.encode()])
    with pytest.raises(ServerError, match="unknown error code"):
        client.encode(["a"])


@pytest.mark.parametrize(
    "bad",
    [
        lambda c: c.encode("a bare string"),
        lambda c: c.encode(None),
        lambda c: c.encode(b"bytes"),
        lambda c: c.encode(3),
        lambda c: c.encode(["ok", 3]),
        lambda c: c.encode(["ok", None]),
        lambda c: c.encode(["ok", b"bytes"]),
        lambda c: c.encode(["ok", "lone surrogate \ud800"]),
        lambda c: c.encode(["a"], output="x"),
        lambda c: c.encode(["a"], normalize="yes"),
        lambda c: c.encode(["a"], truncate=None),
        lambda c: c.encode(["a"], show_tokens=1),
    ],
)
def test_bad_input_fails_before_anything_is_sent(client, server, bad):
    with pytest.raises(InvalidRequest) as info:
        bad(client)
    if "texts[" in str(info.value):
        assert info.value.index == 1
    client.encode(["probe"])  # the server answers in order: it saw nothing before this
    assert [r.texts for r in server.requests] == [["probe"]]


def test_bad_item_error_names_index_and_type(client):
    with pytest.raises(InvalidRequest, match=r"texts\[2\] is int") as info:
        client.encode(["a", "b", 7])
    assert info.value.index == 2


def test_unreadable_or_inconsistent_reply_is_a_server_error(client, server):
    server.actions.append(lambda r: [f'{{"v":1,"id":"{r.id}","ok":true,"arrays":[{{"dtype":"<f4","shape":[9]}}]}}'.encode(), b"x"])
    with pytest.raises(ServerError, match="does not match"):
        client.encode(["a"])
    server.actions.append(lambda r: encode_reply(r.id, [np.zeros((3, DIM), np.float32)]))
    with pytest.raises(ServerError, match="sent 1 texts but got 3"):
        client.encode(["a"])


def test_silent_server_times_out_naming_endpoint_and_timeout(server):
    server.actions.append(Silent())
    with Client(server.endpoint, timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(ServerTimeout) as info:
            client.encode(["a"])
    # A deadline is the behaviour: the call waits its timeout (lower bound: load cannot break it) and then
    # gives up (upper bound with 5 s of slack for a loaded machine; a client that never gives up hangs).
    assert 0.3 <= time.monotonic() - start < 0.3 + 5
    assert server.endpoint in str(info.value) and "0.3" in str(info.value)


def test_late_reply_never_reaches_the_next_call(server):
    server.actions.append(Reply(delay=0.4))
    with Client(server.endpoint, timeout=0.15) as client:
        with pytest.raises(ServerTimeout):
            client.encode(["first"])
        server.wait_for_replies(1)  # the late reply to "first" is on its way, ahead of any reply to "second"
        np.testing.assert_array_equal(client.encode(["second"]), sentence_vectors(["second"]))


def test_large_input_is_chunked_pipelined_and_reassembled_in_order(client, server):
    texts = [f"text number {i}" for i in range(2500)]
    vectors = client.encode(texts)
    np.testing.assert_array_equal(vectors, sentence_vectors(texts))
    assert [len(r.texts) for r in server.requests] == [1024, 1024, 452]


def test_chunk_error_index_is_in_the_callers_list(server):
    server.actions.extend([Reply(), Error("text_too_long", "too long", index=5), Reply()])
    with Client(server.endpoint, timeout=5, max_texts_per_request=10) as client:
        with pytest.raises(InvalidRequest) as info:
            client.encode([f"t{i}" for i in range(25)], truncate=False)
    assert info.value.code == ErrorCode.TEXT_TOO_LONG and info.value.index == 15


def test_token_output_across_chunks(server):
    texts = [f"words {'x ' * (i % 4)}" for i in range(7)]
    with Client(server.endpoint, timeout=5, max_texts_per_request=3) as client:
        arrays, tokens = client.encode(texts, output="tokens", show_tokens=True)
    assert tokens == [word_pieces(t) for t in texts]
    for text, array in zip(texts, arrays):
        np.testing.assert_array_equal(array, token_vectors(text))


def test_many_threads_share_one_client(jittery_server):
    results, errors = {}, []
    all_started = threading.Barrier(16)

    def work(n: int) -> None:
        try:
            for k in range(5):
                texts = [f"thread {n} call {k} item {i}" for i in range(n % 3 + 1)]
                results[(n, k)] = (texts, client.encode(texts))
                if k == 0:
                    all_started.wait(10)  # every thread holds its socket at once
        except Exception as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    with Client(jittery_server.endpoint, timeout=10) as client:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert not errors, errors
        assert len(client._sockets) == 16  # real concurrency: one socket per thread
    assert len(results) == 80
    for texts, vectors in results.values():
        np.testing.assert_array_equal(vectors, sentence_vectors(texts))


def test_status(client):
    assert client.status() == {"model": "fake", "dim": DIM, "max_texts_per_request": 1024}


def test_close_is_idempotent_and_final(server):
    client = Client(server.endpoint, timeout=5)
    client.encode(["a"])
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.encode(["a"])


def test_no_server_times_out_quickly(dead_endpoint):
    with Client(dead_endpoint, timeout=0.2) as client:
        start = time.monotonic()
        with pytest.raises(ServerTimeout, match="no reply from"):
            client.encode(["a"])
        with pytest.raises(ServerTimeout):
            client.status()
    # A deadline is the behaviour: two calls of 0.2 s each give up, with 5 s of slack for a loaded machine.
    assert time.monotonic() - start < 2 * 0.2 + 5


def test_timeout_none_waits_for_a_slow_reply(server):
    server.actions.append(Reply(delay=0.3))
    with Client(server.endpoint, timeout=None) as client:
        assert client.encode(["a"]).shape == (1, DIM)


def test_several_endpoints_share_the_load(server, dead_endpoint):
    other = FakeServer().start()
    try:
        with Client([server.endpoint, other.endpoint, dead_endpoint], timeout=5) as client:
            deadline = time.monotonic() + 5
            while not (server.requests and other.requests):
                assert time.monotonic() < deadline, "requests never reached both servers"
                np.testing.assert_array_equal(client.encode(["x"]), sentence_vectors(["x"]))
    finally:
        other.stop()


@pytest.mark.parametrize("endpoint", ["", [], [3], None, 5555])
def test_bad_constructor_arguments(endpoint):
    with pytest.raises(ValueError):
        Client(endpoint)
    with pytest.raises(ValueError):
        Client(timeout=0)
    with pytest.raises(ValueError):
        Client(max_texts_per_request=0)


def test_sockets_of_finished_threads_are_closed(server):
    with Client(server.endpoint, timeout=5) as client:
        for _ in range(3):  # thread-per-task use must not pile up sockets
            thread = threading.Thread(target=client.encode, args=(["a"],))
            thread.start()
            thread.join(5)
        client.encode(["main"])
        assert list(client._sockets) == [threading.current_thread()]
