"""The ZeroMQ front end, and the server's one loop: client sockets in, replies out.

In the shape of the zguide's load-balancing broker: a ROUTER faces clients and
every request goes to the request core of its model (core/lifecycle.py), which
answers through the ``respond`` callback given here. The same loop polls each
model's worker sockets and background tokenizer, so one thread drives
admission, batching and completion. Adapters in this process (other wire
protocols) reach it over a second ROUTER on a local ipc socket, outside CurveZMQ;
the HTTP gateway reaches it without a wire format, through ``bridge``.
"""

from __future__ import annotations

import logging
import os
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import zmq

from zeroembed.client.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Op,
    ProtocolError,
    Request,
    decode_request,
    encode_error,
)

from ..core.jobs import Outcome, Respond
from ..errors import StartupError
from ..metrics import NO_MODEL, Metrics
from ..models import ServedModel
from .bridge import CoreBridge
from .curve_auth import CurveServer

log = logging.getLogger(__name__)

_TICK_S = 0.1  # how often the loop looks at worker health, deadlines and shutdown, at the latest


class ZmqFrontEnd:
    """Serves ``models`` (the first is the default) to ZeroMQ clients until :meth:`request_stop`.

    ``internal_endpoint`` is an ipc socket for adapters in this process; ``status_extras`` are
    facts of the server's configuration that ``status`` reports as they are.
    """

    def __init__(self, models: dict[str, ServedModel], *, endpoint: str, internal_endpoint: str,
                 max_message_bytes: int, shutdown_grace_s: float, metrics: Metrics,
                 curve: CurveServer | None = None, status_extras: dict[str, Any] | None = None) -> None:
        if not models:
            raise ValueError("a server needs at least one model")
        self.models = models
        self.default = next(iter(models.values()))
        self.endpoint = endpoint
        self.internal_endpoint = internal_endpoint
        self.shutdown_grace_s = shutdown_grace_s
        self.metrics = metrics
        self.status_extras = status_extras or {}
        self._started = time.monotonic()
        self._stop_requested = False
        self.accepting = True
        self._context = zmq.Context()
        self.front = self._context.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.front.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.internal = self._context.socket(zmq.ROUTER)
        self.internal.setsockopt(zmq.LINGER, 0)
        self.internal.bind(internal_endpoint)
        self.bridge = CoreBridge()
        self._curve = curve
        if curve is not None:
            curve.secure(self._context, self.front)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every model's workers, wait until all have loaded, then open the client port."""
        try:
            for model in self.models.values():
                model.workers.start()
            try:
                self.front.bind(self.endpoint)
            except zmq.ZMQError as exc:
                raise StartupError(f"cannot listen on {self.endpoint}: {exc.strerror}") from None
        except BaseException:
            self.close()
            raise
        for name, model in self.models.items():
            self.metrics.workers.labels(name).set(model.workers.config.workers)
            # Read when scraped (counts over the loop's own containers, safe to read from the metrics thread),
            # so the loop does no gauge bookkeeping between model runs.
            self.metrics.queue_depth.labels(name).set_function(lambda m=model: len(m.core.batcher))
            self.metrics.in_flight.labels(name).set_function(lambda m=model: m.core.queued_texts)
            self.metrics.busy_workers.labels(name).set_function(lambda m=model: m.workers.pool.busy_count())

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._stop_requested = True

    def run(self) -> None:
        """Serve until :meth:`request_stop`, then drain in-flight work and stop the workers."""
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.internal, zmq.POLLIN)
        poller.register(self.bridge.fileno(), zmq.POLLIN)
        owners: dict[int, ServedModel] = {}
        for model in self.models.values():
            for fd in model.fds():
                poller.register(fd, zmq.POLLIN)
                owners[fd] = model
        drain_deadline = None
        last_check = time.monotonic()
        while True:
            now = time.monotonic()
            if self._stop_requested and drain_deadline is None:
                log.info("shutting down: draining %d requests", self._unanswered())
                self.accepting = False
                drain_deadline = now + self.shutdown_grace_s
            if drain_deadline is not None and (not self._unanswered() or now >= drain_deadline):
                break
            for item, _ in poller.poll(self._poll_timeout_ms(now)):
                if item == self.bridge.fileno():
                    self.bridge.drain(self._route)
                elif isinstance(item, int):
                    owners[item].on_readable(item)
                else:
                    self._drain(item)
            if time.monotonic() - last_check >= _TICK_S:
                last_check = time.monotonic()
                for model in self.models.values():
                    model.tick(replace=self.accepting)
            for model in self.models.values():
                model.workers.dispatch()
        for model in self.models.values():
            model.core.fail_all(ErrorCode.SHUTTING_DOWN, "the server shut down before this request finished")
        self.close()

    def close(self) -> None:
        """Stop workers and close sockets. Idempotent."""
        if self._context.closed:
            return
        self.bridge.close()  # first: in-process callers are answered at once, not after the workers stop
        for model in self.models.values():
            model.close()
        self.front.close()
        self.internal.close()
        if self._curve is not None:
            self._curve.stop()
        self._context.term()

    def _unanswered(self) -> int:
        return sum(len(m.core.jobs) for m in self.models.values())

    def _poll_timeout_ms(self, now: float) -> int:
        timeout = _TICK_S
        for model in self.models.values():
            wait = model.wait_s(now)
            if wait is not None:
                timeout = min(timeout, wait)
        return max(0, int(timeout * 1000))

    # ------------------------------------------------------------------ clients

    def _drain(self, sock: zmq.Socket, limit: int = 1000) -> None:
        """Handle the client messages waiting on ``sock``; at most ``limit``, so a flood there cannot
        starve the other sockets."""
        for _ in range(limit):
            # Asked, not tried: a receive that fails raises, and raising costs more than asking.
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            self._on_message(sock, sock.recv_multipart(zmq.NOBLOCK))

    def _on_message(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        envelope, body = frames[:1], frames[1:]
        if body and body[0] == b"":  # a REQ client's delimiter: keep it in the envelope
            envelope, body = frames[:2], frames[2:]
        received = time.monotonic()
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            self.metrics.errors.labels(NO_MODEL, "", exc.code.value).inc()  # no op or model can be trusted
            sock.send_multipart([*envelope, *encode_error(exc.request_id, exc.code, exc.message)])
            return

        def respond(outcome: Outcome) -> None:
            sock.send_multipart([*envelope, *outcome.frames()], copy=False)

        self._route(request, respond, received)

    def _route(self, request: Request, respond: Respond, received: float | None = None) -> None:
        """Answer a status request, refuse work while draining or for a model not loaded, or hand the
        request to its model's core (the default when it names none)."""
        op = request.op
        if op == Op.STATUS:
            respond(Outcome(request.id, fields={"status": self.status()}))
            self.metrics.requests.labels(NO_MODEL, op.value).inc()
            return
        name = request.model
        model = self.default if name is None else self.models.get(name)
        if model is None:
            self.metrics.errors.labels(NO_MODEL, op.value, ErrorCode.INVALID_REQUEST.value).inc()
            respond(Outcome(request.id, error=ErrorCode.INVALID_REQUEST,
                            message=f"no model named {name!r} here; the models loaded are {list(self.models)}"))
        elif not self.accepting:
            self.metrics.errors.labels(model.name, op.value, ErrorCode.SHUTTING_DOWN.value).inc()
            respond(Outcome(request.id, error=ErrorCode.SHUTTING_DOWN,
                            message="the server is shutting down; send it elsewhere"))
        else:
            model.core.submit(request, respond, received)
        # Counted once the request is on its way: the reply matters more than the count.
        self.metrics.requests.labels(model.name if model is not None else NO_MODEL, op.value).inc()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Server facts for ``Client.status()`` and ``zeroembed status``: the default model's at the top level
        (as when a server held one model), and every model's under ``models``, the default first."""
        models = [model.status() for model in self.models.values()]
        return {
            "version": _version(),
            "protocol": PROTOCOL_VERSION,
            **models[0],
            "models": models,
            **self.status_extras,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "accepting": self.accepting,
            "curve": self._curve is not None,
            "pid": os.getpid(),
        }


def _version() -> str:
    try:
        return version("zeroembed")
    except PackageNotFoundError:
        return "0+unknown"
