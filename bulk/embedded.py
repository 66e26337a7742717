"""The embedded engine: the server's own worker processes on this machine, fed straight from the inputs.

No broker and no client: the job drives the server's worker side directly,
its :class:`~zeroembed.server.workers.dispatch.Dispatcher` (the worker pool,
the Unix-socket link, retrying the texts of a worker that dies) and its
:class:`~zeroembed.server.core.batcher.Batcher` (token-budget batches). So the
vectors are the server's, computed by the same runtime, and every core is kept
busy the way the server keeps it busy under load.

Rows are read a window at a time, tokenized on a thread of their own while the
workers run the previous window (the server's BackgroundTokenizer), and each
window is sorted by length before it is queued: neighbouring texts have
similar lengths, so batches carry little padding. The window bounds the memory
and how far results run ahead of the shards being written.
"""

from __future__ import annotations

import logging
import select
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .assembly import ShardAssembler
from .encoding import Encoding
from .errors import BulkError, EngineError
from .progress import Progress
from .rows import read_range
from .scan import Corpus

log = logging.getLogger(__name__)

SENTENCE = "sentence_embedding"
DEFAULT_WINDOW = 2048  # rows sorted by length together; two windows at most are held at once


@dataclass(frozen=True)
class EmbeddedOptions:
    """How the embedded engine runs; 0 or None picks the server's default for the device."""

    device: str = "auto"
    workers: int = 0
    threads_per_worker: int = 0
    batch_size: int = 0
    max_batch_tokens: int = 0
    window: int = DEFAULT_WINDOW


class _Job:
    """The owner the worker side sees for every text of the job (``batcher.Owner``)."""

    model_output = SENTENCE
    failed = False


class _Sink:
    """The job's side of the worker side's ``Completion``: vectors to the shards, failures to the engine."""

    def __init__(self, deliver, fail) -> None:
        self.deliver, self._fail = deliver, fail

    def fail(self, _owners, _code, message: str) -> None:
        self._fail(message)


class EmbeddedEngine:
    """Embeds rows on a local pool of the server's worker processes."""

    name = "embedded"

    def __init__(self, artifact, options: EmbeddedOptions = EmbeddedOptions()) -> None:
        from zeroembed.server.config import SettingsError, cpu_count, cuda_available, load_settings

        self.artifact = artifact
        self.options = options
        # The server's settings, so its per-device defaults (batch sizes, padding bound) apply here too. One
        # difference: on CPU, one worker per core with one thread each by default. A job always has a backlog,
        # so each core runs a batch of its own anyway (the server's side-by-side mode), and a one-thread run
        # never waits on a sibling thread that the OS has descheduled, which makes multi-threaded runs slow
        # on a busy machine.
        workers, threads = options.workers, options.threads_per_worker
        on_cpu = options.device == "cpu" or (options.device == "auto" and not cuda_available())
        if on_cpu and not workers and not threads:
            workers, threads = cpu_count(), 1
        try:
            self.settings = load_settings(device=options.device, workers=workers or None,
                                          threads_per_worker=threads or None,
                                          max_batch_size=options.batch_size or None,
                                          max_batch_tokens=options.max_batch_tokens or None,
                                          metrics_port=0, log_level="warning")
        except SettingsError as exc:
            raise BulkError(" ".join(str(exc).split("\n"))) from None
        self.device = self.settings.device
        self._dispatcher = None
        self._error: str | None = None
        self.worker_restarts = 0  # workers that died during the last run and were replaced

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (the fault tests kill one)."""
        if self._dispatcher is None:
            return []
        return [w.pid for w in self._dispatcher.pool.workers.values() if w.pid is not None]

    def run(self, corpus: Corpus, ranges: list[tuple[int, int]], assembler: ShardAssembler,
            progress: Progress, encoding: Encoding = Encoding()) -> None:
        """Embed the rows at the positions in ``ranges`` (each text after ``encoding``'s prompt); every
        vector, cut to ``encoding``'s dimensions, goes to ``assembler``."""
        from zeroembed.server.core.batcher import Batcher
        from zeroembed.server.core.tokenization import BackgroundTokenizer
        from zeroembed.server.errors import StartupError
        from zeroembed.server.metrics import Metrics
        from zeroembed.server.workers.dispatch import Dispatcher

        settings = self.settings
        batcher = Batcher(max_batch_tokens=settings.max_batch_tokens, max_batch_size=settings.max_batch_size,
                          wait_s=settings.batch_wait_ms / 1000, max_added_padding=settings.max_added_padding)
        sockdir = Path(tempfile.mkdtemp(prefix="zeroembed-embed-"))
        tokenizer = BackgroundTokenizer(self.artifact.tokenizer_path, self.artifact.manifest.max_seq_length)
        outstanding = [0]  # rows tokenizing, queued or running

        def deliver(batch, arrays: dict[str, np.ndarray]) -> None:
            items = batch.items
            positions = np.fromiter((item.index for item in items), dtype=np.int64, count=len(items))
            lengths = np.fromiter((item.length for item in items), dtype=np.int32, count=len(items))
            assembler.add(positions, encoding.cut(arrays[SENTENCE]), lengths)
            outstanding[0] -= len(items)
            progress.update(len(items), int(lengths.sum()))

        def fail(message: str) -> None:
            self._error = message

        manifest = self.artifact.manifest
        dispatcher = Dispatcher(sockdir, settings.worker_config, self.artifact.model_path, tuple(manifest.inputs),
                                Metrics().for_model(self.artifact.name), batcher, _Sink(deliver, fail))
        self._dispatcher = dispatcher
        try:
            try:
                dispatcher.start()
            except StartupError as exc:
                raise EngineError(f"the embedded engine could not start: {exc}") from None
            windows = _windows(corpus, ranges, assembler, self.options.window)
            exhausted = False
            while True:
                if self._error is not None:
                    raise EngineError(f"{self._error}; run the same command again to resume")
                if not exhausted and not len(tokenizer) and outstanding[0] <= self.options.window:
                    window = next(windows, None)
                    if window is None:
                        exhausted = True
                    else:
                        positions, texts = window
                        tokenizer.submit(positions, encoding.texts(texts), pieces=False, pretokenized=False)
                        outstanding[0] += len(positions)
                for positions, tokenized, _seconds, error in tokenizer.completed():
                    if error is not None:
                        raise EngineError(f"tokenizing failed: {error}")
                    _queue(batcher, positions, tokenized, encoding.prompt_length)
                if exhausted and not len(tokenizer) and not outstanding[0]:
                    return
                dispatcher.dispatch()
                # A partial batch's wait matters only when a worker could take it; otherwise sleep until a
                # worker answers (with a backlog, the oldest text's deadline is always past: no busy loop).
                deadline = batcher.deadline()
                wait = 0.05
                if deadline is not None and dispatcher.has_room():
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                select.select([dispatcher.fileno(), tokenizer.fileno()], [], [], wait)
                dispatcher.on_ready()
                dispatcher.check_workers(replace=True)
        finally:
            self._dispatcher = None
            self.worker_restarts = dispatcher.pool.restarts
            tokenizer.close()
            dispatcher.stop()
            shutil.rmtree(sockdir, ignore_errors=True)


def _windows(corpus: Corpus, ranges: list[tuple[int, int]], assembler: ShardAssembler,
             size: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Windows of about ``size`` rows to embed: their positions and texts. Ids go to the assembler as read."""
    positions: list[np.ndarray] = []
    texts: list[str] = []
    for start, stop in ranges:
        for rows in read_range(corpus, start, stop):
            if rows.ids is not None:
                assembler.add_ids(rows.first, rows.ids)
            positions.append(np.arange(rows.first, rows.first + len(rows), dtype=np.int64))
            texts.extend(rows.texts.to_pylist())
            if len(texts) >= size:
                yield np.concatenate(positions), texts
                positions, texts = [], []
    if texts:
        yield np.concatenate(positions), texts


def _queue(batcher, positions: np.ndarray, tokenized, prompt_length: int) -> None:
    """Queue a tokenized window for the batcher, shortest texts first; each text starts with
    ``prompt_length`` tokens of prompt that the model pools without (0: none, or the model pools them too)."""
    from zeroembed.server.core.batcher import Item

    job, now = _JOB, time.monotonic()
    lengths = tokenized.lengths
    offsets = tokenized.offsets
    order = np.argsort(lengths, kind="stable")
    batcher.add(Item(owner=job, index=int(positions[i]), length=int(lengths[i]), enqueued_at=now,
                     payload=tokenized.ids[offsets[i]:offsets[i + 1]], prompt_length=prompt_length)
                for i in order.tolist())


_JOB = _Job()
