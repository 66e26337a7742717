"""The worker side of one model: which worker runs which batch, and what happens when one fails.

Owns the Unix socket the workers connect to (channel.py) and the pool of
worker processes. It pulls batches from the core's batcher for workers with
room, hands finished batches back through the core's ``Completion`` interface,
retries the texts of a batch lost with its worker once, and replaces workers
that die or get stuck. It knows nothing of clients or requests: a queued text
tells it only which model output it needs and whether it is still wanted.
"""

from __future__ import annotations

import itertools
import logging
import selectors
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zeroembed.client.protocol import ErrorCode

from ..config import WorkerConfig
from ..core.batcher import Batch, Batcher
from ..core.lifecycle import Completion
from ..errors import StartupError
from ..metrics import Metrics
from .channel import Channel, ChannelError, listen
from .messages import BATCH, FAILED, FATAL, READY, RESULT, STOP, dumps, loads
from .padding import PROMPT_LENGTH
from .pool import WorkerHandle, WorkerPool

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2  # a text lost with its worker is retried once


@dataclass(eq=False)
class InFlight:
    """A batch sent to a worker."""

    id: int
    batch: Batch
    outputs: list[str]
    worker: WorkerHandle
    sent_at: float = field(default_factory=time.monotonic)


class Dispatcher:
    """Runs ``batcher``'s batches on a pool of worker processes; results and failures go to ``sink``."""

    def __init__(self, sockdir: Path, config: WorkerConfig, model_path: Path, inputs: tuple[str, ...],
                 metrics: Metrics, batcher: Batcher, sink: Completion) -> None:
        self.config = config
        self.metrics = metrics
        self.batcher = batcher
        self.sink = sink
        endpoint = str(sockdir / "workers")
        self._listener = listen(endpoint)
        # Every worker socket in one selector: the broker polls its fd, which is readable when any is.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self.pool = WorkerPool(size=config.workers, endpoint=endpoint, model_path=model_path, inputs=inputs,
                               device=config.device, threads=config.threads_per_worker,
                               parallel=config.parallel_batches, log_level=config.log_level)
        # Batches a worker holds: one waiting in its socket for each it can run at once, so it starts the
        # next the moment one finishes instead of waiting a round trip through the broker, and it sees
        # the backlog that makes running batches side by side pay (worker.py).
        self.depth = 2 * config.parallel_batches
        self._send_prompt_lengths = PROMPT_LENGTH in inputs
        self.in_flight: dict[int, InFlight] = {}
        self._batch_ids = itertools.count()

    def fileno(self) -> int:
        """A file descriptor that is readable when a worker's socket needs :meth:`on_ready`."""
        return self._selector.fileno()

    def start(self) -> None:
        """Start every worker and wait until all have loaded the model."""
        self.pool.start()
        deadline = time.monotonic() + self.config.worker_start_timeout_s
        while not all(w.ready for w in self.pool.workers.values()):
            if time.monotonic() > deadline:
                raise StartupError(f"workers did not load the model within {self.config.worker_start_timeout_s}s")
            self.on_ready(timeout=0.1)
            dead = self.pool.reap()
            if dead:
                raise StartupError(f"worker {dead[0].index} exited while loading the model "
                                   f"(exit code {dead[0].process.exitcode})")

    def stop(self) -> None:
        """Tell every worker to stop, wait for them (killing stragglers), close the sockets."""
        for worker in self.pool.workers.values():
            if worker.channel is not None:
                try:
                    worker.channel.send_all([STOP], timeout=1.0)
                except (OSError, TimeoutError):
                    pass  # gone or stuck: the pool terminates it
        self.pool.stop()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def on_ready(self, timeout: float = 0) -> None:
        """Accept workers, take their messages, and write what waits for their sockets."""
        for key, events in self._selector.select(timeout):
            if key.fileobj is self._listener:
                self._accept()
                continue
            channel: Channel = key.fileobj
            if events & selectors.EVENT_WRITE:
                self._flush(channel)
            if events & selectors.EVENT_READ:
                try:
                    messages = channel.receive()
                except ChannelError as exc:
                    log.error("closing a worker's socket: %s", exc)  # the worker is reaped as dead or stuck
                    messages, channel.closed = [], True
                for frames in messages:
                    self.on_message(channel, frames)
                if channel.closed:
                    self._drop(channel)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            self._selector.register(Channel(sock), selectors.EVENT_READ)

    def _flush(self, channel: Channel) -> None:
        try:
            done = channel.flush()
        except OSError:  # the worker is gone; reaping retries its batches
            done = True
        if done:
            self._selector.modify(channel, selectors.EVENT_READ)

    def _drop(self, channel: Channel) -> None:
        """Forget a worker's socket once it closed (its process exited or is exiting)."""
        self._selector.unregister(channel)
        channel.close()
        worker = self.pool.by_channel(channel)
        if worker is not None:
            worker.channel = None

    def is_idle(self) -> bool:
        """Whether no batch is running."""
        return not self.in_flight

    def has_room(self) -> bool:
        """Whether some worker can take a batch now."""
        return bool(self.pool.with_room(self.depth))

    def dispatch(self) -> None:
        """Send the batches the batcher says should run now to the workers with room, idle ones first."""
        if not self.batcher:  # the loop asks after every wake-up; most often nothing waits
            return
        now = time.monotonic()
        for worker in self.pool.with_room(self.depth):
            batch = self.batcher.next_batch(now, pipeline_idle=not self.in_flight)
            if batch is None:
                break
            self._send(worker, batch)

    def _send(self, worker: WorkerHandle, batch: Batch) -> None:
        outputs = sorted({item.owner.model_output for item in batch.items})
        flight = InFlight(next(self._batch_ids), batch, outputs, worker)
        if not worker.batches:
            worker.progress_at = time.monotonic()
        for item in batch.items:
            item.attempts += 1
        ids = np.concatenate([item.payload for item in batch.items])
        lengths = np.fromiter((item.length for item in batch.items), dtype=np.int32, count=len(batch.items))
        header: dict = {"batch": flight.id, "outputs": outputs}
        extra = []
        if self._send_prompt_lengths:
            extra.append(np.fromiter((item.prompt_length for item in batch.items), dtype=np.int64,
                                     count=len(batch.items)))
        if batch.items[0].split is not None:  # (query, document) pairs: where each document starts, last
            header["splits"] = True
            extra.append(np.fromiter((item.split for item in batch.items), dtype=np.int32, count=len(batch.items)))
        frames = [BATCH, dumps(header), ids, lengths, *extra]
        worker.batches.append(flight)
        self.in_flight[flight.id] = flight
        try:
            if not worker.channel.send(frames):
                self._selector.modify(worker.channel, selectors.EVENT_READ | selectors.EVENT_WRITE)
        except OSError:  # the worker is gone; reaping retries this batch with its others
            pass
        oldest = min(item.enqueued_at for item in batch.items)
        self.metrics.queue_wait.observe(time.monotonic() - oldest)
        self.metrics.batch_size.observe(len(batch.items))
        self.metrics.batch_tokens.observe(batch.padded_tokens)
        self.metrics.padding_tokens.inc(batch.padded_tokens - batch.tokens)

    def on_message(self, channel: Channel, frames: list) -> None:
        """Handle one message from a worker: READY, FATAL, RESULT or FAILED."""
        kind, body = bytes(frames[0]), frames[1:]
        if kind == READY:
            info = loads(body[0])
            worker = next((w for w in self.pool.workers.values() if w.pid == info["pid"]), None)
            if worker is None:
                log.warning("READY from unknown worker pid %s", info.get("pid"))
                return
            worker.channel, worker.provider = channel, info["provider"]
            log.info("worker %d ready: pid %d, provider %s", worker.index, worker.pid, worker.provider)
            if self.config.device == "cuda" and worker.provider != "CUDAExecutionProvider":
                log.warning("worker %d asked for CUDA but got %s", worker.index, worker.provider)
            return
        if kind == FATAL:
            message = loads(body[0])["message"]
            if not all(w.ready for w in self.pool.workers.values()):
                raise StartupError(f"a worker could not load the model: {message}")
            log.error("a replacement worker could not load the model: %s", message)
            return
        worker = self.pool.by_channel(channel)
        if worker is None:
            log.warning("dropped a %r message from a socket that is no worker's", kind)
            return
        header = loads(body[0])
        flight = self.in_flight.get(header.get("batch"))
        if flight is None or flight.worker is not worker:
            return  # a batch already given up on (its worker was declared dead)
        del self.in_flight[flight.id]
        worker.batches = [f for f in worker.batches if f is not flight]
        worker.progress_at = time.monotonic()
        if kind == FAILED:
            log.error("batch %d failed in worker %d: %s", flight.id, flight.worker.index, header["message"])
            self.sink.fail({item.owner for item in flight.batch.items}, ErrorCode.WORKER_FAILED,
                           f"the model failed on this request: {header['message']}")
        elif kind == RESULT:
            arrays = {name: np.frombuffer(buf, dtype=np.float32).reshape(shape)
                      for name, buf, shape in zip(flight.outputs, body[1:], header["arrays"])}
            self.sink.deliver(flight.batch, arrays)
            # After the replies went out: metrics are off the request's critical path.
            self.metrics.inference_time.observe(header["run_s"])
            self.metrics.batch_runs.labels("alone" if header["alone"] else "side_by_side").inc()

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
                if position >= self.config.parallel_batches:  # could not have started: no attempt spent
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
        limit = self.config.batch_timeout_s
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
        lost = {item.owner for item in flight.batch.items if item.attempts >= _MAX_ATTEMPTS}
        if lost:
            self.sink.fail(lost, ErrorCode.WORKER_FAILED, "the worker running this request died, twice")

    def worker_status(self) -> list[dict]:
        """One entry per configured worker, for the server's status."""
        return [{"index": w.index, "pid": w.pid, "provider": w.provider, "ready": w.ready, "busy": bool(w.batches),
                 "batches": len(w.batches)} for w in self.pool.workers.values()]
