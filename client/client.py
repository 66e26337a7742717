"""The blocking client: ``Client(...).encode(texts)`` returns vectors from a zeroembed server."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

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
from .protocol import Reply, status_request


class Client:
    """A blocking client of a zeroembed server.

    ``endpoint`` is one ZeroMQ endpoint or a list of them (replicas of one model).
    With several, requests are spread round-robin over the replicas, and a request
    left unanswered for ``max(1 s, timeout / 4)`` is sent again to another replica
    (the first answer wins); a replica that let a request expire is passed over for
    a few seconds. Only silence is retried: an error reply (``InvalidRequest``,
    ``ServerBusy``, ...) is raised as it is. ``timeout`` bounds a
    whole call in seconds (all chunks of a large input included) and raises
    :class:`ServerTimeout` when it passes; ``timeout=None`` waits forever, which
    is not the default because a server that is down would hang the caller.
    ``server_key`` (the server's public ``server.key``) and ``client_key`` (this
    client's ``client.key_secret``) turn on CurveZMQ encryption and authentication.

    Thread-safety: one ``Client`` may be shared by any number of threads, and
    their calls run concurrently. Each thread gets its own DEALER socket (ZeroMQ
    sockets must not be shared across threads) on the client's own context, so
    a thread only ever sees replies to its own requests (with several endpoints,
    one DEALER per endpoint, so the client chooses the replica). Sockets of threads that
    have ended are closed when a new thread first calls; ``close()`` closes the
    rest and must not race with calls still in flight.
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
        self._context = zmq.Context()  # our own: the global instance belongs to the application
        self._local = threading.local()
        self._sockets: dict[threading.Thread, list[zmq.Socket]] = {}
        self._replicas = Replicas(len(self.endpoints))
        self._lock = threading.Lock()
        self._closed = False

    def encode(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        **options: Any,
    ) -> EncodeResult:
        """Embed ``texts``. ``options`` are the fields of :class:`~zeroembed.client.protocol.EncodeOptions`,
        by keyword (``output``, ``normalize``, ``truncate``, ``show_tokens``, ``is_tokenized``, ``prompt_name``,
        ``prompt``, ``dimensions``, and ``model``: which of the server's models, by name; default its first).

        Returns a float32 array of shape (len(texts), dim) for ``output="sentence"``,
        or for ``output="tokens"`` a list with one (tokens, dim) array per text.
        With ``show_tokens=True`` returns ``(vectors, tokens)``, ``tokens`` holding
        each text's word pieces. ``normalize=None`` keeps the model's choice;
        ``truncate=False`` makes an over-long text fail with ``text_too_long``.
        ``is_tokenized=True`` takes each text as a list of words, split into word
        pieces but never re-split. Wrong input raises :class:`InvalidRequest` before anything is sent.
        """
        options = check_options(options)
        texts = check_texts(texts, options.is_tokenized)
        chunks = build_chunks(texts, options, self.max_texts_per_request)
        return assemble(chunks, self._call(chunks), options)

    def rerank(
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
        """Score each document against ``query`` with a reranker (cross-encoder) model.

        Returns :class:`~zeroembed.client.calls.RerankResult`\\ s best first (ties in document
        order), at most ``top_n``; each has the document's ``index`` in ``documents``, its ``score``
        (the model's activation applied, as ``CrossEncoder.predict`` gives it; ``raw_scores=True``: the
        logits) and, with ``return_documents``, its text. ``truncate=False`` makes an over-long pair fail
        with ``text_too_long``. ``model`` names one of the server's models (default: its first). The
        documents go in one request, which the server's ``--max-documents-per-rerank`` bounds.
        """
        documents, options = check_rerank(query, documents, top_n, return_documents,
                                          {"truncate": truncate, "model": model, "raw_scores": raw_scores})
        chunk = rerank_chunk(query, documents, options)
        (reply,) = self._call([chunk])
        return rank(reply, documents, top_n, return_documents)

    def status(self) -> dict[str, Any]:
        """Facts about the server (model, dim, limits, queue), as its ``status`` reply gives them."""
        request_id = new_request_id()
        (reply,) = self._call([Chunk(0, 0, request_id, status_request(request_id))])
        return read_status(reply)

    def close(self) -> None:
        """Close every socket (pending messages dropped) and the context. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets, self._sockets = list(self._sockets.values()), {}
        for socks in sockets:
            for sock in socks:
                sock.close(linger=0)
        self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"timeout={self.timeout}"
        return f"Client({format_endpoints(self.endpoints)!r}, {state})"

    # ------------------------------------------------------------------ internals

    def _call(self, chunks: list[Chunk]) -> list[Reply]:
        """Send every chunk, then collect their replies by id; raise the first error that comes back."""
        socks = self._socket()
        if len(socks) > 1:
            return self._call_replicas(socks, chunks)
        sock = socks[0]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        for chunk in chunks:  # pipelined: the server may work on all chunks at once
            self._send(sock, chunk.frames, deadline)
        waiting = {chunk.request_id: i for i, chunk in enumerate(chunks)}
        replies: list[Reply | None] = [None] * len(chunks)
        while waiting:
            if not sock.poll(self._remaining_ms(deadline), zmq.POLLIN):
                raise timeout_error(self.endpoints, self.timeout)
            # Zero-copy: arrays are views of the frames.
            request_id, outcome = open_reply(sock.recv_multipart(copy=False))
            i = waiting.pop(request_id, None)
            if i is None:  # a late reply to an earlier call that timed out on this thread
                log_stray(request_id)
                continue
            replies[i] = take_reply(outcome, chunks[i])
        return replies  # type: ignore[return-value]

    def _call_replicas(self, socks: list[zmq.Socket], chunks: list[Chunk]) -> list[Reply]:
        """``_call`` over one socket per replica: each chunk is re-sent elsewhere when its attempt expires.

        Every id a chunk was sent under stays valid until the chunk is answered, so a
        slow replica's late answer is as good as the retry's; ids of answered chunks
        (and of earlier calls) are dropped as stray.
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        owner: dict[str, tuple[int, int]] = {}  # request id of every attempt -> (chunk, replica)
        tried: list[set[int]] = [set() for _ in chunks]
        expires = [0.0] * len(chunks)  # when the latest attempt of each chunk is given up on
        current = [0] * len(chunks)  # the replica of that latest attempt
        replies: list[Reply | None] = [None] * len(chunks)

        def attempt(i: int, chunk: Chunk) -> None:
            replica = self._send_any(socks, chunk.frames, tried[i], deadline)
            owner[chunk.request_id] = (i, replica)
            tried[i].add(replica)
            current[i] = replica
            remaining = None if deadline is None else deadline - time.monotonic()
            expires[i] = time.monotonic() + attempt_timeout(self.timeout, remaining)

        for i, chunk in enumerate(chunks):
            attempt(i, chunk)
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        left = len(chunks)
        while left:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise timeout_error(self.endpoints, self.timeout)
            for i, chunk in enumerate(chunks):
                if replies[i] is None and expires[i] <= now:  # silence: try another replica
                    self._replicas.back_off(current[i])
                    attempt(i, reissue(chunk))
            wake = min(expires[i] for i in range(len(chunks)) if replies[i] is None)
            if deadline is not None:
                wake = min(wake, deadline)
            for sock, _ in poller.poll(self._remaining_ms(wake)):
                while True:
                    try:
                        frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    request_id, outcome = open_reply(frames)
                    i, replica = owner.pop(request_id or "", (None, None))
                    if i is None or replies[i] is not None:  # a late reply to an earlier call or attempt
                        log_stray(request_id)
                        continue
                    self._replicas.answered(replica)
                    replies[i] = take_reply(outcome, chunks[i])
                    left -= 1
        return replies  # type: ignore[return-value]

    def _send_any(self, socks: list[zmq.Socket], frames: list[bytes], tried: set[int],
                  deadline: float | None) -> int:
        """Send to the best replica that has a connection (IMMEDIATE=1: others refuse); its index."""
        while True:
            for replica in self._replicas.order(tried):
                try:
                    socks[replica].send_multipart(frames, flags=zmq.NOBLOCK)
                    return replica
                except zmq.Again:
                    continue
            poller = zmq.Poller()  # no replica connected: wait until one is, within the deadline
            for sock in socks:
                poller.register(sock, zmq.POLLOUT)
            if not poller.poll(self._remaining_ms(deadline)):
                raise timeout_error(self.endpoints, self.timeout)

    def _send(self, sock: zmq.Socket, frames: list[bytes], deadline: float | None) -> None:
        # IMMEDIATE=1 makes a send with no connected server fail (EAGAIN) instead of queueing,
        # so waiting for POLLOUT is waiting for a server, bounded by the call's deadline.
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                if not sock.poll(self._remaining_ms(deadline), zmq.POLLOUT):
                    raise timeout_error(self.endpoints, self.timeout) from None

    @staticmethod
    def _remaining_ms(deadline: float | None) -> int | None:
        if deadline is None:
            return None
        return max(0, math.ceil((deadline - time.monotonic()) * 1000))

    def _socket(self) -> list[zmq.Socket]:
        """This thread's sockets: one DEALER, or one per endpoint when there are several."""
        socks = getattr(self._local, "sockets", None)
        if socks is not None and not self._closed:
            return socks
        with self._lock:
            if self._closed:
                raise RuntimeError("this Client is closed")
            self._reap_dead_threads()
            socks = [self._new_socket(endpoint) for endpoint in self.endpoints]
            self._sockets[threading.current_thread()] = socks
        self._local.sockets = socks
        return socks

    def _new_socket(self, endpoint: str) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        if self._curve is not None:
            self._curve.apply(sock)
        sock.connect(endpoint)
        return sock

    def _reap_dead_threads(self) -> None:
        # A dead thread can no longer touch its socket, so closing it here is safe and
        # keeps thread-per-task applications from piling up sockets.
        for thread in [t for t in self._sockets if not t.is_alive()]:
            for sock in self._sockets.pop(thread):
                sock.close(linger=0)
