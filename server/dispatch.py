"""The worker side of the broker: which worker runs which batch, and what happens when one fails.

Owns the ROUTER the workers connect to and the pool of worker processes. It
pulls batches from the batcher for idle workers, hands finished batches back
to the broker, retries the texts of a batch lost with its worker once, and
replaces workers that die or get stuck. It knows nothing of clients.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from zeroembed.client.protocol import ErrorCode

from .artifact import Artifact
from .batcher import Batch, Batcher
from .config import Settings
from .metrics import Metrics
from .pool import WorkerHandle, WorkerPool
from .worker import BATCH, FAILED, FATAL, READY, RESULT, STOP, dumps

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2  # a text lost with its worker is retried once


class StartupError(Exception):
    """The server could not start; ``str()`` says why."""


@dataclass(eq=False)
class InFlight:
    """A batch sent to a worker."""

    id: int
    batch: Batch
    outputs: list[str]
    worker: WorkerHandle
    sent_at: float = field(default_factory=time.monotonic)


Deliver = Callable[[InFlight, dict[str, np.ndarray]], None]
Fail = Callable[[object, ErrorCode, str], None]  # (request, code, message)


class Dispatcher:
    """Runs batches on the worker pool; results go to ``deliver``, lost requests to ``fail``."""

    def __init__(self, context: zmq.Context, sockdir: Path, settings: Settings, artifact: Artifact,
                 metrics: Metrics, batcher: Batcher, *, deliver: Deliver, fail: Fail) -> None:
        self.settings = settings
        self.metrics = metrics
        self.batcher = batcher
        self._deliver = deliver
        self._fail = fail
        self.backend = context.socket(zmq.ROUTER)
        self.backend.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{sockdir / 'workers'}"
        self.backend.bind(endpoint)
        self.pool = WorkerPool(size=settings.workers, endpoint=endpoint, model_path=artifact.model_path,
                               inputs=tuple(artifact.manifest.inputs), device=settings.device,
                               threads=settings.threads_per_worker, parallel=settings.parallel_batches,
                               log_level=settings.log_level)
        # Batches a worker holds: one waiting in its socket for each it can run at once, so it starts the
        # next the moment one finishes instead of waiting a round trip through the broker, and it sees
        # the backlog that makes running batches side by side pay (worker.py).
        self.depth = 2 * settings.parallel_batches
        self.in_flight: dict[int, InFlight] = {}
        self._batch_ids = itertools.count()

    def start(self) -> None:
        """Start every worker and wait until all have loaded the model."""
        self.pool.start()
        deadline = time.monotonic() + self.settings.worker_start_timeout_s
        while not all(w.ready for w in self.pool.workers.values()):
            if time.monotonic() > deadline:
                raise StartupError(f"workers did not load the model within {self.settings.worker_start_timeout_s}s")
            if self.backend.poll(100):
                self.on_message(self.backend.recv_multipart())
            dead = self.pool.reap()
            if dead:
                raise StartupError(f"worker {dead[0].index} exited while loading the model "
                                   f"(exit code {dead[0].process.exitcode})")

    def stop(self) -> None:
        """Tell every worker to stop, wait for them (killing stragglers), close the socket."""
        for worker in self.pool.workers.values():
            if worker.identity is not None:
                self.backend.send_multipart([worker.identity, STOP])
        self.pool.stop()
        self.backend.close()

    def has_room(self) -> bool:
        """Whether some worker can take a batch now."""
        return bool(self.pool.with_room(self.depth))

    def dispatch(self) -> None:
        """Send the batches the batcher says should run now to the workers with room, idle ones first."""
        now = time.monotonic()
        for worker in self.pool.with_room(self.depth):
            batch = self.batcher.next_batch(now, pipeline_idle=not self.in_flight)
            if batch is None:
                break
            self._send(worker, batch)

    def _send(self, worker: WorkerHandle, batch: Batch) -> None:
        outputs = sorted({item.owner.source for item in batch.items})
        flight = InFlight(next(self._batch_ids), batch, outputs, worker)
        if not worker.batches:
            worker.progress_at = time.monotonic()
        for item in batch.items:
            item.attempts += 1
        ids = np.concatenate([item.payload for item in batch.items])
        lengths = np.fromiter((item.length for item in batch.items), dtype=np.int32, count=len(batch.items))
        worker.batches.append(flight)
        self.in_flight[flight.id] = flight
        self.backend.send_multipart([worker.identity, BATCH, dumps({"batch": flight.id, "outputs": outputs}),
                                     ids, lengths], copy=False)
        oldest = min(item.enqueued_at for item in batch.items)
        self.metrics.queue_wait.observe(time.monotonic() - oldest)
        self.metrics.batch_size.observe(len(batch.items))
        self.metrics.batch_tokens.observe(batch.padded_tokens)
        self.metrics.padding_tokens.inc(batch.padded_tokens - batch.tokens)

    def on_message(self, frames: list[bytes]) -> None:
        """Handle one message from a worker: READY, FATAL, RESULT or FAILED."""
        identity, kind, body = frames[0], frames[1], frames[2:]
        if kind == READY:
            info = json.loads(body[0])
            worker = next((w for w in self.pool.workers.values() if w.pid == info["pid"]), None)
            if worker is None:
                log.warning("READY from unknown worker pid %s", info.get("pid"))
                return
            worker.identity, worker.provider = identity, info["provider"]
            log.info("worker %d ready: pid %d, provider %s", worker.index, worker.pid, worker.provider)
            if self.settings.device == "cuda" and worker.provider != "CUDAExecutionProvider":
                log.warning("worker %d asked for CUDA but got %s", worker.index, worker.provider)
            return
        if kind == FATAL:
            message = json.loads(body[0])["message"]
            if not all(w.ready for w in self.pool.workers.values()):
                raise StartupError(f"a worker could not load the model: {message}")
            log.error("a replacement worker could not load the model: %s", message)
            return
        worker = self.pool.by_identity(identity)
        header = json.loads(body[0])
        flight = self.in_flight.pop(header.get("batch"), None)
        if worker is not None:
            worker.batches = [f for f in worker.batches if f is not flight]
            worker.progress_at = time.monotonic()
        if flight is None:
            return  # a batch already given up on (its worker was declared dead)
        if kind == FAILED:
            log.error("batch %d failed in worker %d: %s", flight.id, flight.worker.index, header["message"])
            for request in {item.owner for item in flight.batch.items}:
                self._fail(request, ErrorCode.WORKER_FAILED, f"the model failed on this request: {header['message']}")
        elif kind == RESULT:
            self.metrics.inference_time.observe(header["run_s"])
            self.metrics.batch_runs.labels("alone" if header["alone"] else "side_by_side").inc()
            arrays = {name: np.frombuffer(buf, dtype=np.float32).reshape(shape)
                      for name, buf, shape in zip(flight.outputs, body[1:], header["arrays"])}
            self._deliver(flight, arrays)

    def check_workers(self, *, replace: bool) -> None:
        """Kill workers stuck past the batch deadline; reap dead ones, retry their texts once,
        and start replacements when ``replace`` (not while shutting down)."""
        now = time.monotonic()
        for worker in self.pool.workers.values():
            if worker.batches and self._stuck(worker, now) and worker.process.is_alive():
                worker.process.kill()  # reaped, and its batches retried, on a later tick
        for worker in self.pool.reap():
            if replace:
                self.metrics.worker_restarts.inc()
                self.pool.replace(worker)
            # Newest first: requeueing puts texts at the head of the queue, so the oldest ends up first.
            for position, flight in reversed(list(enumerate(worker.batches))):
                self.in_flight.pop(flight.id, None)
                if position >= self.settings.parallel_batches:  # could not have started: no attempt spent
                    for item in flight.batch.items:
                        item.attempts -= 1
                self._retry(worker, flight)
            worker.batches = []

    def _stuck(self, worker: WorkerHandle, now: float) -> bool:
        """Whether a worker holding batches has stopped making progress.

        Batches may run side by side, so which ones are running is not known
        here: the worker is stuck when none finished for a batch's time, or
        when its oldest batch is older than every batch ahead of it could take
        (one lane frozen while another keeps finishing).
        """
        limit = self.settings.batch_timeout_s
        silent, oldest = now - worker.progress_at, now - worker.batches[0].sent_at
        if silent <= limit and oldest <= limit * self.depth:
            return False
        log.error("worker %d stuck: no batch finished for %.1fs, oldest of its %d batches sent %.1fs ago; "
                  "replacing it", worker.index, silent, len(worker.batches), oldest)
        return True

    def _retry(self, worker: WorkerHandle, flight: InFlight) -> None:
        """Requeue the texts of a batch lost with its worker, or fail their requests after the last attempt."""
        retry = [item for item in flight.batch.items if item.attempts < _MAX_ATTEMPTS and not item.owner.failed]
        if retry:
            log.warning("retrying %d texts of the dead worker %d's batch %d", len(retry), worker.index, flight.id)
            self.batcher.requeue(retry)
        for request in {item.owner for item in flight.batch.items if item.attempts >= _MAX_ATTEMPTS}:
            self._fail(request, ErrorCode.WORKER_FAILED, "the worker running this request died, twice")

    def worker_status(self) -> list[dict]:
        """One entry per configured worker, for the server's status."""
        return [{"index": w.index, "pid": w.pid, "provider": w.provider, "ready": w.ready, "busy": bool(w.batches),
                 "batches": len(w.batches)} for w in self.pool.workers.values()]
