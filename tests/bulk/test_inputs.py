"""Reading inputs: every format, directories and globs, positions, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import write_csv, write_jsonl, write_parquet

pytest.importorskip("pyarrow")

from zeroembed.bulk.errors import InputError  # noqa: E402
from zeroembed.bulk.inputs import Columns, read_chunks, resolve_inputs  # noqa: E402
from zeroembed.bulk.rows import read_range  # noqa: E402
from zeroembed.bulk.scan import scan  # noqa: E402

ROWS = [{"id": f"d{i}", "text": f"text number {i}", "extra": i} for i in range(20)]


def _texts(files, columns=Columns()) -> list[str]:
    return [t for f in files for c in read_chunks(f, columns) for t in c.texts.to_pylist()]


@pytest.mark.parametrize("writer, suffix", [(write_jsonl, "jsonl"), (write_csv, "csv"), (write_parquet, "parquet")])
def test_each_format_reads_texts_and_ids(tmp_path: Path, writer, suffix: str) -> None:
    files = resolve_inputs([str(writer(tmp_path / f"in.{suffix}", ROWS))])
    corpus = scan(files, Columns())
    assert corpus.total_rows == 20 and corpus.id_kind == "string"
    rows = list(read_range(corpus, 3, 17))
    assert [t for r in rows for t in r.texts.to_pylist()] == [r["text"] for r in ROWS[3:17]]
    assert [i for r in rows for i in r.ids.to_pylist()] == [r["id"] for r in ROWS[3:17]]
    assert rows[0].first == 3


def test_csv_text_that_looks_like_numbers_stays_text(tmp_path: Path) -> None:
    files = resolve_inputs([str(write_csv(tmp_path / "n.csv", [{"id": i, "text": str(i)} for i in range(5)]))])
    assert _texts(files) == ["0", "1", "2", "3", "4"]
    assert scan(files, Columns()).id_kind == "int64"


def test_plain_text_is_one_document_per_line_with_positions_as_ids(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first line\nsecond line\r\n\nfourth\n", encoding="utf-8")
    corpus = scan(resolve_inputs([str(tmp_path / "a.txt")]), Columns())
    assert corpus.id_kind == "position" and corpus.total_rows == 4
    assert _texts(corpus.files) == ["first line", "second line", "", "fourth"]


def test_directories_and_globs_in_path_order_positions_across_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("b1\nb2\n")
    (tmp_path / "d" / "a.txt").write_text("a1\n")
    (tmp_path / "d" / "notes.md").write_text("not an input\n")
    (tmp_path / "c.txt").write_text("c1\nc2\n")
    files = resolve_inputs([str(tmp_path / "d"), str(tmp_path / "c*.txt"), str(tmp_path / "d" / "a.txt")])
    assert [Path(f.path).name for f in files] == ["a.txt", "b.txt", "c.txt"]  # a.txt once
    corpus = scan(files, Columns())
    assert corpus.first_rows() == [0, 1, 3]
    assert [(r.first, r.texts.to_pylist()) for r in read_range(corpus, 2, 4)] == [(2, ["b2"]), (3, ["c1"])]


def test_missing_text_column_names_the_columns_present(tmp_path: Path) -> None:
    files = resolve_inputs([str(write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "body": "x"}]))])
    with pytest.raises(InputError, match=r"no text column 'text' \(its columns: id, body\)"):
        scan(files, Columns())


def test_missing_named_id_column_names_the_columns_present(tmp_path: Path) -> None:
    files = resolve_inputs([str(write_parquet(tmp_path / "in.parquet", ROWS))])
    with pytest.raises(InputError, match=r"no id column 'doc' \(its columns: id, text, extra\)"):
        scan(files, Columns(id="doc", id_required=True))


def test_without_the_default_id_column_ids_are_positions(tmp_path: Path) -> None:
    files = resolve_inputs([str(write_csv(tmp_path / "in.csv", [{"text": "a"}, {"text": "b"}]))])
    assert scan(files, Columns()).id_kind == "position"


def test_non_string_text_names_the_file_and_row(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", [{"id": 1, "text": "ok"}, {"id": 2, "text": None}])
    with pytest.raises(InputError, match=rf"{path} row 2: text column 'text' is empty"):
        scan(resolve_inputs([str(path)]), Columns())
    path = write_jsonl(tmp_path / "num.jsonl", [{"text": 5}, {"text": 6}])
    with pytest.raises(InputError, match=rf"{path} row 1: text column 'text' holds 5 \(int64\), not a string"):
        scan(resolve_inputs([str(path)]), Columns())


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", ROWS)
    bad = tmp_path / "b.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match=rf"cannot read input {bad}"):
        scan(resolve_inputs([str(good), str(bad)]), Columns())
    broken = tmp_path / "c.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": "cut off\n')
    with pytest.raises(InputError, match=rf"cannot read input {broken}"):
        scan(resolve_inputs([str(broken)]), Columns())


def test_missing_inputs_and_unknown_formats_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        resolve_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(InputError, match="matches no files"):
        resolve_inputs([str(tmp_path / "*.csv")])
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(InputError, match="cannot tell the format"):
        resolve_inputs([str(tmp_path / "x.docx")])


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="no rows"):
        scan(resolve_inputs([str(tmp_path / "empty.txt")]), Columns())


def test_inputs_must_agree_on_ids(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "a"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    with pytest.raises(InputError, match="do not agree on ids"):
        scan(resolve_inputs([str(a), str(b)]), Columns())
