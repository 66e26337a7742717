"""The check before any work: duplicate ids are found, across files, and named."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import write_csv, write_jsonl

pytest.importorskip("pyarrow")

from zeroembed.bulk.errors import InputError  # noqa: E402
from zeroembed.bulk.inputs import Columns, resolve_inputs  # noqa: E402
from zeroembed.bulk.scan import scan  # noqa: E402


def test_duplicate_string_ids_across_files_are_named(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"d{i}", "text": "t"} for i in range(50)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "d7", "text": "t"}, {"id": "new", "text": "t"}])
    with pytest.raises(InputError, match=r"1 id\(s\) appear more than once in column 'id': 'd7'"):
        scan(resolve_inputs([str(a), str(b)]), Columns())


def test_duplicate_integer_ids_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [{"id": i % 9, "text": "t"} for i in range(10)])
    with pytest.raises(InputError, match=r"appear more than once in column 'id': 0"):
        scan(resolve_inputs([str(path)]), Columns())


def test_unique_ids_pass_and_rows_are_counted_per_file(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": "t"} for i in range(5000)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": f"b{i}", "text": "t"} for i in range(3)])
    corpus = scan(resolve_inputs([str(a), str(b)]), Columns())
    assert corpus.rows == (5000, 3) and corpus.total_rows == 5003 and corpus.first_rows() == [0, 5000]
