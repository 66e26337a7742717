"""A fake zeroembed server for the client tests (fixtures in conftest.py): a ROUTER in a thread that speaks protocol v1.

Vectors are derived from each text's hash, so a test knows what every text must
get back. Tests script replies through ``server.actions`` (one per request, in
arrival order; plain replies once it is empty):

* ``Reply(delay=s)``            answer normally, ``s`` seconds late
* ``Error(code, message, index)``  answer with an error
* ``Silent()``                  never answer
* ``Hold(until, reply)``        answer once ``until()`` is true (checked every 10 ms), with ``reply(request)``'s
                                frames if given: a reply released by an event, not by a delay
* any callable ``(request) -> frames``  answer with exactly those frames
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq

from zeroembed.client.protocol import (
    ErrorCode,
    Op,
    ProtocolError,
    Request,
    decode_request,
    encode_error,
    encode_reply,
)

DIM = 8


def vector_for(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def word_pieces(text: str) -> list[str]:
    return ["[CLS]", *text.lower().split(), "[SEP]"]


def token_vectors(text: str) -> np.ndarray:
    return np.stack([vector_for(f"{i}:{piece}") for i, piece in enumerate(word_pieces(text))])


def sentence_vectors(texts: list[str]) -> np.ndarray:
    return np.stack([vector_for(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)


@dataclass
class Reply:
    delay: float = 0.0


@dataclass
class Error:
    code: str
    message: str = "scripted error"
    index: int | None = None


@dataclass
class Silent:
    pass


@dataclass
class Hold:
    until: Callable[[], bool]
    reply: Callable[[Request], list] | None = None


def answer(request: Request) -> list:
    """What a correct server replies to ``request``."""
    if request.op == Op.STATUS:
        return encode_reply(request.id, status={"model": "fake", "dim": DIM, "max_texts_per_request": 1024})
    texts, header = request.texts, request.header
    fields: dict = {"num_tokens": sum(len(word_pieces(t)) for t in texts)}
    if header["output"] == "tokens":
        arrays = [token_vectors(t) for t in texts]
        vectors = np.concatenate(arrays) if arrays else np.zeros((0, DIM), np.float32)
        fields["lengths"] = [len(a) for a in arrays]
    else:
        vectors = sentence_vectors(texts)
    if header["show_tokens"]:
        fields["tokens"] = [word_pieces(t) for t in texts]
    return encode_reply(request.id, [vectors], **fields)


class FakeServer:
    def __init__(self, jitter: bool = False) -> None:
        self.jitter = jitter  # delay each reply by 0-20 ms (by hash) so replies come back out of order
        self.actions: deque = deque()
        self.requests: list[Request] = []
        self.replies_sent = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-zeroembed", daemon=True)
        self.endpoint = ""

    def start(self) -> FakeServer:
        self._thread.start()
        assert self._ready.wait(5), "fake server did not start"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def wait_for_replies(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.replies_sent < count:
            assert time.monotonic() < deadline, f"fake server sent {self.replies_sent} replies, expected {count}"
            time.sleep(0.005)

    def _run(self) -> None:
        context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._ready.set()
        due: list = []  # heap of (time, seq, identity, frames): delayed replies never block others
        held: list = []  # (Hold, identity, request): sent once their condition holds
        seq = itertools.count()
        try:
            while not self._stop.is_set():
                wait = 10 if not due else max(0, min(10, int((due[0][0] - time.monotonic()) * 1000)))
                if router.poll(wait):
                    identity, *frames = router.recv_multipart()
                    reply, delay = self._handle(frames)
                    if isinstance(reply, Hold):
                        held.append((reply, identity, self.requests[-1]))
                    elif reply is not None:
                        heapq.heappush(due, (time.monotonic() + delay, next(seq), identity, reply))
                while due and due[0][0] <= time.monotonic():
                    _, _, identity, reply = heapq.heappop(due)
                    router.send_multipart([identity, *reply])
                    self.replies_sent += 1
                released = [h for h in held if h[0].until()]
                held = [h for h in held if not any(h is r for r in released)]
                for hold, identity, request in released:
                    router.send_multipart([identity, *(hold.reply or answer)(request)])
                    self.replies_sent += 1
        finally:
            router.close(linger=0)
            context.term()

    def _handle(self, frames: list[bytes]) -> tuple[list | None, float]:
        try:
            request = decode_request(frames)
        except ProtocolError as exc:
            return encode_error(exc.request_id, exc.code, exc.message), 0.0
        self.requests.append(request)
        action = self.actions.popleft() if self.actions else Reply()
        delay = getattr(action, "delay", 0.0)
        if self.jitter:
            delay += hashlib.blake2b(request.id.encode(), digest_size=1).digest()[0] / 255 * 0.02
        if isinstance(action, Silent):
            return None, 0.0
        if isinstance(action, Hold):
            return action, 0.0
        if isinstance(action, Error):
            return encode_error(request.id, ErrorCode(action.code), action.message, action.index), delay
        if callable(action):
            return action(request), delay
        return answer(request), delay
