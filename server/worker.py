"""A worker process: one model runtime, fed batches by the broker over a DEALER socket.

Broker ↔ worker messages (internal; both ends live in this package)::

    worker → broker  READY   {"pid", "provider", "device"}      model loaded, send work
    worker → broker  FATAL   {"message"}                         model failed to load; exiting
    broker → worker  BATCH   {"batch", "outputs"}, ids, lengths  int32 buffers
    worker → broker  RESULT  {"batch", "arrays", "run_s"}, one buffer per output
    worker → broker  FAILED  {"batch", "message"}                this batch failed; still serving
    broker → worker  STOP                                         finish and exit

A worker takes one batch at a time and exits on STOP, or by itself when its
parent broker is gone, so no worker outlives the server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

READY, FATAL, BATCH, RESULT, FAILED, STOP = (b"ready", b"fatal", b"batch", b"result", b"failed", b"stop")
_PARENT_CHECK_MS = 1000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to start; picklable, passed to the spawned process."""

    index: int
    endpoint: str  # the broker's backend socket
    model_path: Path
    inputs: tuple[str, ...]
    device: str
    threads: int
    parent_pid: int
    log_level: str = "info"


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process."""
    # The broker owns shutdown: it drains, then sends STOP. A Ctrl-C reaching the
    # whole process group must not kill workers mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker-{spec.index} %(levelname)s %(message)s")
    logging.getLogger("zeroembed").setLevel(spec.log_level.upper())
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 1000)
    socket.connect(spec.endpoint)
    try:
        from .runtime import EncoderRuntime

        runtime = EncoderRuntime(spec.model_path, device=spec.device, threads=spec.threads, inputs=spec.inputs)
    except Exception as exc:  # any load failure is reported to the broker, which explains it
        socket.send_multipart([FATAL, dumps({"message": str(exc)})])
        socket.close()
        context.term()
        raise SystemExit(1) from None
    socket.send_multipart([READY, dumps({"pid": os.getpid(), "provider": runtime.provider, "device": spec.device})])
    try:
        _serve(socket, runtime, spec.parent_pid)
    finally:
        socket.close()
        context.term()


def _serve(socket: zmq.Socket, runtime, parent_pid: int) -> None:
    while True:
        if not socket.poll(_PARENT_CHECK_MS):
            if os.getppid() != parent_pid:  # the broker died without a STOP: leave, don't linger
                return
            continue
        frames = socket.recv_multipart()
        kind = frames[0]
        if kind == STOP:
            return
        if kind != BATCH or len(frames) != 4:
            continue
        header = json.loads(frames[1])
        ids = np.frombuffer(frames[2], dtype=np.int32)
        lengths = np.frombuffer(frames[3], dtype=np.int32)
        started = time.perf_counter()
        try:
            results = runtime.run(ids, lengths, header["outputs"])
        except Exception as exc:  # a runtime error fails this batch only
            log.exception("batch %s failed", header["batch"])
            socket.send_multipart([FAILED, dumps({"batch": header["batch"], "message": str(exc)})])
            continue
        arrays = [np.ascontiguousarray(results[name], dtype=np.float32) for name in header["outputs"]]
        meta = {"batch": header["batch"], "run_s": time.perf_counter() - started,
                "arrays": [list(a.shape) for a in arrays]}
        socket.send_multipart([RESULT, dumps(meta), *arrays], copy=False)
