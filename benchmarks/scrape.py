"""Reading a server's Prometheus metrics (``zeroembed_*``, server/metrics.py) and their deltas over a run."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from urllib.parse import urlsplit

# name{labels} value  — the text exposition format, without timestamps (prometheus_client writes none).
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

Sample = dict[str, float]  # "name{labels}" -> value


def default_metrics_url(endpoint: str, port: int = 9100) -> str:
    """``http://HOST:9100/metrics`` for ``tcp://HOST:PORT``; wildcard hosts become 127.0.0.1."""
    parts = urlsplit(endpoint.replace("tcp://", "http://", 1))
    host = parts.hostname or "127.0.0.1"
    if host in {"*", "0.0.0.0", "::"}:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def parse(text: str) -> Sample:
    samples: Sample = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match:
            try:
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            except ValueError:
                continue
    return samples


def scrape(url: str, timeout: float = 5.0) -> Sample:
    """One scrape; raises OSError (URLError included) when the endpoint cannot be read."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a user-given metrics URL
        return parse(response.read().decode("utf-8", "replace"))


def try_scrape(urls: list[str]) -> tuple[list[Sample | None], list[str]]:
    """Scrape every URL; a failure gives ``None`` and a warning line instead of an exception."""
    out: list[Sample | None] = []
    warnings = []
    for url in urls:
        try:
            out.append(scrape(url))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            out.append(None)
            warnings.append(f"cannot read metrics at {url}: {exc}")
    return out, warnings


def _delta(before: Sample, after: Sample, name: str) -> float:
    """The change of ``name``: one series (``name{labels}``), or a bare name summed over its label sets
    (every model of a server)."""
    if "{" in name:
        return after.get(name, 0.0) - before.get(name, 0.0)
    return _total(after, name) - _total(before, name)


def _total(sample: Sample, name: str) -> float:
    prefix = name + "{"
    return sum(value for key, value in sample.items() if key == name or key.startswith(prefix))


def _sum_delta(pairs: list[tuple[Sample, Sample]], name: str) -> float:
    return sum(_delta(b, a, name) for b, a in pairs)


def _mean(pairs, base: str) -> float | None:
    count = _sum_delta(pairs, base + "_count")
    return _sum_delta(pairs, base + "_sum") / count if count > 0 else None


def server_stats(before: list[Sample | None], after: list[Sample | None]) -> dict | None:
    """Batch statistics over a run, summed over every server whose metrics were read both times.

    ``padding_ratio`` is padding / (real tokens + padding): the share of the model's work spent on padding.
    Times are in seconds.
    """
    pairs = [(b, a) for b, a in zip(before, after) if b is not None and a is not None]
    if not pairs:
        return None
    tokens = _sum_delta(pairs, "zeroembed_tokens_total")
    padding = _sum_delta(pairs, "zeroembed_padding_tokens_total")
    errors: dict[str, float] = {}
    for b, a in pairs:
        for key in a:
            if key.startswith("zeroembed_errors_total{"):
                code = re.search(r'code="([^"]*)"', key)
                value = _delta(b, a, key)
                if value and code:
                    errors[code.group(1)] = errors.get(code.group(1), 0) + value
    return {
        "servers": len(pairs),
        "texts": _sum_delta(pairs, "zeroembed_texts_total"),
        "tokens": tokens,
        "padding_tokens": padding,
        "padding_ratio": padding / (tokens + padding) if tokens + padding > 0 else None,
        "batches": _sum_delta(pairs, "zeroembed_batch_size_count"),
        "mean_batch_size": _mean(pairs, "zeroembed_batch_size"),
        "mean_batch_tokens": _mean(pairs, "zeroembed_batch_tokens"),
        "mean_queue_wait_s": _mean(pairs, "zeroembed_queue_wait_seconds"),
        "mean_inference_s": _mean(pairs, "zeroembed_inference_seconds"),
        "inference_s_total": _sum_delta(pairs, "zeroembed_inference_seconds_sum"),
        "mean_tokenize_s": _mean(pairs, "zeroembed_tokenize_seconds"),
        "mean_request_latency_s": _mean(pairs, "zeroembed_request_latency_seconds"),
        "errors": errors,
    }
