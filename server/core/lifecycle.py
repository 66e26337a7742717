"""The request core of one model: admission and completion, with no sockets and no processes.

Admission: one validation pass (options, limits, queue bound), tokenization,
the cache, and the batcher's queue. Completion: results from the worker side
filled into their requests, failures, expiry, and each request's answer handed
to the ``respond`` callback its front end gave. Front ends (ZeroMQ, HTTP, the
bert-as-service adapter) only route to a core; the worker side only pulls
batches from its batcher and hands results back through :class:`Completion`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from zeroembed.client.protocol import EncodeOptions, ErrorCode, Op, Request, RerankOptions

from ..artifact import ArtifactManifest, RerankManifest
from ..config import RequestLimits
from ..metrics import Metrics
from .batcher import Batch, Batcher, Item, Owner
from .cache import EmbeddingCache
from .jobs import EncodeJob, Outcome, RerankJob, Respond
from .prompts import Prompts
from .tokenization import BackgroundTokenizer, TextTokenizer, Tokenized
from .validation import RequestRejected, check_limits, parse_options, parse_rerank_options

log = logging.getLogger(__name__)

# A request with this much text is tokenized on a thread, so one huge request cannot hold the loop (and
# every other client with it) for the time its tokenization takes.
BACKGROUND_CHARS = 1 << 20


class WorkerSide(Protocol):
    """What the core needs of whatever runs its batches (``workers.dispatch.Dispatcher``, or a fake)."""

    def dispatch(self) -> None:
        """Send what the batcher says should run now."""

    def is_idle(self) -> bool:
        """Whether no batch is running."""


class Completion(Protocol):
    """How the worker side hands batches back: the one interface from workers to core."""

    def deliver(self, batch: Batch, arrays: dict[str, np.ndarray]) -> None:
        """A batch ran: ``arrays`` holds each output it was asked for, rows in the batch's order."""

    def fail(self, owners: Iterable[Owner], code: ErrorCode, message: str) -> None:
        """These requests cannot finish (their batch failed, or their worker died too often)."""


class RequestCore:
    """Admission and completion of one model's requests; driven by one thread (the server's loop).

    ``clock`` is the monotonic clock used for arrival times, batching waits and
    expiry; tests pass a fake one.
    """

    def __init__(self, name: str, manifest: ArtifactManifest | RerankManifest, tokenizer: TextTokenizer, batcher: Batcher,
                 limits: RequestLimits, metrics: Metrics, *, background: BackgroundTokenizer | None = None,
                 cache: EmbeddingCache | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.manifest = manifest
        self.task = manifest.task  # "embed" or "rerank": which op this core admits
        self.tokenizer = tokenizer
        self.batcher = batcher
        self.limits = limits
        self.metrics = metrics
        self.background = background
        self.cache = cache
        self.clock = clock
        self.workers: WorkerSide | None = None  # attached once the worker side exists (it needs the core)
        # Accepted, unanswered requests in arrival order (a dict as an ordered set): the oldest first.
        self.jobs: dict[EncodeJob | RerankJob, None] = {}
        self.prompts = Prompts(manifest, tokenizer)
        self.queued_texts = 0  # texts of ``jobs``, kept as a count: checked on every request

    def attach(self, workers: WorkerSide) -> None:
        """Give the core the worker side that runs its batches."""
        self.workers = workers

    # ------------------------------------------------------------------ admission

    def submit(self, request: Request, respond: Respond, received: float | None = None) -> None:
        """Admit an encode or rerank request, or answer it at once with the error that refuses it.

        ``respond`` gets the request's :class:`Outcome` exactly once, on this thread.
        """
        received = self.clock() if received is None else received
        op = request.op
        try:
            if op == Op.RERANK:
                self._admit_rerank(request, respond, received)
            else:
                self._admit(request, respond, received)
        except RequestRejected as exc:
            self._answer_error(respond, request.id, exc.code, exc.message, exc.index, op.value)

    def _admit(self, request: Request, respond: Respond, received: float) -> None:
        if self.task != "embed":
            raise RequestRejected(ErrorCode.INVALID_REQUEST, f"model {self.name!r} is a reranker: it scores "
                                                             "(query, document) pairs; send it rerank requests, "
                                                             "not encode")
        options = parse_options(request)
        texts = request.texts
        limits = self.limits
        characters = check_limits(texts, max_texts=limits.max_texts_per_request, max_chars=limits.max_chars_per_text)
        queued = self.queued_texts
        if queued + len(texts) > limits.max_queue:
            raise RequestRejected(ErrorCode.BUSY, f"the server is full ({queued} texts queued, limit "
                                                  f"{limits.max_queue}); retry later")
        job = EncodeJob.create(respond, request.id, len(texts), options, self.manifest, received)
        prompt = self.prompts.resolve(options)
        if prompt:
            texts = [prompt + text for text in texts]
            job.prompt_length = self.prompts.length(prompt)
        if not texts:
            self._finish(job)
            return
        self.jobs[job] = None
        self.queued_texts += job.count
        if characters >= BACKGROUND_CHARS and self.background is not None:
            self.background.submit((job, texts, options, None), texts, pieces=options.show_tokens,
                                   pretokenized=options.is_tokenized)
            return
        started = time.perf_counter()
        try:
            tokenized = self.tokenizer.encode(texts, pieces=options.show_tokens, pretokenized=options.is_tokenized)
        except Exception as exc:  # input the checks let through and the tokenizer still refused
            self._tokenizing_failed(job, exc)
            return
        self._enqueue(job, texts, options, tokenized, time.perf_counter() - started)

    def _admit_rerank(self, request: Request, respond: Respond, received: float) -> None:
        if self.task != "rerank":
            raise RequestRejected(ErrorCode.INVALID_REQUEST, f"model {self.name!r} is an embedding model: it "
                                                             "cannot rerank; send rerank requests to a reranker "
                                                             "(a cross-encoder artifact)")
        options = parse_rerank_options(request)
        documents, query = request.texts, request.header["query"]
        limits = self.limits
        if not documents:
            raise RequestRejected(ErrorCode.INVALID_REQUEST, "documents is empty; send at least one document")
        if len(documents) > limits.max_documents_per_rerank:
            raise RequestRejected(ErrorCode.LIMIT_EXCEEDED,
                                  f"{len(documents)} documents in one rerank request; the limit is "
                                  f"{limits.max_documents_per_rerank} (split it)")
        if len(query) > limits.max_chars_per_text:
            raise RequestRejected(ErrorCode.LIMIT_EXCEEDED, f"the query has {len(query)} characters; the limit "
                                                            f"is {limits.max_chars_per_text}")
        characters = check_limits(documents, max_texts=limits.max_documents_per_rerank,
                                  max_chars=limits.max_chars_per_text, what="documents")
        queued = self.queued_texts
        if queued + len(documents) > limits.max_queue:
            raise RequestRejected(ErrorCode.BUSY, f"the server is full ({queued} texts queued, limit "
                                                  f"{limits.max_queue}); retry later")
        job = RerankJob(respond, request.id, len(documents),
                        "identity" if options.raw_scores else self.manifest.activation, received)
        self.jobs[job] = None
        self.queued_texts += job.count
        if characters + len(query) * len(documents) >= BACKGROUND_CHARS and self.background is not None:
            self.background.submit((job, documents, options, query), documents, pieces=False, pretokenized=False,
                                   query=query)
            return
        started = time.perf_counter()
        try:
            tokenized = self.tokenizer.encode(documents, query=query)
        except Exception as exc:
            self._tokenizing_failed(job, exc)
            return
        self._enqueue(job, documents, options, tokenized, time.perf_counter() - started, query)

    def on_tokenized(self) -> None:
        """Queue the texts of requests whose tokenization finished on the background thread."""
        for (job, texts, options, query), tokenized, seconds, error in self.background.completed():
            if job.failed:  # timed out (or the server stopped) meanwhile
                continue
            if error is not None:
                self._tokenizing_failed(job, error)
                continue
            self._enqueue(job, texts, options, tokenized, seconds, query)

    def _tokenizing_failed(self, job: EncodeJob | RerankJob, error: BaseException) -> None:
        log.error("tokenizing request %s failed: %r", job.id, error)
        self._fail_job(job, ErrorCode.INVALID_REQUEST, f"the texts could not be tokenized: {error}")

    def _enqueue(self, job: EncodeJob | RerankJob, texts: list, options: EncodeOptions | RerankOptions,
                 tokenized: Tokenized, seconds: float, query: str | None = None) -> None:
        """Queue a tokenized request's texts (those the cache does not answer) for the batcher; with
        ``query``, the texts are a rerank request's documents and each item is a (query, document) pair."""
        if not options.truncate and tokenized.truncated:
            self.metrics.tokenize_time.labels(self._op(job)).observe(seconds)
            index = tokenized.truncated[0]
            if query is None:
                what, count = f"texts[{index}]", self.tokenizer.count_tokens(texts[index])
            else:
                what, count = f"the pair (query, documents[{index}])", \
                    self.tokenizer.count_pair_tokens(query, texts[index])
            self._fail_job(job, ErrorCode.TEXT_TOO_LONG,
                           f"{what} has {count} tokens, more than the model's {self.tokenizer.max_length}; "
                           "shorten it or send truncate=True", index)
            return
        job.pieces = tokenized.pieces
        job.num_tokens = int(tokenized.offsets[-1])
        # The cache fills the texts it knows into the request; only the others are queued.
        to_run = (range(len(texts)) if self.cache is None or query is not None
                  else self.cache.lookup(job, texts, options.is_tokenized))
        if job.done:  # every text was a cache hit
            self._finish(job)
        else:
            offsets, splits = tokenized.offsets, tokenized.splits
            now = self.clock()
            self.batcher.add(
                Item(owner=job, index=i, length=int(offsets[i + 1] - offsets[i]), enqueued_at=now,
                     payload=tokenized.ids[offsets[i]:offsets[i + 1]], prompt_length=job.prompt_length,
                     split=None if splits is None else int(splits[i]))
                for i in to_run
            )
            if self.workers.is_idle():
                # Nothing runs: these texts go now, before the bookkeeping below and before the loop looks
                # for more messages, so a lone request waits for nothing.
                self.workers.dispatch()
        self.metrics.tokenize_time.labels(self._op(job)).observe(seconds)
        self.metrics.texts.inc(len(texts))
        self.metrics.tokens.inc(job.num_tokens)

    # ------------------------------------------------------------------ completion (Completion)

    def deliver(self, batch: Batch, arrays: dict[str, np.ndarray]) -> None:
        """Fill a finished batch's rows into their requests; answer those now complete."""
        tokens = arrays.get("token_embeddings")
        token_offset = 0
        for row, item in enumerate(batch.items):
            job: EncodeJob = item.owner  # type: ignore[assignment]  # this core queued only EncodeJobs
            if job.model_output == "token_embeddings":
                vector = tokens[token_offset:token_offset + item.length]
            else:
                vector = arrays[job.model_output][row]
            if tokens is not None:
                token_offset += item.length
            if job.failed:
                continue
            if self.cache is not None:
                self.cache.store(job, item.index, vector)
            job.fill(item.index, vector)
            if job.done:
                self._finish(job)

    def fail(self, owners: Iterable[Owner], code: ErrorCode, message: str) -> None:
        """Answer these requests with an error and drop the rest of their texts."""
        for owner in owners:
            self._fail_job(owner, code, message)  # type: ignore[arg-type]

    def expire(self) -> None:
        """Answer requests unanswered past the request timeout; nobody will finish them in time."""
        now = self.clock()
        timeout = self.limits.request_timeout_s
        expired = []
        for job in self.jobs:  # oldest first: stop at the first one still in time
            if now - job.received_at <= timeout:
                break
            expired.append(job)
        for job in expired:
            self._fail_job(job, ErrorCode.TIMEOUT, f"not finished within the server's {timeout:g}s request timeout")

    def fail_all(self, code: ErrorCode, message: str) -> None:
        """Answer every unanswered request with an error (the server is stopping)."""
        for job in list(self.jobs):
            self._fail_job(job, code, message)

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _op(job: EncodeJob | RerankJob) -> str:
        return Op.RERANK.value if isinstance(job, RerankJob) else Op.ENCODE.value

    def _finish(self, job: EncodeJob | RerankJob) -> None:
        self._forget(job)
        job.respond(job.outcome())
        self.metrics.request_latency.labels(self._op(job)).observe(self.clock() - job.received_at)

    def _fail_job(self, job: EncodeJob | RerankJob, code: ErrorCode, message: str, index: int | None = None) -> None:
        if job.failed:
            return
        job.failed = True
        self._forget(job)
        self.batcher.remove_owner(job)
        self._answer_error(job.respond, job.id, code, message, index, self._op(job))

    def _forget(self, job: EncodeJob | RerankJob) -> None:
        if job in self.jobs:
            del self.jobs[job]
            self.queued_texts -= job.count

    def _answer_error(self, respond: Respond, request_id: str | None, code: ErrorCode, message: str,
                      index: int | None, op: str) -> None:
        self.metrics.errors.labels(op, code.value).inc()
        log.debug("request %s: %s: %s", request_id, code.value, message)
        respond(Outcome(request_id, error=code, message=message, index=index))

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """This model's part of the server's status."""
        manifest = self.manifest
        facts: dict[str, Any] = {"task": self.task}
        if isinstance(manifest, RerankManifest):
            facts.update(activation=manifest.activation, max_documents_per_rerank=self.limits.max_documents_per_rerank)
        else:
            facts.update(pooling=manifest.pooling, normalize=manifest.normalize)
        return {
            "dim": manifest.hidden_size,
            "max_seq_length": manifest.max_seq_length,
            **facts,
            "precision": manifest.precision,
            "prompts": dict(manifest.prompts),
            "default_prompt_name": manifest.default_prompt_name,
            "max_queue": self.limits.max_queue,
            "queue_depth": len(self.batcher),
            "in_flight_requests": len(self.jobs),
            "tokenizing_requests": len(self.background) if self.background is not None else 0,
        }
