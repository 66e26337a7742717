"""The load generator: N virtual clients, each an ``AsyncClient`` in an asyncio loop, against running servers.

One process drives every virtual client by default (asyncio costs little per
client, which matters on small machines where the load generator shares the
cores with the server); ``processes > 1`` splits the clients over that many
spawned processes for machines where one Python loop would be the bottleneck.

A request's texts come from the corpus in order: request ``i`` takes the next
``size_i`` texts after request ``i - 1``'s (wrapping), ``size_i`` drawn from the
size distribution with the run's seed. So a run bounded by ``requests`` sends
the same texts whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scrape import server_stats, try_scrape


@dataclass(frozen=True)
class SizeDist:
    """Texts per request: fixed (``8``) or weighted (``1:50,8:30,64:20`` = sizes with relative weights)."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str | int) -> SizeDist:
        if isinstance(spec, int):
            spec = str(spec)
        sizes, weights = [], []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            size, _, weight = part.partition(":")
            try:
                sizes.append(int(size))
                weights.append(float(weight) if weight else 1.0)
            except ValueError:
                raise ValueError(f"bad batch size {part!r}: use N or N:WEIGHT,N:WEIGHT") from None
        if not sizes or min(sizes) < 1 or min(weights) <= 0:
            raise ValueError(f"bad batch size distribution {spec!r}: sizes must be >= 1, weights > 0")
        return cls(tuple(sizes), tuple(weights))

    @property
    def mean(self) -> float:
        return sum(s * w for s, w in zip(self.sizes, self.weights)) / sum(self.weights)

    def __str__(self) -> str:
        if len(self.sizes) == 1:
            return str(self.sizes[0])
        return ",".join(f"{s}:{w:g}" for s, w in zip(self.sizes, self.weights))


class RequestPlan:
    """Which texts request ``i`` sends; deterministic in (corpus, sizes, seed)."""

    def __init__(self, n_texts: int, sizes: SizeDist, seed: int) -> None:
        self.n_texts = n_texts
        self._rng = random.Random(seed)
        self._dist = sizes
        self._starts = [0]
        self._sizes: list[int] = []

    def get(self, i: int) -> tuple[int, int]:
        """(start, size) of request ``i``; texts are ``corpus[(start + k) % n]``."""
        while len(self._sizes) <= i:
            size = self._rng.choices(self._dist.sizes, self._dist.weights)[0]
            self._sizes.append(size)
            self._starts.append(self._starts[-1] + size)
        return self._starts[i] % self.n_texts, self._sizes[i]


def take(texts: list[str], start: int, size: int) -> list[str]:
    n = len(texts)
    if start + size <= n:
        return texts[start:start + size]
    return [texts[(start + k) % n] for k in range(size)]


@dataclass
class LoadConfig:
    endpoints: list[str]
    concurrency: int
    sizes: SizeDist
    requests: int | None = None  # total, over all clients
    duration: float | None = None  # seconds; when both are set, whichever comes first
    timeout: float = 30.0
    warmup: int = 0  # requests sent (and not measured) before the run
    processes: int = 1
    seed: int = 0
    metrics_urls: list[str] = field(default_factory=list)
    progress: bool = True
    label: str = ""
    http_model: str = "default"  # the ``model`` field of HTTP requests (http:// endpoints)

    def __post_init__(self) -> None:
        if self.requests is None and self.duration is None:
            raise ValueError("bound the run with requests or duration")
        if self.concurrency < 1 or self.processes < 1:
            raise ValueError("concurrency and processes must be >= 1")


@dataclass
class Shard:
    """What one process records: per-request latency, texts and tokens, and errors by kind."""

    latencies: list[float] = field(default_factory=list)
    texts: int = 0
    tokens: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_start: float = math.inf
    last_end: float = 0.0

    def merge(self, other: Shard) -> None:
        self.latencies += other.latencies
        self.texts += other.texts
        self.tokens += other.tokens
        self.requests += other.requests
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.first_start = min(self.first_start, other.first_start)
        self.last_end = max(self.last_end, other.last_end)


class HttpEmbedClient:
    """An OpenAI ``POST {base}/embeddings`` client with ``AsyncClient``'s shape (``async with``, ``encode``),
    so the same virtual clients drive any OpenAI-compatible server: zeroembed's HTTP route or a peer's."""

    def __init__(self, base_url: str, model: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.timeout = timeout
        self._session = None

    async def __aenter__(self) -> HttpEmbedClient:
        import aiohttp

        # One connection per virtual client, kept alive, as AsyncClient keeps one socket.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                              timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def encode(self, texts: list[str]) -> np.ndarray:
        async with self._session.post(self.url, json={"input": texts, "model": self.model}) as reply:
            if reply.status != 200:
                raise HttpStatusError(reply.status, (await reply.text())[:200])
            body = await reply.json()
        data = sorted(body["data"], key=lambda item: item["index"])
        if len(data) != len(texts):
            raise HttpStatusError(reply.status, f"{len(data)} vectors for {len(texts)} texts")
        return np.asarray([item["embedding"] for item in data], dtype=np.float32)


class HttpStatusError(Exception):
    """An HTTP embeddings request answered with something other than 200 and its vectors."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.code = status


def open_client(cfg: LoadConfig):
    """The client a virtual client uses: HTTP for ``http://`` endpoints (OpenAI route), else ZeroMQ."""
    if cfg.endpoints[0].startswith(("http://", "https://")):
        return HttpEmbedClient(cfg.endpoints[0], cfg.http_model, cfg.timeout)
    from zeroembed.client import AsyncClient

    return AsyncClient(cfg.endpoints, timeout=cfg.timeout)


def error_kind(exc: BaseException) -> str:
    """``ClassName`` or ``ClassName[code]`` for zeroembed errors."""
    code = getattr(exc, "code", None)
    code = getattr(code, "value", code)
    return f"{type(exc).__name__}[{code}]" if code else type(exc).__name__


async def _run_clients(cfg: LoadConfig, texts: list[str], token_counts: list[int] | None,
                       deadline_wall: float | None, shard_index: int, shards: int, on_done=None) -> Shard:
    """Run this process's share of the virtual clients; request indices ``shard_index, +shards, ...``."""
    plan = RequestPlan(len(texts), cfg.sizes, cfg.seed)
    shard = Shard()
    counter = iter(range(shard_index, cfg.requests if cfg.requests is not None else 1 << 62, shards))
    # Wall clock (time.time) to agree across processes; perf_counter for each latency.
    perf_deadline = None if deadline_wall is None else time.perf_counter() + (deadline_wall - time.time())
    my_clients = len(range(shard_index, cfg.concurrency, shards))

    async def one_client() -> None:
        async with open_client(cfg) as client:
            while True:
                if perf_deadline is not None and time.perf_counter() >= perf_deadline:
                    return
                i = next(counter, None)
                if i is None:
                    return
                start, size = plan.get(i)
                batch = take(texts, start, size)
                t0 = time.perf_counter()
                try:
                    await client.encode(batch)
                except Exception as exc:  # every failure is a result, counted by kind
                    kind = error_kind(exc)
                    shard.errors[kind] = shard.errors.get(kind, 0) + 1
                    ok = False
                else:
                    ok = True
                t1 = time.perf_counter()
                shard.requests += 1
                shard.first_start = min(shard.first_start, t0)
                shard.last_end = max(shard.last_end, t1)
                if ok:
                    shard.latencies.append(t1 - t0)
                    shard.texts += size
                    if token_counts is not None:
                        shard.tokens += sum(token_counts[(start + k) % len(texts)] for k in range(size))
                if on_done is not None:
                    on_done(size if ok else 0)

    await asyncio.gather(*(one_client() for _ in range(my_clients)))
    if shard.first_start is not math.inf:
        # perf_counter values are per process; keep durations only.
        shard.last_end -= shard.first_start
        shard.first_start = 0.0
    return shard


async def _warmup(cfg: LoadConfig, texts: list[str]) -> None:
    if cfg.warmup <= 0:
        return
    plan = RequestPlan(len(texts), cfg.sizes, cfg.seed + 1)
    async with open_client(cfg) as client:
        sem = asyncio.Semaphore(cfg.concurrency)

        async def one(i: int) -> None:
            async with sem:
                start, size = plan.get(i)
                try:
                    await client.encode(take(texts, start, size))
                except Exception:  # warmup failures show up again in the run itself
                    pass

        await asyncio.gather(*(one(i) for i in range(cfg.warmup)))


def _process_main(cfg: LoadConfig, texts, token_counts, shard_index, shards, start_at, deadline_wall, progress,
                  results) -> None:
    """A spawned load process: wait for the common start, run, put its shard on the results queue."""
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)

    def on_done(n: int) -> None:
        with progress.get_lock():
            progress.value += 1

    try:
        shard = asyncio.run(_run_clients(cfg, texts, token_counts, deadline_wall, shard_index, shards, on_done))
    except BaseException as exc:  # the parent reports it instead of waiting forever
        shard = Shard(errors={f"load process failed: {error_kind(exc)}": 1})
    results.put(shard)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_load(cfg: LoadConfig, texts: list[str], token_counts: list[int] | None = None) -> dict[str, Any]:
    """Warm up, scrape, run the load, scrape again; a result dict (see :func:`summarize`)."""
    if not texts:
        raise ValueError("the corpus is empty")
    asyncio.run(_warmup(cfg, texts))
    before, warnings = try_scrape(cfg.metrics_urls)
    bar = _progress_bar(cfg)
    started = time.time()
    deadline_wall = None if cfg.duration is None else started + cfg.duration
    if cfg.processes == 1:
        def on_done(n: int) -> None:
            if bar is not None:
                bar.update(1)
        shard = asyncio.run(_run_clients(cfg, texts, token_counts, deadline_wall, 0, 1, on_done))
    else:
        shard = _run_processes(cfg, texts, token_counts, deadline_wall, bar)
    wall = time.time() - started
    if bar is not None:
        bar.close()
    after, more = try_scrape(cfg.metrics_urls)
    warnings += [w for w in more if w not in warnings]
    return summarize(cfg, shard, wall, server_stats(before, after) if cfg.metrics_urls else None,
                     token_counts is not None, warnings)


def _run_processes(cfg, texts, token_counts, deadline_wall, bar) -> Shard:
    shards = min(cfg.processes, cfg.concurrency)
    ctx = multiprocessing.get_context("spawn")
    progress = ctx.Value("q", 0)  # requests done, over every process: drives the progress bar
    results = ctx.Queue()
    start_at = time.time() + 1.0  # every process starts its clients at the same moment
    if deadline_wall is not None:
        deadline_wall += 1.0
    procs = [ctx.Process(target=_process_main, daemon=True,
                         args=(cfg, texts, token_counts, k, shards, start_at, deadline_wall, progress, results))
             for k in range(shards)]
    for proc in procs:
        proc.start()
    total, got, seen = Shard(), 0, 0
    try:
        while got < shards:
            try:
                total.merge(results.get(timeout=0.2))
                got += 1
            except Exception:  # queue.Empty: no shard yet
                if not any(p.is_alive() for p in procs) and results.empty():
                    raise RuntimeError("a load process died without reporting") from None
            if bar is not None:
                now = progress.value
                bar.update(now - seen)
                seen = now
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    return total


def _progress_bar(cfg: LoadConfig):
    if not cfg.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    desc = cfg.label or f"c={cfg.concurrency}"
    total = cfg.requests if cfg.requests is not None else None
    return tqdm(total=total, desc=desc, unit="req", leave=False, dynamic_ncols=True, mininterval=0.5)


def summarize(cfg: LoadConfig, shard: Shard, wall: float, server: dict | None, client_tokens: bool,
              warnings: list[str]) -> dict[str, Any]:
    """The numbers of one run. Rates use the span from the first request sent to the last reply."""
    span = shard.last_end - shard.first_start if shard.requests else 0.0
    span = span if span > 0 else wall
    lat = shard.latencies
    tokens = shard.tokens if client_tokens else (server or {}).get("tokens")
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    return {
        "label": cfg.label,
        "endpoints": cfg.endpoints,
        "concurrency": cfg.concurrency,
        "processes": cfg.processes,
        "batch_size": str(cfg.sizes),
        "requests": shard.requests,
        "ok_requests": len(lat),
        "texts": shard.texts,
        "tokens": tokens,
        "tokens_source": "client tokenizer" if client_tokens else ("server metrics" if tokens is not None else None),
        "seconds": span,
        "texts_per_s": shard.texts / span if span else 0.0,
        "tokens_per_s": tokens / span if (tokens is not None and span) else None,
        "requests_per_s": len(lat) / span if span else 0.0,
        "latency_ms": {"p50": ms(percentile(lat, 50)), "p95": ms(percentile(lat, 95)),
                       "p99": ms(percentile(lat, 99)), "max": ms(max(lat) if lat else None),
                       "mean": ms(sum(lat) / len(lat) if lat else None)},
        "errors": dict(sorted(shard.errors.items())),
        "error_count": sum(shard.errors.values()),
        "server": server,
        "warnings": warnings,
    }
