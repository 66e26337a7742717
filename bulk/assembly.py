"""Putting vectors that arrive in any order back into whole shards, and writing each once it is whole.

Engines return rows out of order (length-sorted windows, retried batches, Ray
blocks), keyed by position. Only the shards being filled are held, each as
one preallocated array, so memory stays at a few shards however long the job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .output import OutputDir, ShardPlan


@dataclass(eq=False)
class _Shard:
    start: int
    vectors: np.ndarray  # (rows, dim) float32
    tokens: np.ndarray  # (rows,) int32
    filled: np.ndarray  # (rows,) bool
    ids: np.ndarray | None  # (rows,) the input's ids; None when ids are positions
    count: int = 0


class ShardAssembler:
    """Collects rows by position into the shards of ``plan``; writes each shard to ``out`` when it is whole."""

    def __init__(self, plan: ShardPlan, out: OutputDir, dim: int, id_kind: str) -> None:
        self.plan = plan
        self.out = out
        self.dim = dim
        self.id_kind = id_kind
        self._open: dict[int, _Shard] = {}
        self.rows_written = 0
        self.tokens_written = 0
        self.shards_written = 0

    def _shard(self, index: int) -> _Shard:
        shard = self._open.get(index)
        if shard is None:
            start, stop = self.plan.bounds(index)
            size = stop - start
            ids = None if self.id_kind == "position" else np.empty(size, dtype=np.int64 if self.id_kind == "int64"
                                                                    else object)
            shard = self._open[index] = _Shard(start, np.empty((size, self.dim), np.float32),
                                               np.zeros(size, np.int32), np.zeros(size, bool), ids)
        return shard

    def add_ids(self, first: int, ids: pa.Array) -> None:
        """The input's ids of the rows at positions ``first``, ``first + 1``, ... (before their vectors)."""
        values = ids.to_numpy(zero_copy_only=False)
        done = 0
        while done < len(values):
            index = (first + done) // self.plan.rows_per_shard
            shard = self._shard(index)
            offset = first + done - shard.start
            take = min(len(values) - done, len(shard.tokens) - offset)
            shard.ids[offset:offset + take] = values[done:done + take]
            done += take

    def add(self, positions: np.ndarray, vectors: np.ndarray, num_tokens: np.ndarray,
            ids: np.ndarray | None = None) -> None:
        """Vectors of rows at ``positions`` (any order); with ``ids`` when :meth:`add_ids` was not called."""
        shards = positions // self.plan.rows_per_shard
        for index in np.unique(shards).tolist():
            rows = np.nonzero(shards == index)[0]
            shard = self._shard(index)
            offsets, first = np.unique(positions[rows] - shard.start, return_index=True)
            rows = rows[first]
            fresh = ~shard.filled[offsets]  # a row delivered twice (a retried batch) counts once
            rows, offsets = rows[fresh], offsets[fresh]
            shard.vectors[offsets] = vectors[rows]
            shard.tokens[offsets] = num_tokens[rows]
            if ids is not None and shard.ids is not None:
                shard.ids[offsets] = ids[rows]
            shard.filled[offsets] = True
            shard.count += len(rows)
            if shard.count == len(shard.tokens):
                self._write(index, shard)

    def _write(self, index: int, shard: _Shard) -> None:
        del self._open[index]
        if shard.ids is None:
            ids = pa.array(np.arange(shard.start, shard.start + len(shard.tokens), dtype=np.int64))
        else:
            ids = pa.array(shard.ids, pa.int64() if self.id_kind == "int64" else pa.string())
        self.out.write_shard(index, ids, shard.vectors, shard.tokens)
        self.rows_written += len(shard.tokens)
        self.tokens_written += int(shard.tokens.sum())
        self.shards_written += 1

    @property
    def pending(self) -> list[int]:
        """Shards begun and not yet whole."""
        return sorted(self._open)
