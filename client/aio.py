"""The asyncio client: ``await AsyncClient(...).encode(texts)``, many calls in flight on one socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

import zmq
import zmq.asyncio

from .calls import (
    RerankResult,
    check_rerank,
    rank,
    rerank_chunk,
    DEFAULT_MAX_TEXTS_PER_REQUEST,
    Chunk,
    EncodeResult,
    assemble,
    build_chunks,
    check_chunk_size,
    check_endpoints,
    check_options,
    check_texts,
    check_timeout,
    format_endpoints,
    log_stray,
    new_request_id,
    open_reply,
    read_status,
    reissue,
    take_reply,
    timeout_error,
)
from .keys import load_client_keys
from .replicas import Replicas, attempt_timeout
from .errors import ServerError, ZeroEmbedError
from .protocol import Reply, status_request


class AsyncClient:
    """An asyncio client of a zeroembed server; the coroutine twin of :class:`Client`.

    Any number of coroutines may call one ``AsyncClient`` at once. They share one
    DEALER socket: each call registers a future per request id, and a single
    receiver task reads every reply and resolves the future it belongs to, so no
    coroutine ever reads another's reply. A reply nobody waits for (its call
    timed out or was cancelled) is dropped. ``timeout`` bounds each whole call
    like ``asyncio.wait_for`` and raises :class:`ServerTimeout`; ``None`` waits
    forever (not the default). Use one instance from one event loop.

    With several endpoints there is one DEALER (and one receiver task) per
    endpoint, and requests are spread and re-sent on silence as in :class:`Client`.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] = "tcp://127.0.0.1:5555",
        timeout: float | None = 30.0,
        *,
        max_texts_per_request: int = DEFAULT_MAX_TEXTS_PER_REQUEST,
        server_key: str | os.PathLike | None = None,
        client_key: str | os.PathLike | None = None,
    ) -> None:
        self.endpoints = check_endpoints(endpoint)
        self.timeout = check_timeout(timeout)
        self.max_texts_per_request = check_chunk_size(max_texts_per_request)
        self._curve = load_client_keys(server_key, client_key)
        self._context = zmq.asyncio.Context()
        self._sockets: list[zmq.asyncio.Socket] = []
        self._receivers: list[asyncio.Task[None]] = []
        self._replicas = Replicas(len(self.endpoints))
        self._waiting: dict[str, asyncio.Future[list[Any]]] = {}
        self._closed = False

    async def encode(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        **options: Any,
    ) -> EncodeResult:
        """Embed ``texts``; arguments and result as in :meth:`Client.encode`."""
        options = check_options(options)
        texts = check_texts(texts, options.is_tokenized)
        chunks = build_chunks(texts, options, self.max_texts_per_request)
        return assemble(chunks, await self._call(chunks), options)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = False,
        truncate: bool = True,
        model: str | None = None,
        *,
        raw_scores: bool = False,
    ) -> list[RerankResult]:
        """Score each document against ``query``; arguments and result as in :meth:`Client.rerank`."""
        documents, options = check_rerank(query, documents, top_n, return_documents,
                                          {"truncate": truncate, "model": model, "raw_scores": raw_scores})
        chunk = rerank_chunk(query, documents, options)
        (reply,) = await self._call([chunk])
        return rank(reply, documents, top_n, return_documents)

    async def status(self) -> dict[str, Any]:
        """Facts about the server, as its ``status`` reply gives them."""
        request_id = new_request_id()
        (reply,) = await self._call([Chunk(0, 0, request_id, status_request(request_id))])
        return read_status(reply)

    async def close(self) -> None:
        """Stop the receiver, fail calls still waiting, close the socket and context. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for receiver in self._receivers:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        self._fail_waiting(RuntimeError("this AsyncClient was closed"))
        for sock in self._sockets:
            sock.close(linger=0)
        self._context.term()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"timeout={self.timeout}"
        return f"AsyncClient({format_endpoints(self.endpoints)!r}, {state})"

    # ------------------------------------------------------------------ internals

    async def _call(self, chunks: list[Chunk]) -> list[Reply]:
        socks = self._ensure_started()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in chunks]
        self._waiting.update((chunk.request_id, future) for chunk, future in zip(chunks, futures))
        attempts: list[str] = []  # ids of re-sent chunks, to forget with the rest
        if len(socks) == 1:
            exchange = self._exchange(socks[0], chunks, futures)
        else:
            exchange = self._exchange_replicas(socks, chunks, futures, attempts)
        try:
            return await asyncio.wait_for(exchange, self.timeout)
        except TimeoutError as exc:
            if isinstance(exc, ZeroEmbedError):  # the server's own `timeout` error, not ours
                raise
            raise timeout_error(self.endpoints, self.timeout) from None
        finally:
            # Whatever happened (error, timeout, cancellation), late replies must find no taker.
            for request_id in attempts:
                self._waiting.pop(request_id, None)
            for chunk, future in zip(chunks, futures):
                self._waiting.pop(chunk.request_id, None)
                if future.done() and not future.cancelled():
                    future.exception()  # mark as seen: no "exception never retrieved" noise

    @staticmethod
    async def _exchange(sock: zmq.asyncio.Socket, chunks: list[Chunk], futures: list[asyncio.Future]) -> list[Reply]:
        for chunk in chunks:  # pipelined; with IMMEDIATE=1 this waits for a connected server
            await sock.send_multipart(chunk.frames)
        replies = []
        for chunk, future in zip(chunks, futures):
            replies.append(take_reply(await future, chunk))
        return replies

    async def _exchange_replicas(self, socks: list[zmq.asyncio.Socket], chunks: list[Chunk],
                                 futures: list[asyncio.Future], attempts: list[str]) -> list[Reply]:
        """``_exchange`` over one socket per replica; the caller's ``wait_for`` bounds the whole call."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout

        async def one(chunk: Chunk, future: asyncio.Future) -> Reply:
            tried: set[int] = set()
            attempt = chunk
            while True:
                replica = await self._send_any(socks, attempt.frames, tried)
                tried.add(replica)
                remaining = None if deadline is None else deadline - time.monotonic()
                await asyncio.wait({future}, timeout=attempt_timeout(self.timeout, remaining))
                if future.done():  # answered, by this attempt or an earlier one
                    return take_reply(future.result(), chunk)
                self._replicas.back_off(replica)  # silence: send it again elsewhere
                attempt = reissue(chunk)
                attempts.append(attempt.request_id)
                self._waiting[attempt.request_id] = future

        tasks = [asyncio.ensure_future(one(chunk, future)) for chunk, future in zip(chunks, futures)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # the first error (or our own cancellation) stops the other chunks
                task.cancel()

    async def _send_any(self, socks: list[zmq.asyncio.Socket], frames: list[bytes], tried: set[int]) -> int:
        """Send to the best replica that has a connection (IMMEDIATE=1: others refuse); its index."""
        while True:
            for replica in self._replicas.order(tried):
                try:
                    await socks[replica].send_multipart(frames, flags=zmq.NOBLOCK)
                    return replica
                except zmq.Again:
                    continue
            await asyncio.sleep(0.02)  # no replica connected yet; the call's timeout bounds this

    def _ensure_started(self) -> list[zmq.asyncio.Socket]:
        if self._closed:
            raise RuntimeError("this AsyncClient is closed")
        if not self._sockets:
            for endpoint in self.endpoints:
                sock = self._context.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.IMMEDIATE, 1)
                if self._curve is not None:
                    self._curve.apply(sock)
                sock.connect(endpoint)
                self._sockets.append(sock)
        if not self._receivers or any(r.done() for r in self._receivers):  # started lazily: needs the running loop
            for receiver in self._receivers:
                receiver.cancel()
            loop = asyncio.get_running_loop()
            self._receivers = [loop.create_task(self._receive(sock, i)) for i, sock in enumerate(self._sockets)]
        return self._sockets

    async def _receive(self, sock: zmq.asyncio.Socket, replica: int) -> None:
        """The only reader of its socket: hands each reply to the future waiting for its id."""
        try:
            while True:
                request_id, outcome = open_reply(await sock.recv_multipart(copy=False))
                future = self._waiting.pop(request_id or "", None)
                if future is None or future.done():
                    log_stray(request_id)
                else:
                    if len(self._sockets) > 1:
                        self._replicas.answered(replica)
                    future.set_result(outcome)
        except zmq.ZMQError as exc:  # socket or context gone under us: fail fast, not at timeout
            self._fail_waiting(ServerError(f"the client's socket failed: {exc}"))

    def _fail_waiting(self, exc: Exception) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
        self._waiting.clear()
