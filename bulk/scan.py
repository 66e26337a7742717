"""The check before any work: every input read once, its rows counted, its ids checked unique.

Reading is cheap beside the model (pyarrow parses millions of rows a second,
the model embeds hundreds), so the job reads everything once up front: a bad
row, an unreadable file or a duplicate id stops it before a shard is written,
and the progress bar knows the total. Ids are kept as 8-byte hashes only
(integer ids as themselves), so the check costs 8 bytes a row, not the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import InputError
from .inputs import Columns, InputFile, read_chunks

_SHOW = 5  # duplicate ids named in the error, at most


@dataclass(frozen=True)
class Corpus:
    """The checked inputs: files in order, rows in each, and what the ids are."""

    files: tuple[InputFile, ...]
    rows: tuple[int, ...]  # rows per file
    columns: Columns
    id_kind: str  # "int64" or "string" (an id column), or "position" (none)

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    def first_rows(self) -> list[int]:
        """The position of each file's first row."""
        return list(np.cumsum([0, *self.rows[:-1]]).tolist())

    def describe(self) -> dict:
        return {"files": [dict(f.describe(), rows=n) for f, n in zip(self.files, self.rows)],
                "text_column": self.columns.text, "id_column": self.columns.id if self.id_kind != "position" else None}


def scan(files: Sequence[InputFile], columns: Columns) -> Corpus:
    """Read every input once: check it, count its rows, and check ids are unique. Raises :class:`InputError`."""
    rows: list[int] = []
    kinds: dict[str, str] = {}  # id kind -> the first file with it
    hashes: list[np.ndarray] = []
    for file in files:
        count = 0
        kind = "position"
        for chunk in read_chunks(file, columns):
            count += len(chunk)
            if chunk.ids is not None:
                kind = "int64" if pa.types.is_integer(chunk.ids.type) else "string"
                hashes.append(_hashes(chunk.ids))
        rows.append(count)
        if count:
            kinds.setdefault(kind, file.path)
    if len(kinds) > 1:
        described = "; ".join(f"{path}: {_kind_words(kind)}" for kind, path in kinds.items())
        raise InputError(f"the inputs do not agree on ids ({described}); give every input the same id column, "
                         "or none")
    if not sum(rows):
        raise InputError("the inputs hold no rows: nothing to embed")
    id_kind = next(iter(kinds))
    if hashes:
        _check_unique(files, columns, np.concatenate(hashes), id_kind)
    return Corpus(tuple(files), tuple(rows), columns, id_kind)


def _kind_words(kind: str) -> str:
    return {"int64": "integer ids", "string": "string ids", "position": "no id column"}[kind]


def _hashes(ids: pa.Array) -> np.ndarray:
    if pa.types.is_integer(ids.type):
        return ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return np.fromiter(map(hash, ids.to_pylist()), dtype=np.int64, count=len(ids))


def _check_unique(files: Sequence[InputFile], columns: Columns, hashes: np.ndarray, id_kind: str) -> None:
    hashes.sort()
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if not len(repeated):
        return
    if id_kind == "int64":
        duplicates = repeated.tolist()
    else:
        # Equal hashes of string ids: read them again to tell real duplicates from hash collisions.
        wanted, seen, dup = set(repeated.tolist()), set(), []
        for file in files:
            for chunk in read_chunks(file, columns):
                for value in chunk.ids.to_pylist():
                    if hash(value) in wanted:
                        if value in seen:
                            dup.append(value)
                        seen.add(value)
        duplicates = list(dict.fromkeys(dup))
        if not duplicates:
            return
    shown = ", ".join(repr(d) for d in duplicates[:_SHOW]) + (" ..." if len(duplicates) > _SHOW else "")
    raise InputError(f"{len(duplicates)} id(s) appear more than once in column {columns.id!r}: {shown}; "
                     "ids must be unique")
