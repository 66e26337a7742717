"""An LRU cache of sentence vectors, so repeated texts are answered without a worker.

The broker looks a request's texts up after tokenizing them (so token counts,
``show_tokens`` and over-length checks behave exactly as without a cache), fills
the hits into the request at once, and queues only the misses. Vectors are
stored as the model output gave them, before any re-normalisation the request
asks for, keyed by that output (``sentence_embedding`` or ``pooled_embedding``,
which is what ``normalize`` selects) and by whether the text came pre-tokenized.
Only ``output="sentence"`` requests use it. One thread (the broker's) owns it.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..metrics import Metrics


class EmbeddingCache:
    """At most ``size`` vectors, least recently used evicted first."""

    def __init__(self, size: int, metrics: Metrics | None = None) -> None:
        if size < 1:
            raise ValueError(f"cache size must be at least 1, got {size}")
        self.size = size
        self.metrics = metrics
        self._vectors: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        # Requests with misses in flight -> the cache key of each of their texts (None: not cacheable).
        self._keys: weakref.WeakKeyDictionary[Any, list[Hashable | None]] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._vectors)

    # ------------------------------------------------------------------ plain LRU

    def get(self, key: Hashable) -> np.ndarray | None:
        vector = self._vectors.get(key)
        if vector is not None:
            self._vectors.move_to_end(key)
        return vector

    def put(self, key: Hashable, vector: np.ndarray) -> None:
        self._vectors[key] = np.array(vector, dtype=np.float32, copy=True)  # never a view of a reply buffer
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)

    # ------------------------------------------------------------------ the broker's two calls

    @staticmethod
    def key(source: str, text: str | Sequence[str], pretokenized: bool) -> Hashable:
        """What decides a text's raw vector: the model output read, and the text as the tokenizer sees it."""
        return (source, True, tuple(text)) if pretokenized else (source, False, text)

    def lookup(self, request: Any, texts: Sequence[str] | Sequence[Sequence[str]], pretokenized: bool) -> list[int]:
        """Fill ``request``'s cached texts into it; return the indices of the texts still to run.

        ``request`` is an :class:`~zeroembed.server.core.jobs.EncodeJob`; a request that is
        not ``output="sentence"`` is passed through untouched (every index is a miss).
        """
        if request.output != "sentence":
            return list(range(len(texts)))
        keys = [self.key(request.model_output, text, pretokenized) for text in texts]
        misses = []
        for index, key in enumerate(keys):
            vector = self.get(key)
            if vector is None:
                misses.append(index)
            else:
                request.fill(index, vector)
        if self.metrics is not None:
            self.metrics.cache_hits.inc(len(texts) - len(misses))
            self.metrics.cache_misses.inc(len(misses))
        if misses:
            self._keys[request] = keys
        return misses

    def store(self, request: Any, index: int, vector: np.ndarray) -> None:
        """Keep the vector a worker computed for ``request``'s text ``index`` (if it was looked up)."""
        keys = self._keys.get(request)
        if keys is not None:
            self.put(keys[index], vector)
