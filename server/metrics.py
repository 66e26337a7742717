"""Prometheus metrics of one server, in a registry of its own (no global state).

Every series carries a ``model`` label: a server may hold several models, and
each one's core and workers count through a :class:`ModelMetrics` view bound to
its name. Requests refused before they reach a model (unreadable, or naming no
loaded model) count under ``model=""``.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

NO_MODEL = ""  # the model label of requests refused before any model took them


class Metrics:
    """Every metric the server exports, named ``zeroembed_*``, per stage as in TEI, labelled by model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        m = ["model"]
        self.requests = Counter("zeroembed_requests", "Requests received, by op", [*m, "op"], registry=r)
        self.texts = Counter("zeroembed_texts", "Texts (or rerank documents) encoded", m, registry=r)
        self.tokens = Counter("zeroembed_tokens", "Real tokens encoded", m, registry=r)
        self.padding_tokens = Counter("zeroembed_padding_tokens", "Padding tokens run (wasted work)", m, registry=r)
        self.errors = Counter("zeroembed_errors", "Error replies, by op and code", [*m, "op", "code"], registry=r)
        self.request_latency = Histogram(
            "zeroembed_request_latency_seconds", "From request received to reply sent, by op", [*m, "op"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.tokenize_time = Histogram(
            "zeroembed_tokenize_seconds", "Tokenizing one request, by op", [*m, "op"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "zeroembed_queue_wait_seconds", "From queued to dispatched, per batch's oldest text", m,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.inference_time = Histogram(
            "zeroembed_inference_seconds", "Model run per batch, in the worker", m, buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_runs = Counter(
            "zeroembed_batch_runs", "Batches run, by how: alone on all of a worker's threads, or side by side "
            "with others on one thread each (--parallel-batches)", [*m, "mode"], registry=r,
        )
        self.batch_size = Histogram("zeroembed_batch_size", "Texts per batch", m, buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram(
            "zeroembed_batch_tokens", "Padded tokens per batch (size × width)", m, buckets=_TOKEN_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("zeroembed_queue_depth", "Texts waiting for a worker", m, registry=r)
        self.in_flight = Gauge("zeroembed_in_flight_texts", "Texts accepted and not yet answered", m, registry=r)
        self.busy_workers = Gauge("zeroembed_busy_workers", "Workers running a batch", m, registry=r)
        self.workers = Gauge("zeroembed_workers", "Workers alive and ready", m, registry=r)
        self.worker_restarts = Counter("zeroembed_worker_restarts", "Workers replaced after dying", m, registry=r)
        # server/frontends/bert.py serves the default model; its requests also count in zeroembed_requests
        self.bert_requests = Counter("zeroembed_bert_requests", "bert-as-service protocol requests, by kind",
                                     [*m, "kind"], registry=r)
        self.bert_errors = Counter("zeroembed_bert_errors", "bert-as-service protocol error replies, by code",
                                   [*m, "code"], registry=r)
        self.bert_held_replies = Gauge("zeroembed_bert_held_replies",
                                       "bert-as-service replies held until their client's subscription arrives",
                                       m, registry=r)
        self.bert_expired_replies = Counter("zeroembed_bert_expired_replies",
                                            "Held bert-as-service replies published unheard after the hold timeout",
                                            m, registry=r)
        self.cache_hits = Counter("zeroembed_cache_hits", "Texts answered from the embedding cache", m, registry=r)
        self.cache_misses = Counter("zeroembed_cache_misses", "Texts looked up in the cache and run", m, registry=r)
        self._http = None

    def for_model(self, name: str) -> ModelMetrics:
        """The same metrics with ``model`` set to ``name``: what one model's components count with."""
        return ModelMetrics(self, name)

    def serve(self, host: str, port: int) -> None:
        """Expose ``/metrics`` over HTTP on ``host:port`` (a daemon thread)."""
        self._http = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(2)
            self._http = None


class _Labelled:
    """A metric with more labels than ``model``, its model fixed: ``.labels(op)`` means ``.labels(model, op)``."""

    __slots__ = ("_metric", "_model", "_children")

    def __init__(self, metric: Any, model: str) -> None:
        self._metric, self._model = metric, model
        # The label values are few (ops, error codes, batch modes): each child is looked up once, since
        # prometheus_client's labels() validates and locks on every call, on the server loop's path.
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(self._model, *values)
        return child


class ModelMetrics:
    """:class:`Metrics` seen by one model's components: the same attribute names, the ``model`` label filled.

    A metric labelled only by model is its child (``.inc()``, ``.observe()``, ``.set_function()``);
    one with more labels takes the rest with ``.labels(...)``.
    """

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self.parent = metrics
        for attribute, metric in vars(metrics).items():
            if not hasattr(metric, "_labelnames"):
                continue
            if tuple(metric._labelnames) == ("model",):
                setattr(self, attribute, metric.labels(name))
            else:
                setattr(self, attribute, _Labelled(metric, name))
