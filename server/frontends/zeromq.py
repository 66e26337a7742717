"""The broker: clients in, batches out to workers, replies back — one thread, one poll loop.

In the shape of the zguide's load-balancing broker: a ROUTER faces clients,
workers connect to the dispatcher (over plain Unix sockets: channel.py says
why), say READY and take batches. On top of that the broker validates and
tokenizes requests, queues their texts in the batcher, and reassembles each
request from the batches its texts ran in.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import zmq

from zeroembed.client.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Op,
    ProtocolError,
    Request,
    decode_request,
    encode_error,
    encode_reply,
)

from ..artifact import Artifact
from ..core.batcher import Batcher, Item
from ..core.cache import EmbeddingCache
from ..config import Settings
from .curve_auth import CurveServer
from ..workers.dispatch import Dispatcher, InFlight, StartupError
from ..metrics import Metrics
from ..core.jobs import PendingRequest, RequestRejected, check_limits, parse_options
from ..core.tokenization import BackgroundTokenizer, TextTokenizer, Tokenized

log = logging.getLogger(__name__)

_TICK_S = 0.1  # how often the loop looks at worker health and shutdown, at the latest
# A request with this much text is tokenized on a thread: at ~3 MB/s here, 1 MiB would hold the loop,
# and every other client with it, for about a third of a second.
_BACKGROUND_CHARS = 1 << 20

__all__ = ["Broker", "StartupError"]


class Broker:
    """Owns the client sockets, the batcher and the requests in flight; the dispatcher runs the workers."""

    def __init__(self, settings: Settings, artifact: Artifact, metrics: Metrics) -> None:
        self.settings = settings
        self.artifact = artifact
        self.metrics = metrics
        manifest = artifact.manifest
        if settings.max_batch_tokens < manifest.max_seq_length:
            raise StartupError(
                f"--max-batch-tokens {settings.max_batch_tokens} is below the model's max sequence length "
                f"{manifest.max_seq_length}: a long text could never run"
            )
        self.tokenizer = TextTokenizer(artifact.tokenizer_path, manifest.max_seq_length)
        self.background = BackgroundTokenizer(artifact.tokenizer_path, manifest.max_seq_length)
        self.batcher = Batcher(max_batch_tokens=settings.max_batch_tokens, max_batch_size=settings.max_batch_size,
                               wait_s=settings.batch_wait_ms / 1000,
                               max_added_padding=settings.max_added_padding)
        # Accepted, unanswered requests in arrival order (a dict as an ordered set): the oldest first.
        self.pending: dict[PendingRequest, None] = {}
        self._pending_texts = 0  # texts of ``pending``, kept as a count: checked on every request
        self.cache = EmbeddingCache(settings.cache_size, metrics) if settings.cache_size else None
        self._started = time.monotonic()
        self._stop_requested = False
        self._accepting = True
        self._context = zmq.Context()
        self._sockdir = tempfile.TemporaryDirectory(prefix="zeroembed-")
        self.dispatcher = Dispatcher(Path(self._sockdir.name), settings, artifact, metrics, self.batcher,
                                     deliver=self._deliver, fail=self._fail)
        self.front = self._context.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.front.setsockopt(zmq.MAXMSGSIZE, settings.max_message_bytes)
        # Adapters inside this process (other wire protocols, HTTP) reach the broker here: a local
        # socket outside CurveZMQ, speaking the same protocol into the same batcher.
        self.internal = self._context.socket(zmq.ROUTER)
        self.internal.setsockopt(zmq.LINGER, 0)
        self.internal_endpoint = f"ipc://{Path(self._sockdir.name) / 'internal'}"
        self.internal.bind(self.internal_endpoint)
        self._curve = None
        if settings.curve_secret is not None:
            self._curve = CurveServer(settings.curve_secret, settings.curve_clients)
            self._curve.secure(self._context, self.front)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the workers, wait until all have loaded the model, then open the client port."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.dispatcher.start()
        try:
            self.front.bind(self.settings.endpoint)
        except zmq.ZMQError as exc:
            raise StartupError(f"cannot listen on {self.settings.endpoint}: {exc.strerror}") from None
        if self.settings.metrics_port:
            try:
                self.metrics.serve(self.settings.bind, self.settings.metrics_port)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {self.settings.bind}:{self.settings.metrics_port}: "
                                   f"{exc.strerror}") from None
        self.metrics.workers.set(self.settings.workers)
        # Read when scraped (counts over the loop's own containers, safe to read from the metrics thread):
        # setting them on every turn cost the loop ~50 µs while a worker ran a batch on the same cores.
        self.metrics.queue_depth.set_function(lambda: len(self.batcher))
        self.metrics.in_flight.set_function(lambda: self._pending_texts)
        self.metrics.busy_workers.set_function(self.dispatcher.pool.busy_count)

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._stop_requested = True

    def run(self) -> None:
        """Serve until :meth:`request_stop`, then drain in-flight work and stop the workers."""
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.internal, zmq.POLLIN)
        poller.register(self.dispatcher.fileno(), zmq.POLLIN)
        poller.register(self.background.fileno(), zmq.POLLIN)
        drain_deadline = None
        last_check = time.monotonic()
        while True:
            now = time.monotonic()
            if self._stop_requested and drain_deadline is None:
                log.info("shutting down: draining %d requests", len(self.pending))
                self._accepting = False
                drain_deadline = now + self.settings.shutdown_grace_s
            if drain_deadline is not None and (not self.pending or now >= drain_deadline):
                break
            events = dict(poller.poll(self._poll_timeout_ms(now)))
            if self.dispatcher.fileno() in events:
                self.dispatcher.on_ready()
            for sock in (self.front, self.internal):
                if sock in events:
                    self._drain(sock)
            if self.background.fileno() in events:
                self._finish_tokenizing()
            if time.monotonic() - last_check >= _TICK_S:
                last_check = time.monotonic()
                self.dispatcher.check_workers(replace=self._accepting)
                self._expire_requests()
            self.dispatcher.dispatch()
        for request in list(self.pending):
            self._fail(request, ErrorCode.SHUTTING_DOWN, "the server shut down before this request finished")
        self.close()

    def close(self) -> None:
        """Stop workers, close sockets and the metrics endpoint. Idempotent."""
        if self._context.closed:
            return
        self.dispatcher.stop()
        self.background.close()
        self.metrics.close()
        self.front.close()
        self.internal.close()
        if self._curve is not None:
            self._curve.stop()
        self._context.term()
        self._sockdir.cleanup()

    # ------------------------------------------------------------------ clients

    def _drain(self, socket: zmq.Socket, limit: int = 1000) -> None:
        """Handle the client messages waiting on ``socket``; at most ``limit``, so a flood there cannot
        starve the other sockets."""
        for _ in range(limit):
            # Asked, not tried: a receive that fails raises, which costs ~30 µs more while caches are cold.
            if not socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            self._on_client_message(socket, socket.recv_multipart(zmq.NOBLOCK))

    def _on_client_message(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        envelope, body = frames[:1], frames[1:]
        if body and body[0] == b"":  # a REQ client's delimiter: keep it in the envelope
            envelope, body = frames[:2], frames[2:]
        received = time.monotonic()
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            self._error(sock, envelope, exc.request_id, exc.code, exc.message)
            return
        if request.op == Op.STATUS:
            sock.send_multipart([*envelope, *encode_reply(request.id, status=self.status())])
        else:
            try:
                self._accept(sock, envelope, request, received)
            except RequestRejected as exc:
                self._error(sock, envelope, request.id, exc.code, exc.message, exc.index)
        # Counted once the request is on its way: between model runs every step costs tens of µs.
        self.metrics.requests.labels(request.op.value).inc()

    def _accept(self, sock: zmq.Socket, envelope: list[bytes], request: Request, received: float) -> None:
        if not self._accepting:
            raise RequestRejected(ErrorCode.SHUTTING_DOWN, "the server is shutting down; send it elsewhere")
        options = parse_options(request)
        texts = request.texts
        characters = check_limits(texts, max_texts=self.settings.max_texts_per_request,
                                  max_chars=self.settings.max_chars_per_text)
        queued = self._pending_texts
        if queued + len(texts) > self.settings.max_queue:
            raise RequestRejected(ErrorCode.BUSY, f"the server is full ({queued} texts queued, limit "
                                                  f"{self.settings.max_queue}); retry later")
        pending = PendingRequest.create(sock, envelope, request, options, self.artifact.manifest, received)
        if not texts:
            self._reply(pending)
            return
        self.pending[pending] = None
        self._pending_texts += pending.count
        if characters >= _BACKGROUND_CHARS:
            self.background.submit((pending, texts, options), texts, pieces=options.show_tokens,
                                   pretokenized=options.is_tokenized)
            return
        started = time.perf_counter()
        try:
            tokenized = self.tokenizer.encode(texts, pieces=options.show_tokens, pretokenized=options.is_tokenized)
        except Exception as exc:  # input the checks let through and the tokenizer still refused
            self._tokenizing_failed(pending, exc)
            return
        self._enqueue(pending, texts, options, tokenized, time.perf_counter() - started)

    def _finish_tokenizing(self) -> None:
        """Queue the texts of requests whose tokenization finished on the background thread."""
        for (pending, texts, options), tokenized, seconds, error in self.background.completed():
            if pending.failed:  # timed out (or the server stopped) meanwhile
                continue
            if error is not None:
                self._tokenizing_failed(pending, error)
                continue
            self._enqueue(pending, texts, options, tokenized, seconds)

    def _tokenizing_failed(self, pending: PendingRequest, error: BaseException) -> None:
        log.error("tokenizing request %s failed: %r", pending.id, error)
        self._fail(pending, ErrorCode.INVALID_REQUEST, f"the texts could not be tokenized: {error}")

    def _enqueue(self, pending: PendingRequest, texts: list, options, tokenized: Tokenized, seconds: float) -> None:
        """Queue a tokenized request's texts (those the cache does not answer) for the batcher."""
        if not options.truncate and tokenized.truncated:
            self.metrics.tokenize_time.observe(seconds)
            index = tokenized.truncated[0]
            self._fail(pending, ErrorCode.TEXT_TOO_LONG,
                       f"texts[{index}] has {self.tokenizer.count_tokens(texts[index])} tokens, more than the "
                       f"model's {self.tokenizer.max_length}; shorten it or send truncate=True", index)
            return
        pending.pieces = tokenized.pieces
        pending.num_tokens = int(tokenized.offsets[-1])
        # The cache fills the texts it knows into the request; only the others are queued.
        to_run = range(len(texts)) if self.cache is None else self.cache.lookup(pending, texts, options.is_tokenized)
        if pending.done:  # every text was a cache hit
            self._reply(pending)
        else:
            offsets = tokenized.offsets
            now = time.monotonic()
            self.batcher.add(
                Item(owner=pending, index=i, length=int(offsets[i + 1] - offsets[i]), enqueued_at=now,
                     payload=tokenized.ids[offsets[i]:offsets[i + 1]])
                for i in to_run
            )
            if not self.dispatcher.in_flight:
                # Nothing runs: these texts go now, before the bookkeeping below and before the loop looks
                # for more messages. Between model runs every cache is cold, and each step costs ~50-100 µs.
                self.dispatcher.dispatch()
        self.metrics.tokenize_time.observe(seconds)
        self.metrics.texts.inc(len(texts))
        self.metrics.tokens.inc(pending.num_tokens)

    def _reply(self, request: PendingRequest) -> None:
        self._forget(request)
        request.socket.send_multipart(request.reply(), copy=False)
        self.metrics.request_latency.observe(time.monotonic() - request.received_at)

    def _forget(self, request: PendingRequest) -> None:
        if request in self.pending:
            del self.pending[request]
            self._pending_texts -= request.count

    def _error(self, sock: zmq.Socket, envelope: list[bytes], request_id: str | None, code: ErrorCode,
               message: str, index: int | None = None) -> None:
        self.metrics.errors.labels(code.value).inc()
        log.debug("request %s: %s: %s", request_id, code.value, message)
        sock.send_multipart([*envelope, *encode_error(request_id, code, message, index)])

    def _fail(self, request: PendingRequest, code: ErrorCode, message: str, index: int | None = None) -> None:
        """Answer a request with an error and forget the rest of its texts."""
        if request.failed:
            return
        request.failed = True
        self._forget(request)
        self.batcher.remove_owner(request)
        self._error(request.socket, request.envelope, request.id, code, message, index)

    # ------------------------------------------------------------------ results

    def _deliver(self, flight: InFlight, arrays: dict[str, np.ndarray]) -> None:
        token_offset = 0
        for row, item in enumerate(flight.batch.items):
            request: PendingRequest = item.owner
            if request.source == "token_embeddings":
                vector = arrays["token_embeddings"][token_offset:token_offset + item.length]
            else:
                vector = arrays[request.source][row]
            if "token_embeddings" in arrays:
                token_offset += item.length
            if request.failed:
                continue
            if self.cache is not None:
                self.cache.store(request, item.index, vector)
            request.fill(item.index, vector)
            if request.done:
                self._reply(request)

    def _expire_requests(self) -> None:
        """Answer requests unanswered past the request timeout; nobody will finish them in time."""
        now = time.monotonic()
        expired = []
        for request in self.pending:  # oldest first: stop at the first one still in time
            if now - request.received_at <= self.settings.request_timeout_s:
                break
            expired.append(request)
        for request in expired:
            self._fail(request, ErrorCode.TIMEOUT,
                       f"not finished within the server's {self.settings.request_timeout_s:g}s request timeout")

    def _poll_timeout_ms(self, now: float) -> int:
        timeout = _TICK_S
        deadline = self.batcher.deadline()
        if deadline is not None and self.dispatcher.has_room():
            timeout = min(timeout, max(0.0, deadline - now))
        return max(0, int(timeout * 1000))

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        """Server facts for ``Client.status()`` and ``zeroembed status``."""
        manifest = self.artifact.manifest
        return {
            "version": _version(),
            "protocol": PROTOCOL_VERSION,
            "model": {"name": self.artifact.name, "path": str(self.artifact.path), "manifest": self.artifact.raw_manifest},
            "dim": manifest.hidden_size,
            "max_seq_length": manifest.max_seq_length,
            "pooling": manifest.pooling,
            "normalize": manifest.normalize,
            "precision": manifest.precision,
            "device": self.settings.device,
            "workers": self.dispatcher.worker_status(),
            "worker_restarts": self.dispatcher.pool.restarts,
            "queue_depth": len(self.batcher),
            "in_flight_requests": len(self.pending),
            "tokenizing_requests": len(self.background),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "accepting": self._accepting,
            "curve": self._curve is not None,
            "batching": {"max_batch_tokens": self.settings.max_batch_tokens,
                         "max_batch_size": self.settings.max_batch_size,
                         "max_added_padding": self.settings.max_added_padding,
                         "batch_wait_ms": self.settings.batch_wait_ms,
                         "max_queue": self.settings.max_queue,
                         "parallel_batches": self.settings.parallel_batches},
            "pid": os.getpid(),
        }


def _version() -> str:
    try:
        return version("zeroembed")
    except PackageNotFoundError:
        return "0+unknown"
