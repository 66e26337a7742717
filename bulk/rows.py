"""Which rows a run still has to embed, read in position order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from .inputs import read_chunks
from .output import ShardPlan
from .scan import Corpus


@dataclass(slots=True)
class Rows:
    """Rows at consecutive positions from ``first``: their texts, and the input's ids (None: positions)."""

    first: int
    texts: pa.Array
    ids: pa.Array | None

    def __len__(self) -> int:
        return len(self.texts)


def todo_ranges(plan: ShardPlan, done: set[int]) -> list[tuple[int, int]]:
    """Positions ``[start, stop)`` of the shards not yet complete, consecutive shards merged."""
    ranges: list[tuple[int, int]] = []
    for shard in range(plan.count):
        if shard in done:
            continue
        start, stop = plan.bounds(shard)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], stop)
        else:
            ranges.append((start, stop))
    return ranges


def read_range(corpus: Corpus, start: int, stop: int) -> Iterator[Rows]:
    """The rows at positions ``[start, stop)``, streamed; files wholly outside the range are not opened."""
    for file, first, count in zip(corpus.files, corpus.first_rows(), corpus.rows):
        if first + count <= start or first >= stop:
            continue
        for chunk in read_chunks(file, corpus.columns, skip_rows=max(0, start - first)):
            position = first + chunk.first_row
            if position >= stop:
                break
            take = min(len(chunk), stop - position)
            yield Rows(position, chunk.texts[:take], chunk.ids[:take] if chunk.ids is not None else None)
