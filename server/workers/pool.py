"""The worker pool: starting, watching, replacing and stopping worker processes.

The pool only manages processes; the broker decides what each worker runs.
Workers are spawned (not forked) so no socket, ZeroMQ context or thread of
the broker is copied into them.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

from .channel import Channel
from .process import WorkerSpec, worker_main

log = logging.getLogger(__name__)


@dataclass(eq=False)
class WorkerHandle:
    """One worker process as the broker sees it."""

    index: int
    process: BaseProcess
    channel: Channel | None = None  # its connection, known once it says READY; None again once closed
    provider: str | None = None
    # Batches sent to it and unanswered, oldest first: the first --parallel-batches of them may be running.
    batches: list = field(default_factory=list)
    progress_at: float = field(default_factory=time.monotonic)  # last batch finished, or first one sent
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def ready(self) -> bool:
        return self.channel is not None


class WorkerPool:
    """Starts ``size`` workers and keeps that many alive."""

    def __init__(self, *, size: int, endpoint: str, model_path: Path, inputs: tuple[str, ...], device: str,
                 threads: int, parallel: int, log_level: str) -> None:
        self.size = size
        self._context = multiprocessing.get_context("spawn")
        self._spec = dict(endpoint=endpoint, model_path=model_path, inputs=inputs, device=device,
                          threads=threads, parallel=parallel, log_level=log_level)
        self.workers: dict[int, WorkerHandle] = {}
        self.restarts = 0

    def start(self) -> None:
        """Start every worker (they report READY over the socket when loaded)."""
        for index in range(self.size):
            self._spawn(index)

    def _spawn(self, index: int) -> WorkerHandle:
        process = self._context.Process(
            target=worker_main, args=(WorkerSpec(index=index, **self._spec),), name=f"zeroembed-worker-{index}",
            daemon=True,
        )
        process.start()
        handle = WorkerHandle(index=index, process=process)
        self.workers[index] = handle
        return handle

    def by_channel(self, channel: Channel) -> WorkerHandle | None:
        return next((w for w in self.workers.values() if w.channel is channel), None)

    def with_room(self, depth: int) -> list[WorkerHandle]:
        """Ready workers holding fewer than ``depth`` batches, the least loaded first."""
        return sorted((w for w in self.workers.values() if w.ready and len(w.batches) < depth),
                      key=lambda w: len(w.batches))

    def busy_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.batches)

    def reap(self) -> list[WorkerHandle]:
        """Find workers that died; return them (with the batches they held)."""
        dead = [w for w in self.workers.values() if not w.process.is_alive()]
        for worker in dead:
            worker.process.join(0)
            log.warning("worker %d (pid %s) exited with code %s", worker.index, worker.pid, worker.process.exitcode)
        return dead

    def replace(self, worker: WorkerHandle) -> WorkerHandle:
        """Start a new process in a dead worker's place."""
        self.restarts += 1
        return self._spawn(worker.index)

    def stop(self, timeout: float = 5.0) -> None:
        """Wait for workers told to STOP; terminate, then kill, any that linger."""
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers.values():
            if worker.process.is_alive():
                log.warning("worker %d did not stop in time; terminating", worker.index)
                worker.process.terminate()
                worker.process.join(2.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(2.0)
