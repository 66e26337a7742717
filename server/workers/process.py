"""A worker process: one model runtime, fed batches by the broker.

Messages to and from the broker are in messages.py. They travel over a Unix socket the worker connects to (channel.py). A worker
runs a batch on all its threads, in its main thread. With ``parallel`` > 1,
when a backlog builds up (more batches waiting than that) it runs up to
``parallel`` side by side, one thread each, on runner threads, until the
backlog is gone (EncoderRuntime explains why); only the main thread touches the
socket. It exits on STOP, or by itself when the broker's end of the socket
closes (the broker exited or died), so no worker outlives the server.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .channel import Channel
from .messages import BATCH, FAILED, FATAL, READY, RESULT, STOP, dumps


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to start; picklable, passed to the spawned process."""

    index: int
    endpoint: str  # the path of the broker's Unix socket for workers
    model_path: Path
    inputs: tuple[str, ...]
    device: str
    threads: int
    parallel: int = 1  # batches run side by side, one thread each, when more than that many wait
    log_level: str = "info"


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process."""
    # The broker owns shutdown: it drains, then sends STOP. A Ctrl-C reaching the
    # whole process group must not kill workers mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker-{spec.index} %(levelname)s %(message)s")
    logging.getLogger("zeroembed").setLevel(spec.log_level.upper())
    channel = Channel.connect(spec.endpoint)
    try:
        from .runtime import EncoderRuntime

        runtime = EncoderRuntime(spec.model_path, device=spec.device, threads=spec.threads, inputs=spec.inputs,
                                 parallel=spec.parallel)
    except Exception as exc:  # any load failure is reported to the broker, which explains it
        channel.send_all([FATAL, dumps({"message": str(exc)})])
        channel.close()
        raise SystemExit(1) from None
    channel.send_all([READY, dumps({"pid": os.getpid(), "provider": runtime.provider, "device": spec.device})])
    try:
        WorkerLoop(channel, runtime, spec.parallel).serve()
    finally:
        channel.close()


@dataclass(frozen=True)
class _Batch:
    header: dict
    ids: np.ndarray
    lengths: np.ndarray
    prompt_lengths: np.ndarray | None = None  # int64 per row, for models that pool without the prompt
    splits: np.ndarray | None = None  # (query, document) pairs: where each document starts


class WorkerLoop:
    """The worker's loop: receives batches, decides how each runs, sends its outputs back."""

    def __init__(self, channel: Channel, runtime, parallel: int) -> None:
        self.channel = channel
        self.runtime = runtime
        self.parallel = parallel
        self.waiting: deque[_Batch] = deque()
        self.side_by_side: dict[Future, _Batch] = {}
        self._runners = ThreadPoolExecutor(parallel, thread_name_prefix="zeroembed-run") if parallel > 1 else None
        self._wake_read, self._wake_write = os.pipe()  # a runner finished: wakes the poll
        os.set_blocking(self._wake_read, False)

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.channel.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        try:
            self._loop(poller)
        except (BrokenPipeError, ConnectionResetError):
            return  # the broker is gone: nobody to answer
        finally:
            if self._runners is not None:  # batches already running finish (ORT cannot be interrupted)
                self._runners.shutdown(wait=True, cancel_futures=True)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _loop(self, poller: select.poll) -> None:
        while True:
            # A batch that could start but waits (after a run here) only needs a fresh look at the socket.
            startable = self.waiting and len(self.side_by_side) < self.parallel
            events = dict(poller.poll(0 if startable else None))
            if self.channel.fileno() in events and not self._receive():
                return
            if self._wake_read in events:
                os.read(self._wake_read, 4096)
            finished = [(self.side_by_side.pop(f), f) for f in list(self.side_by_side) if f.done()]
            if self.side_by_side:
                self._start()  # a runner is still busy: fill the free one before spending time on replies
            for batch, future in finished:
                self._answer(batch, future.result, alone=False)
            self._start()

    def _receive(self) -> bool:
        """Queue every batch that arrived; False on STOP, or when the broker is gone."""
        for frames in self.channel.receive():
            if frames[0] == STOP:
                return False
            if frames[0] == BATCH and 4 <= len(frames) <= 6:
                header, extra = json.loads(bytes(frames[1])), frames[4:]
                # The splits of a batch of pairs come last (the header says so); prompt lengths before them.
                splits = np.frombuffer(extra.pop(), dtype=np.int32) if header.get("splits") and extra else None
                prompt_lengths = np.frombuffer(extra[0], dtype=np.int64) if extra else None
                self.waiting.append(_Batch(header, np.frombuffer(frames[2], dtype=np.int32),
                                           np.frombuffer(frames[3], dtype=np.int32), prompt_lengths, splits))
        return not self.channel.closed

    def _start(self) -> None:
        # From idle, batches go side by side (a runner thread and one core each) only when more wait than
        # can run at once: a backlog that keeps every lane busy. Otherwise each runs here on every thread,
        # which answers it soonest; a lane running alone at the end of a burst would leave cores idle.
        if self.waiting and not self.side_by_side and (self._runners is None or len(self.waiting) <= self.parallel):
            batch = self.waiting.popleft()
            self._answer(batch, lambda: _run(self.runtime, batch, alone=True), alone=True)
            return  # what arrived meanwhile decides the next one
        while self.waiting and len(self.side_by_side) < self.parallel:
            batch = self.waiting.popleft()
            future = self._runners.submit(_run, self.runtime, batch, alone=False)
            future.add_done_callback(lambda _: os.write(self._wake_write, b"\0"))
            self.side_by_side[future] = batch

    def _answer(self, batch: _Batch, run: Callable[[], tuple[list[np.ndarray], float]], *, alone: bool) -> None:
        """Send the outputs ``run()`` returns, or FAILED with its error: a runtime error fails this batch only."""
        try:
            arrays, run_s = run()
        except Exception as exc:
            log.error("batch %s failed: %s", batch.header["batch"], exc, exc_info=exc)
            self.channel.send_all([FAILED, dumps({"batch": batch.header["batch"], "message": str(exc)})])
            return
        meta = {"batch": batch.header["batch"], "run_s": run_s, "alone": alone,
                "arrays": [list(a.shape) for a in arrays]}
        self.channel.send_all([RESULT, dumps(meta), *arrays])


def _run(runtime, batch: _Batch, *, alone: bool) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    # Only the batches of models that take them carry prompt lengths or (rerankers) splits.
    extra = {name: value for name, value in (("prompt_lengths", batch.prompt_lengths), ("splits", batch.splits))
             if value is not None}
    results = runtime.run(batch.ids, batch.lengths, batch.header["outputs"], alone=alone, **extra)
    arrays = [np.ascontiguousarray(results[name], dtype=np.float32) for name in batch.header["outputs"]]
    return arrays, time.perf_counter() - started
