"""bert-as-service's two sockets beside zeroembed's own, so unmodified ``bert-serving-client`` apps work.

One thread, one poll loop, three sockets::

    BertClient PUSH ──► PULL  :bert_port ─┐
                                          ├─ translate ─► DEALER ─► broker.internal_endpoint (protocol v1,
    BertClient SUB  ◄── XPUB  :bert_port_out ◄┘                      same batcher, limits and metrics)

No model, no queue of its own: every encode request becomes one v1 request to
the broker (``show_tokens`` on, ``is_tokenized`` when the texts are word lists),
every SHOW_CONFIG / SHOW_STATUS a v1 ``status`` request. The wire format is in
server/bert_protocol.py.

Slow joiners. A PUB socket drops a message for a topic nobody has subscribed to
yet, and a client's subscription reaches the server some time after it
connects: a reply published in between is lost and the client waits forever.
The XPUB socket hands every subscription (``0x01`` + topic; every one, with
XPUB_VERBOSE) and every last unsubscription (``0x00`` + topic) to this loop,
after libzmq has added it to its own routing table. A reply goes out at once
only when its client id is a known subscription; otherwise it is held, and sent
the moment that subscription arrives. Held replies are bounded: they expire
after ``hold_s`` (and beyond ``max_held`` replies or ``max_held_bytes``, oldest
first) — then they are published anyway, best effort, and counted.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import zmq

from zeroembed.client.protocol import EncodeOptions, ProtocolError, decode_reply, encode_request, status_request

from .bert_wire import (
    SHOW_STATUS,
    BertRequest,
    BertRequestError,
    config_reply,
    error_reply,
    parse_request,
    server_config,
    vectors_reply,
)
from ..errors import StartupError
from ..config import host_port
from ..metrics import ModelMetrics

log = logging.getLogger(__name__)

_TICK_S = 0.1  # the loop looks at expiries and stop at least this often
_DRAIN = 1000  # messages taken off one socket per turn, so no socket starves the others
_PUB_LINGER_MS = 1000  # on stop, time for the last replies to leave
_SUBSCRIBE, _UNSUBSCRIBE = 1, 0


@dataclass(slots=True)
class _Pending:
    """A bert request forwarded to the broker, waiting for its answer."""

    client: bytes
    req_id: bytes
    kind: str  # "encode" | "config" | "status"
    received: float


@dataclass(slots=True, eq=False)
class _Held:
    """A reply waiting for its client's subscription."""

    topic: bytes
    frames: list[Any]
    expires: float
    nbytes: int
    done: bool = False


@dataclass
class _Statistic:
    """bert-as-service's SHOW_STATUS ``statistic``, for this adapter's traffic."""

    num_data_request: int = 0
    num_total_seq: int = 0
    num_sys_request: int = 0
    num_error_request: int = 0
    num_expired_reply: int = 0


class BertAdapter:
    """The bert-as-service front end: ``start()`` binds (or raises StartupError), ``stop()`` drains and closes."""

    def __init__(self, internal_endpoint: str, metrics: ModelMetrics, *, bind: str, port: int, port_out: int,
                 max_message_bytes: int, request_timeout_s: float, beside_curve: bool = False,
                 hold_s: float = 30.0, max_held: int = 10_000, max_held_bytes: int = 256 * 2**20,
                 pending_timeout_s: float | None = None) -> None:
        self.port, self.port_out = port, port_out
        self.max_message_bytes = max_message_bytes
        self.beside_curve = beside_curve  # the ZeroMQ port is CurveZMQ-only: warn that these ports are not
        self.internal_endpoint = internal_endpoint
        self.metrics = metrics
        self.hold_s = hold_s
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.endpoint_in = f"tcp://{host_port(bind, port)}"
        self.endpoint_out = f"tcp://{host_port(bind, port_out)}"
        # the server answers every request (with a timeout error at worst); this is a backstop
        self._pending_timeout_s = request_timeout_s + 30.0 if pending_timeout_s is None else pending_timeout_s
        self._ids = itertools.count()
        self._pending: dict[str, _Pending] = {}
        self._subscribers: set[bytes] = set()
        self._held: dict[bytes, list[_Held]] = {}
        self._held_fifo: deque[_Held] = deque()
        self._held_count = 0
        self._held_bytes = 0
        # Read when scraped: a count set after the held replies went out could be seen stale by their receiver.
        metrics.bert_held_replies.set_function(lambda: self._held_count)
        self._stats = _Statistic()
        self._started = datetime.now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._context: zmq.Context | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind both bert ports and connect to the broker, then run the loop in a thread of its own."""
        self._context = zmq.Context()
        self.pull = self._context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self.xpub = self._context.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, _PUB_LINGER_MS)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, repeated ones included
        self.dealer = self._context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        try:
            for socket, endpoint in ((self.pull, self.endpoint_in), (self.xpub, self.endpoint_out)):
                try:
                    socket.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise StartupError(f"cannot listen for bert-as-service clients on {endpoint}: "
                                       f"{exc.strerror}") from None
            self.dealer.connect(self.internal_endpoint)
        except BaseException:
            self._close_sockets()
            raise
        if self.beside_curve:
            log.warning("bert-as-service ports %s and %s are plain TCP without CurveZMQ (--allow-insecure-bert): "
                        "anyone who reaches them can embed texts and subscribe to every reply",
                        self.endpoint_in, self.endpoint_out)
        self._thread = threading.Thread(target=self._run, name="bert-adapter", daemon=True)
        self._thread.start()
        log.info("bert-as-service %s protocol on %s (push) and %s (publish)", "1.10.0", self.endpoint_in,
                 self.endpoint_out)

    def stop(self, timeout: float = 5.0) -> None:
        """Answer what is left with ``shutting_down``, let the last replies leave, close. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the bert-as-service adapter did not stop within %.1fs", timeout)
            self._thread = None

    def _run(self) -> None:
        poller = zmq.Poller()
        for socket in (self.xpub, self.dealer, self.pull):
            poller.register(socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(self._poll_timeout_ms()))
                # Subscriptions first: a reply whose subscriber arrived in the same turn goes straight out.
                if self.xpub in events:
                    self._drain(self.xpub, self._on_subscription)
                if self.dealer in events:
                    self._drain(self.dealer, self._on_broker_reply)
                if self.pull in events:
                    self._drain(self.pull, self._on_request)
                self._expire(time.monotonic())
            self._shutdown()
        except Exception:
            log.exception("the bert-as-service adapter failed; its clients get no more replies")
        finally:
            self._close_sockets()

    def _shutdown(self) -> None:
        # The broker has drained and closed by now: what it answered is in the DEALER; the rest never will be.
        self._drain(self.xpub, self._on_subscription)
        self._drain(self.dealer, self._on_broker_reply)
        for internal_id in list(self._pending):
            pending = self._pending.pop(internal_id)
            self._error(pending.client, pending.req_id, "shutting_down", "the server shut down before this "
                                                                         "request finished")
        self._drain(self.pull, self._on_request_stopping)
        while self._held_fifo:  # last chance for clients still joining: best effort, within the linger
            self._release_oldest()

    def _close_sockets(self) -> None:
        if self._context is None:
            return
        for name in ("pull", "dealer", "xpub"):
            socket = getattr(self, name, None)
            if socket is not None:
                socket.close()
        self._context.term()
        self._context = None

    # ------------------------------------------------------------------ messages

    def _drain(self, socket: zmq.Socket, handler) -> None:
        for _ in range(_DRAIN):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                handler(frames)
            except Exception:  # a bug on one message must not stop the others
                log.exception("bert-as-service adapter: failed to handle a message")

    def _on_request(self, frames: list[bytes]) -> None:
        try:
            request = parse_request(frames)
        except BertRequestError as exc:
            self._refuse(exc, frames)
            return
        if request.command is not None:
            kind = "status" if request.command == SHOW_STATUS else "config"
            self.metrics.bert_requests.labels(kind).inc()
            self._stats.num_sys_request += 1
            self._forward(request, kind, status_request)
            return
        self.metrics.bert_requests.labels("encode").inc()
        self._stats.num_data_request += 1
        self._stats.num_total_seq += request.count
        # The texts frame goes on as the client sent it: the broker validates, limits, tokenizes and batches.
        options = EncodeOptions(show_tokens=True, is_tokenized=request.is_tokenized)
        self._forward(request, "encode", lambda iid: [encode_request(iid, [], options)[0], request.payload])

    def _on_request_stopping(self, frames: list[bytes]) -> None:
        try:
            request = parse_request(frames)
        except BertRequestError as exc:
            self._refuse(exc, frames)
            return
        self._error(request.client, request.req_id, "shutting_down", "the server is shutting down; send it elsewhere")

    def _forward(self, request: BertRequest, kind: str, frames_for) -> None:
        internal_id = f"bert-{next(self._ids):x}"
        try:
            self.dealer.send_multipart(frames_for(internal_id), zmq.NOBLOCK)
        except zmq.Again:
            self._error(request.client, request.req_id, "busy", "the server's queue to the model is full; "
                                                                "retry later")
            return
        self._pending[internal_id] = _Pending(request.client, request.req_id, kind, time.monotonic())

    def _on_broker_reply(self, frames: list[bytes]) -> None:
        try:
            reply = decode_reply(frames)
        except ProtocolError as exc:
            log.error("bert-as-service adapter: unreadable reply from the broker: %s", exc.message)
            return
        pending = self._pending.pop(reply.id, None) if isinstance(reply.id, str) else None
        if pending is None:
            log.warning("bert-as-service adapter: reply for unknown request %r", reply.id)
            return
        if not reply.ok:
            error = reply.error or {}
            self._error(pending.client, pending.req_id, str(error.get("code", "internal")),
                        str(error.get("message", "")))
            return
        if pending.kind == "encode":
            meta = reply.header["arrays"][0]
            self._publish(vectors_reply(pending.client, pending.req_id, meta["dtype"], meta["shape"], frames[1],
                                        reply.header.get("tokens", "")))
        else:
            statistic = None
            if pending.kind == "status":
                statistic = {**vars(self._stats),
                             "num_active_client": len(self._subscribers),
                             "num_held_reply": self._held_count, "num_pending_request": len(self._pending)}
            config = server_config(pending.client, reply.header.get("status", {}), port=self.port,
                                   port_out=self.port_out, started=self._started, statistic=statistic)
            self._publish(config_reply(pending.client, pending.req_id, config))

    def _refuse(self, exc: BertRequestError, frames: list[bytes]) -> None:
        if exc.answerable:
            self._error(exc.client, exc.req_id, exc.code, exc.message)
            return
        self.metrics.bert_errors.labels(exc.code).inc()
        self._stats.num_error_request += 1
        log.warning("bert-as-service adapter: dropped a request nobody can be told about: %s (frames: %s)",
                    exc.message, [bytes(f[:40]) for f in frames[:5]])

    def _error(self, client: bytes, req_id: bytes, code: str, message: str) -> None:
        self.metrics.bert_errors.labels(code).inc()
        self._stats.num_error_request += 1
        log.info("bert-as-service request %s of client %s: %s: %s", req_id.decode("ascii", "replace"),
                 client[:64].decode("ascii", "replace"), code, message)
        self._publish(error_reply(client, req_id, code, message))

    # ------------------------------------------------------------------ slow joiners

    def _on_subscription(self, frames: list[bytes]) -> None:
        message = frames[0]
        if not message or message[0] not in (_SUBSCRIBE, _UNSUBSCRIBE):
            return  # XPUB passes messages of other kinds (none expected from SUB sockets)
        topic = message[1:]
        if message[0] == _UNSUBSCRIBE:
            self._subscribers.discard(topic)  # the last subscriber of this topic left
            return
        self._subscribers.add(topic)
        for held in self._held.pop(topic, ()):
            self._send_held(held)

    def _publish(self, frames: list[Any]) -> None:
        topic = frames[0]
        if topic in self._subscribers:
            self.xpub.send_multipart(frames, copy=False)
            return
        # Not subscribed yet (or gone): hold the reply until the subscription arrives, within bounds.
        held = _Held(topic, frames, time.monotonic() + self.hold_s, sum(memoryview(f).nbytes for f in frames))
        self._held.setdefault(topic, []).append(held)
        self._held_fifo.append(held)
        self._held_count += 1
        self._held_bytes += held.nbytes
        log.debug("holding a reply for %r until it subscribes", topic)
        while self._held_count > self.max_held or self._held_bytes > self.max_held_bytes:
            self._release_oldest()

    def _send_held(self, held: _Held) -> None:
        if held.done:
            return
        held.done = True
        self._held_count -= 1
        self._held_bytes -= held.nbytes
        self.xpub.send_multipart(held.frames, copy=False)

    def _release_oldest(self) -> None:
        """Publish the oldest held reply whatever its subscription state: it waited as long as it may."""
        held = self._held_fifo.popleft()
        if held.done:
            return
        waiting = self._held.get(held.topic)
        if waiting is not None:
            waiting.remove(held)
            if not waiting:
                del self._held[held.topic]
        self._send_held(held)
        self.metrics.bert_expired_replies.inc()
        self._stats.num_expired_reply += 1
        log.warning("a reply for client %r waited %.0fs for its subscription; published unheard",
                    held.topic[:64], self.hold_s)

    def _expire(self, now: float) -> None:
        while self._held_fifo and (self._held_fifo[0].done or self._held_fifo[0].expires <= now):
            self._release_oldest()
        if self._pending:
            oldest_id = next(iter(self._pending))  # dicts keep insertion order: the oldest first
            if now - self._pending[oldest_id].received > self._pending_timeout_s:
                pending = self._pending.pop(oldest_id)
                self._error(pending.client, pending.req_id, "timeout", "the server did not answer in time")

    def _poll_timeout_ms(self) -> int:
        timeout = _TICK_S
        if self._held_fifo:
            timeout = min(timeout, max(0.0, self._held_fifo[0].expires - time.monotonic()))
        return int(timeout * 1000)
