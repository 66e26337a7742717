"""The in-process way into the server's loop, driven without a server: a thread stands in for the loop."""

from __future__ import annotations

import asyncio
import select
import threading

import numpy as np
import pytest

from zeroembed.client import ServerTimeout
from zeroembed.server.core.jobs import Outcome
from zeroembed.server.frontends.bridge import CoreBridge, InProcessClient


def test_answers_come_back_with_their_token_count():
    bridge = CoreBridge()
    seen = []

    def route(request, respond):  # the loop's side: one vector per text, 3 tokens per text
        seen.append(request)
        count = len(request.texts)
        respond(Outcome(request.header["id"], [np.ones((count, 4), np.float32)], {"num_tokens": 3 * count}))

    stop = threading.Event()

    def loop_thread():  # as the server's loop does: wait on the bridge's socket, then drain it
        while not stop.is_set():
            if select.select([bridge], [], [], 0.05)[0]:
                bridge.drain(route)

    thread = threading.Thread(target=loop_thread)
    thread.start()
    try:
        client = InProcessClient(bridge, max_texts_per_request=2, backstop_s=30)
        vectors, tokens = asyncio.run(client.encode_counted(["a", "b", "c"]))
    finally:
        stop.set()
        thread.join()
    assert vectors.shape == (3, 4) and tokens == 9
    assert [len(r.texts) for r in seen] == [2, 1]  # split by max_texts_per_request, counted over both replies


def test_backstop_raises_when_the_loop_never_answers():
    client = InProcessClient(CoreBridge(), max_texts_per_request=8, backstop_s=0.05)  # nobody drains it
    with pytest.raises(ServerTimeout, match="no answer from the server's loop within 0.05 s"):
        asyncio.run(client.encode(["hello"]))
