"""The models a server holds: each one an artifact, its request core and its worker side.

A server holds a mapping from model name to :class:`ServedModel`; front ends
route each request by name (the first model is the default). Nothing of one
model's queue or workers is shared with another's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifact import Artifact
from .config import Settings
from .core.batcher import Batcher
from .core.cache import EmbeddingCache
from .core.lifecycle import RequestCore
from .core.tokenization import BackgroundTokenizer, TextTokenizer
from .errors import StartupError
from .metrics import Metrics
from .workers.dispatch import Dispatcher
from .workers.int8_kernel import check_int8_here

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ServedModel:
    """One model being served: its artifact, request core and worker side."""

    name: str
    artifact: Artifact
    core: RequestCore
    workers: Dispatcher

    def fds(self) -> list[int]:
        """File descriptors the server's loop polls for this model: workers' sockets, background tokenizing."""
        return [self.workers.fileno(), self.core.background.fileno()]

    def on_readable(self, fd: int) -> None:
        if fd == self.workers.fileno():
            self.workers.on_ready()
        else:
            self.core.on_tokenized()

    def tick(self, *, replace: bool) -> None:
        """The periodic checks: stuck or dead workers, requests past their deadline."""
        self.workers.check_workers(replace=replace)
        self.core.expire()

    def wait_s(self, now: float) -> float | None:
        """How long the loop may sleep before a partial batch's wait runs out; None: no such deadline."""
        deadline = self.core.batcher.deadline()
        if deadline is None or not self.workers.has_room():
            return None
        return max(0.0, deadline - now)

    def close(self) -> None:
        """Stop the workers and the background tokenizer. Idempotent."""
        self.workers.stop()
        self.core.background.close()

    @property
    def task(self) -> str:
        """"embed" or "rerank"."""
        return self.core.task

    def status(self) -> dict[str, Any]:
        """This model's facts for the server's status."""
        return {
            "name": self.name,
            "model": {"name": self.name, "path": str(self.artifact.path), "manifest": self.artifact.raw_manifest},
            **self.core.status(),
            "workers": self.workers.worker_status(),
            "worker_restarts": self.workers.pool.restarts,
        }


def load_model(name: str, artifact: Artifact, settings: Settings, metrics: Metrics, sockdir: Path) -> ServedModel:
    """Build a model's core and worker side (its workers start with :meth:`Dispatcher.start`); its metrics
    carry ``model=name``."""
    manifest = artifact.manifest
    budget = settings.max_batch_tokens
    if budget < manifest.max_seq_length:
        if "max_batch_tokens" in settings.model_fields_set:
            raise StartupError(
                f"--max-batch-tokens {budget} is below the model's max sequence length "
                f"{manifest.max_seq_length}: a long text could never run"
            )
        # The device's default budget is sized for short-context models; a long-context one (ModernBERT's
        # 8192 tokens) gets room for one text at its limit, which still bounds a batch's memory.
        budget = manifest.max_seq_length
        log.info("%s: batches of up to %d tokens (the model's max sequence length)", name, budget)
    warning = check_int8_here(name, manifest, settings.device)  # StartupError for an int8 artifact it would spoil
    if warning:
        log.warning(warning)
    metrics = metrics.for_model(name)
    rerank = manifest.task == "rerank"
    batcher = Batcher(max_batch_tokens=budget, max_batch_size=settings.max_batch_size,
                      wait_s=settings.batch_wait_ms / 1000, max_added_padding=settings.max_added_padding)
    core = RequestCore(name, manifest, TextTokenizer(artifact.tokenizer_path, manifest.max_seq_length), batcher,
                       settings.limits, metrics,
                       background=BackgroundTokenizer(artifact.tokenizer_path, manifest.max_seq_length),
                       # A rerank score depends on the query too: the cache, keyed by text, serves embedders only.
                       cache=EmbeddingCache(settings.cache_size, metrics) if settings.cache_size and not rerank
                       else None)
    sockdir.mkdir(parents=True, exist_ok=True)
    workers = Dispatcher(sockdir, settings.worker_config, artifact.model_path, tuple(manifest.inputs), metrics,
                         batcher, sink=core)
    core.attach(workers)
    return ServedModel(name, artifact, core, workers)
