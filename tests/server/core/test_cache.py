"""The embedding cache: the LRU on its own, then repeats answered by a real server without a worker."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zeroembed.server.core.cache import EmbeddingCache

from ..servers import RunningServer, start_server


class FakeRequest:
    """What the cache needs of a PendingRequest."""

    def __init__(self, count: int, output: str = "sentence", model_output: str = "sentence_embedding") -> None:
        self.output, self.model_output = output, model_output
        self.filled: dict[int, np.ndarray] = {}
        self.count = count

    def fill(self, index: int, vector: np.ndarray) -> None:
        self.filled[index] = vector


def vec(x: float) -> np.ndarray:
    return np.full(4, x, dtype=np.float32)


def test_lru_evicts_the_least_recently_used():
    cache = EmbeddingCache(2)
    cache.put("a", vec(1))
    cache.put("b", vec(2))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", vec(3))
    assert cache.get("b") is None and len(cache) == 2
    np.testing.assert_array_equal(cache.get("a"), vec(1))
    np.testing.assert_array_equal(cache.get("c"), vec(3))


def test_stored_vectors_are_copies():
    cache = EmbeddingCache(4)
    buffer = vec(1)
    cache.put("a", buffer)
    buffer[:] = 9
    np.testing.assert_array_equal(cache.get("a"), vec(1))


def test_lookup_fills_hits_and_returns_misses_then_store_fills_the_cache():
    cache = EmbeddingCache(10)
    first = FakeRequest(2)
    assert cache.lookup(first, ["x", "y"], pretokenized=False) == [0, 1]
    cache.store(first, 0, vec(1))
    cache.store(first, 1, vec(2))
    second = FakeRequest(3)
    assert cache.lookup(second, ["y", "z", "x"], pretokenized=False) == [1]
    np.testing.assert_array_equal(second.filled[0], vec(2))
    np.testing.assert_array_equal(second.filled[2], vec(1))


def test_keys_separate_outputs_and_pretokenized_texts():
    cache = EmbeddingCache(10)
    request = FakeRequest(1)
    cache.lookup(request, ["a b"], pretokenized=False)
    cache.store(request, 0, vec(1))
    assert cache.lookup(FakeRequest(1, model_output="pooled_embedding"), ["a b"], pretokenized=False) == [0]
    assert cache.lookup(FakeRequest(1), [["a", "b"]], pretokenized=True) == [0]
    assert cache.lookup(FakeRequest(1, output="tokens", model_output="token_embeddings"), ["a b"], pretokenized=False) == [0]
    assert cache.lookup(FakeRequest(1), ["a b"], pretokenized=False) == []


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        EmbeddingCache(0)


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cached_server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(default_artifact, tmp_path_factory.mktemp("cache"), "--workers", "1",
                           "--threads-per-worker", "1", "--cache-size", "4")
    yield running
    assert running.stop() == 0, running.log()


def counters(server: RunningServer) -> dict[str, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    names = ("zeroembed_cache_hits_total", "zeroembed_cache_misses_total", "zeroembed_batch_size_count")
    # One model: each series has one line, labelled with its name.
    return {name: float(re.search(rf'^{name}{{model="[^"]*"}} (\S+)$', text, re.M).group(1)) for name in names}


def test_a_repeated_text_is_a_cache_hit(cached_server):
    with cached_server.client() as client:
        before = counters(cached_server)
        first = client.encode(["a text seen twice"])
        middle = counters(cached_server)
        second = client.encode(["a text seen twice"])
        after = counters(cached_server)
    np.testing.assert_array_equal(first, second)
    assert middle["zeroembed_cache_misses_total"] - before["zeroembed_cache_misses_total"] == 1
    assert after["zeroembed_cache_hits_total"] - middle["zeroembed_cache_hits_total"] == 1
    assert after["zeroembed_batch_size_count"] == middle["zeroembed_batch_size_count"]  # no worker ran it


def test_a_mixed_request_runs_only_its_misses(cached_server):
    with cached_server.client() as client:
        known = client.encode(["known one", "known two"])
        before = counters(cached_server)
        mixed = client.encode(["known two", "new text", "known one"])
        after = counters(cached_server)
        fresh = client.encode(["new text"])
        uncached = client.encode(["known one", "known two"], normalize=False)  # another output: not cached
    assert after["zeroembed_cache_hits_total"] - before["zeroembed_cache_hits_total"] == 2
    assert after["zeroembed_cache_misses_total"] - before["zeroembed_cache_misses_total"] == 1
    np.testing.assert_array_equal(mixed[0], known[1])
    np.testing.assert_array_equal(mixed[2], known[0])
    np.testing.assert_array_equal(mixed[1], fresh[0])
    assert not np.allclose(np.linalg.norm(uncached, axis=1), 1.0)


def test_cached_answers_keep_tokens_and_token_output(cached_server):
    with cached_server.client() as client:
        client.encode(["tokens too"])
        vectors, pieces = client.encode(["tokens too"], show_tokens=True)
        token_vectors = client.encode(["tokens too"], output="tokens")
    assert pieces == [["[CLS]", "token", "##s", "too", "[SEP]"]] and vectors.shape == (1, 384)
    assert token_vectors[0].shape == (5, 384)
