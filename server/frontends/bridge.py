"""Requests from other threads of the serve process into the server's loop, without a wire format.

The HTTP gateway runs its own asyncio loop in a thread; its requests reach the
request cores through a :class:`CoreBridge`: a queue plus a socket pair the
server's loop polls, so a request costs one thread wake-up and no
serialization. Answers come back as :class:`~zeroembed.server.core.jobs.Outcome`
objects and are read with the client's own functions (``calls.assemble``), so
in-process callers get exactly what a ZeroMQ client gets.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from zeroembed.client.calls import EncodeResult, RerankResult, assemble, build_chunks, check_options, check_rerank, \
    check_texts, new_request_id, rank
from zeroembed.client.errors import ServerTimeout, ZeroEmbedError, error_for
from zeroembed.client.protocol import PROTOCOL_VERSION, ErrorCode, Op, Reply, Request

from ..core.jobs import Outcome, Respond

Route = Callable[[Request, Respond], None]


class CoreBridge:
    """A thread-safe way into the server's loop. :meth:`submit` from any thread; the loop polls
    :meth:`fileno` and calls :meth:`drain` with its router."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Request, Respond]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def submit(self, request: Request, respond: Respond) -> None:
        """Queue ``request`` for the loop; ``respond`` is called on the loop's thread with its outcome."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._queue.append((request, respond))
        if closed:
            respond(Outcome(request.id, error=ErrorCode.SHUTTING_DOWN, message="the server has stopped"))
            return
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:  # the loop has wake-ups pending already
            pass

    def drain(self, route: Route) -> None:
        """On the loop's thread: hand every queued request to ``route``."""
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._queue:
                    return
                request, respond = self._queue.popleft()
            route(request, respond)

    def close(self) -> None:
        """Answer what is still queued with ``shutting_down``; later submissions are answered so at once."""
        with self._lock:
            self._closed = True
            left, self._queue = list(self._queue), deque()
        for request, respond in left:
            respond(Outcome(request.id, error=ErrorCode.SHUTTING_DOWN, message="the server has stopped"))
        self._wake_r.close()
        self._wake_w.close()


class InProcessClient:
    """``AsyncClient``'s ``encode`` and ``status`` over a :class:`CoreBridge`, for front ends with an asyncio loop.

    ``backstop_s`` bounds a call in case the server's loop is gone; the core's own request timeout
    answers first.
    """

    def __init__(self, bridge: CoreBridge, *, max_texts_per_request: int, backstop_s: float) -> None:
        self.bridge = bridge
        self.max_texts_per_request = max_texts_per_request
        self.backstop_s = backstop_s

    async def encode(self, texts: Sequence[str] | Sequence[Sequence[str]], **options: Any) -> EncodeResult:
        """Embed ``texts``: arguments, result and errors as in :meth:`zeroembed.client.Client.encode`."""
        return (await self.encode_counted(texts, **options))[0]

    async def encode_counted(self, texts: Sequence[str] | Sequence[Sequence[str]],
                             **options: Any) -> tuple[EncodeResult, int]:
        """:meth:`encode`'s result and the number of tokens the model read for it (prompts and special
        tokens included), taken from the replies rather than from word pieces."""
        checked = check_options(options)
        texts = check_texts(texts, checked.is_tokenized)
        header = {"v": PROTOCOL_VERSION, "op": Op.ENCODE.value, **checked.header()}
        chunks = build_chunks(texts, checked, self.max_texts_per_request, frames=False)
        calls = [self._call(Request({**header, "id": chunk.request_id}, texts[chunk.offset:chunk.offset + chunk.count]),
                            chunk.offset) for chunk in chunks]
        # One request (the usual case) is awaited as it is: gather would wrap it in a task of its own.
        replies = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        return assemble(chunks, replies, checked), sum(int(r.header.get("num_tokens", 0)) for r in replies)

    async def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
                     return_documents: bool = False, **options: Any) -> tuple[list[RerankResult], int]:
        """Rank ``documents`` against ``query``: arguments and results as in
        :meth:`zeroembed.client.Client.rerank`, and the pairs' token count."""
        documents, checked = check_rerank(query, documents, top_n, return_documents, options)
        header = {"v": PROTOCOL_VERSION, "id": new_request_id(), "op": Op.RERANK.value, "query": query,
                  **checked.header()}
        reply = await self._call(Request(header, documents), 0)
        return rank(reply, documents, top_n, return_documents), int(reply.header.get("num_tokens", 0))

    async def status(self) -> dict[str, Any]:
        """The server's status, as ``Client.status()`` returns it."""
        reply = await self._call(Request({"v": PROTOCOL_VERSION, "id": new_request_id(), "op": Op.STATUS.value}), 0)
        return reply.header["status"]

    async def _call(self, request: Request, offset: int) -> Reply:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Outcome | None] = loop.create_future()

        def respond(outcome: Outcome) -> None:
            loop.call_soon_threadsafe(_settle, answer, outcome)

        # A timer on the future itself: asyncio.wait_for would wrap every call in more machinery. Set before
        # submitting: once woken, the server's loop waits for the GIL until this thread is back in its poll.
        backstop = loop.call_later(self.backstop_s, _expire, answer)
        self.bridge.submit(request, respond)
        try:
            outcome = await answer
        finally:
            backstop.cancel()
        if outcome is None:
            raise ServerTimeout(f"no answer from the server's loop within {self.backstop_s:g} s")
        if outcome.error is not None:
            error: ZeroEmbedError = error_for(outcome.error.value, outcome.message, outcome.index)
            if error.index is not None:
                error.index += offset
            raise error
        return Reply({"v": PROTOCOL_VERSION, "id": outcome.request_id, "ok": True, **outcome.fields},
                     outcome.arrays)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _settle(future: asyncio.Future, outcome: Outcome) -> None:
    if not future.done():  # cancelled meanwhile (its HTTP client went away)
        future.set_result(outcome)
