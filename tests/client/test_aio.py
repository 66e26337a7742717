"""AsyncClient against the fake server (fake_server.py). Plain pytest: each test runs its own loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from .fake_server import DIM, Error, Hold, Reply, Silent, sentence_vectors, token_vectors, word_pieces

from zeroembed.client import AsyncClient, ErrorCode, InvalidRequest, ServerBusy, ServerError, ServerTimeout

pytestmark = pytest.mark.timeout(20)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


def test_sentence_tokens_and_show_tokens(server):
    async def main():
        async with AsyncClient(server.endpoint, timeout=5) as client:
            texts = ["hello world", "zeroembed"]
            vectors = await client.encode(texts)
            assert vectors.dtype == np.float32 and vectors.shape == (2, DIM)
            np.testing.assert_array_equal(vectors, sentence_vectors(texts))
            assert (await client.encode([])).shape == (0, DIM)
            arrays, tokens = await client.encode(texts, output="tokens", show_tokens=True)
            assert tokens == [word_pieces(t) for t in texts]
            for text, array in zip(texts, arrays):
                np.testing.assert_array_equal(array, token_vectors(text))

    run(main())


def test_many_coroutines_share_one_client(jittery_server):
    async def one(client, n):
        texts = [f"coroutine {n} item {i}" for i in range(n % 4 + 1)]
        return texts, await client.encode(texts)

    async def main():
        async with AsyncClient(jittery_server.endpoint, timeout=10) as client:
            return await asyncio.gather(*(one(client, n) for n in range(60)))

    for texts, vectors in run(main()):
        np.testing.assert_array_equal(vectors, sentence_vectors(texts))


@pytest.mark.parametrize(
    ("code", "cls"),
    [("text_too_long", InvalidRequest), ("busy", ServerBusy), ("timeout", ServerTimeout), ("internal", ServerError)],
)
def test_error_replies_raise_their_class(server, code, cls):
    server.actions.append(Error(code, "scripted", index=0))

    async def main():
        async with AsyncClient(server.endpoint, timeout=5) as client:
            with pytest.raises(cls) as info:
                await client.encode(["a"])
            # The server's `timeout` must keep its own code and message, not become a client timeout.
            assert info.value.code == ErrorCode(code) and info.value.index == 0 and "scripted" in str(info.value)

    run(main())


def test_large_input_chunks_and_error_index(server):
    texts = [f"text {i}" for i in range(2500)]

    async def main():
        async with AsyncClient(server.endpoint, timeout=5) as client:
            np.testing.assert_array_equal(await client.encode(texts), sentence_vectors(texts))
            server.actions.extend([Reply(), Error("limit_exceeded", "too many", index=3), Reply()])
            with pytest.raises(InvalidRequest) as info:
                await client.encode(texts)
            assert info.value.index == 1024 + 3

    run(main())
    assert [len(r.texts) for r in server.requests[:3]] == [1024, 1024, 452]


def test_bad_input_fails_before_anything_is_sent(server):
    async def main():
        async with AsyncClient(server.endpoint, timeout=5) as client:
            for bad in ("text", None, ["a", 1]):
                with pytest.raises(InvalidRequest):
                    await client.encode(bad)
            with pytest.raises(InvalidRequest):
                await client.encode(["a"], output="x")
            await client.encode(["probe"])

    run(main())
    assert [r.texts for r in server.requests] == [["probe"]]


def test_timeout_and_late_reply_does_not_leak(server):
    server.actions.append(Reply(delay=0.4))

    async def main():
        async with AsyncClient(server.endpoint, timeout=0.15) as client:
            with pytest.raises(ServerTimeout) as info:
                await client.encode(["first"])
            assert server.endpoint in str(info.value) and "0.15" in str(info.value)
            await asyncio.to_thread(server.wait_for_replies, 1)  # the late reply is on its way, ahead of the next
            np.testing.assert_array_equal(await client.encode(["second"]), sentence_vectors(["second"]))

    run(main())


def test_cancelling_one_call_leaves_the_others_alone(server):
    cancelled = threading.Event()
    server.actions.extend([Hold(until=cancelled.is_set), Reply()])  # "doomed" is answered after its cancellation

    async def main():
        async with AsyncClient(server.endpoint, timeout=5) as client:
            doomed = asyncio.create_task(client.encode(["doomed"]))
            while not server.requests:  # doomed's request arrived first: it gets the held reply
                await asyncio.sleep(0.005)
            survivor = asyncio.create_task(client.encode(["survivor"]))
            doomed.cancel()
            cancelled.set()
            np.testing.assert_array_equal(await survivor, sentence_vectors(["survivor"]))
            with pytest.raises(asyncio.CancelledError):
                await doomed
            await asyncio.to_thread(server.wait_for_replies, 2)  # the doomed call's reply came, ahead of the next
            np.testing.assert_array_equal(await client.encode(["after"]), sentence_vectors(["after"]))

    run(main())


def test_status_close_and_no_server(server, dead_endpoint):
    async def main():
        client = AsyncClient(server.endpoint, timeout=5)
        assert (await client.status())["dim"] == DIM
        await client.close()
        await client.close()
        with pytest.raises(RuntimeError, match="closed"):
            await client.encode(["a"])
        async with AsyncClient(dead_endpoint, timeout=0.2) as nobody:
            start = time.monotonic()
            with pytest.raises(ServerTimeout, match="no reply from"):
                await nobody.encode(["a"])
            # A deadline is the behaviour: it gives up after 0.2 s (5 s of slack for a loaded machine).
            assert time.monotonic() - start < 0.2 + 5

    run(main())


def test_close_fails_calls_still_waiting(server):
    server.actions.append(Silent())

    async def main():
        client = AsyncClient(server.endpoint, timeout=None)
        call = asyncio.create_task(client.encode(["a"]))
        while not server.requests:  # the call is waiting for its reply
            await asyncio.sleep(0.005)
        await client.close()
        with pytest.raises(RuntimeError, match="closed"):
            await call

    run(main())
