"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Every metric the server exports, named ``zeroembed_*``, per stage as in TEI."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("zeroembed_requests", "Requests received, by op", ["op"], registry=r)
        self.texts = Counter("zeroembed_texts", "Texts encoded", registry=r)
        self.tokens = Counter("zeroembed_tokens", "Real tokens encoded", registry=r)
        self.padding_tokens = Counter("zeroembed_padding_tokens", "Padding tokens run (wasted work)", registry=r)
        self.errors = Counter("zeroembed_errors", "Error replies, by code", ["code"], registry=r)
        self.request_latency = Histogram(
            "zeroembed_request_latency_seconds", "From request received to reply sent", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenize_time = Histogram(
            "zeroembed_tokenize_seconds", "Tokenizing one request", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "zeroembed_queue_wait_seconds", "From queued to dispatched, per batch's oldest text",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.inference_time = Histogram(
            "zeroembed_inference_seconds", "Model run per batch, in the worker", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_runs = Counter(
            "zeroembed_batch_runs", "Batches run, by how: alone on all of a worker's threads, or side by side "
            "with others on one thread each (--parallel-batches)", ["mode"], registry=r,
        )
        self.batch_size = Histogram("zeroembed_batch_size", "Texts per batch", buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram(
            "zeroembed_batch_tokens", "Padded tokens per batch (size × width)", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("zeroembed_queue_depth", "Texts waiting for a worker", registry=r)
        self.in_flight = Gauge("zeroembed_in_flight_texts", "Texts accepted and not yet answered", registry=r)
        self.busy_workers = Gauge("zeroembed_busy_workers", "Workers running a batch", registry=r)
        self.workers = Gauge("zeroembed_workers", "Workers alive and ready", registry=r)
        self.worker_restarts = Counter("zeroembed_worker_restarts", "Workers replaced after dying", registry=r)
        # server/bert_adapter.py; its requests also count in zeroembed_requests, as they go through the broker
        self.bert_requests = Counter("zeroembed_bert_requests", "bert-as-service protocol requests, by kind",
                                     ["kind"], registry=r)
        self.bert_errors = Counter("zeroembed_bert_errors", "bert-as-service protocol error replies, by code",
                                   ["code"], registry=r)
        self.bert_held_replies = Gauge("zeroembed_bert_held_replies",
                                       "bert-as-service replies held until their client's subscription arrives",
                                       registry=r)
        self.bert_expired_replies = Counter("zeroembed_bert_expired_replies",
                                            "Held bert-as-service replies published unheard after the hold timeout",
                                            registry=r)
        self.cache_hits = Counter("zeroembed_cache_hits", "Texts answered from the embedding cache", registry=r)
        self.cache_misses = Counter("zeroembed_cache_misses", "Texts looked up in the cache and run", registry=r)
        self._http = None

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
