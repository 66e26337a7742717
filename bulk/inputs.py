"""Reading a corpus: files, directories and globs of JSON Lines, CSV, Parquet or plain text, streamed.

Every format is read a block at a time with pyarrow (plain text a few thousand
lines at a time), so a file of any size costs only a block of memory. A row's
*position* counts rows across all inputs in order (files sorted by path within
a directory or glob); it is the id when the inputs have no id column, and it
decides which shard a row lands in.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .errors import InputError

FORMATS: dict[str, str] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".txt": "text", ".text": "text",
}
_BLOCK_BYTES = 1 << 20  # pyarrow's read block: rows arrive in blocks of about this much input
_TEXT_LINES = 4096  # plain text: lines per chunk


@dataclass(frozen=True)
class InputFile:
    """One input file, with what identifies its contents for a resumed job (size and modification time)."""

    path: str
    format: str
    size: int
    mtime_ns: int

    def describe(self) -> dict:
        return {"path": self.path, "format": self.format, "bytes": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Columns:
    """Which column holds the text and which the id (None: ids are positions)."""

    text: str = "text"
    id: str | None = "id"
    id_required: bool = False  # the user named the id column: its absence is an error, not positions


@dataclass(slots=True)
class Chunk:
    """Consecutive rows of one file: ``texts`` (str), ``ids`` (None when the input has no id column)."""

    file: InputFile
    first_row: int  # row index within the file of the chunk's first row, from 0
    texts: pa.Array
    ids: pa.Array | None

    def __len__(self) -> int:
        return len(self.texts)


def resolve_inputs(specs: Sequence[str]) -> list[InputFile]:
    """The input files named by ``specs`` (files, directories, globs), in order; each one once."""
    files: list[InputFile] = []
    seen: set[str] = set()
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not found:
                raise InputError(f"input directory {spec} holds no {_known()} files")
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not found:
                raise InputError(f"input pattern {spec} matches no files")
        elif os.path.isfile(spec):
            found = [spec]
        else:
            raise InputError(f"input {spec} does not exist")
        for path in found:
            resolved = os.path.realpath(path)
            if resolved in seen:
                continue
            seen.add(resolved)
            files.append(_input_file(path))
    if not files:
        raise InputError("no inputs given")
    return files


def _known() -> str:
    return ", ".join(sorted(set(FORMATS)))


def _input_file(path: str) -> InputFile:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"cannot tell the format of {path} from its name: use one of {_known()}")
    try:
        stat = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror or exc}") from None
    return InputFile(path=os.path.abspath(path), format=FORMATS[suffix], size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def read_chunks(file: InputFile, columns: Columns, *, skip_rows: int = 0) -> Iterator[Chunk]:
    """The file's rows as chunks of text and id arrays, streamed; rows before ``skip_rows`` are read past.

    Raises :class:`InputError` naming the file (and the row, for a text that is
    not a string) on anything that cannot be read.
    """
    try:
        yield from _read(file, columns, skip_rows)
    except InputError:
        raise
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read input {file.path}: {_one_line(exc)}") from None


def _read(file: InputFile, columns: Columns, skip_rows: int) -> Iterator[Chunk]:
    row = 0
    for batch, names in _batches(file, columns):
        if row + batch.num_rows <= skip_rows:
            row += batch.num_rows
            continue
        texts = _texts(file, batch, names, columns, row)
        ids = _ids(file, batch, names, columns, row)
        start = max(0, skip_rows - row)
        if start:
            texts, ids = texts[start:], (ids[start:] if ids is not None else None)
        yield Chunk(file, row + start, texts, ids)
        row += batch.num_rows


def _batches(file: InputFile, columns: Columns) -> Iterator[tuple[pa.RecordBatch, list[str]]]:
    """Record batches of the file with the columns the job reads, and every column name the file has."""
    wanted = [columns.text] + ([columns.id] if columns.id else [])
    if file.format == "text":
        yield from _text_batches(file, columns)
        return
    if file.size == 0:  # an empty file among others holds no rows; all of them empty is the job's error
        return
    if file.format == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(file.path)
        names = parquet.schema_arrow.names
        _check_columns(file, names, columns)
        for batch in parquet.iter_batches(batch_size=_TEXT_LINES, columns=[c for c in wanted if c in names]):
            yield batch, names
        return
    if file.format == "csv":
        import pyarrow.csv as pcsv

        # Every CSV field is text: the text column stays a string even where it looks like a number.
        reader = pcsv.open_csv(file.path, read_options=pcsv.ReadOptions(block_size=_BLOCK_BYTES),
                               convert_options=pcsv.ConvertOptions(column_types={columns.text: pa.string()}))
    else:
        import pyarrow.json as pjson

        try:
            reader = pjson.open_json(file.path, read_options=pjson.ReadOptions(block_size=_BLOCK_BYTES))
        except pa.ArrowInvalid as exc:
            if "Empty JSON stream" in str(exc):  # blank lines only
                return
            raise
    names = reader.schema.names
    _check_columns(file, names, columns)
    for batch in reader:
        yield batch, names


def _text_batches(file: InputFile, columns: Columns) -> Iterator[tuple[pa.RecordBatch, list[str]]]:
    """Plain text: one document per line, no id column (ids are positions)."""
    if columns.id_required:
        raise InputError(f"{file.path} is plain text, which has no columns: --id-column {columns.id} cannot apply")
    with open(file.path, "rb") as raw:
        lines = io.TextIOWrapper(raw, encoding="utf-8", newline=None)
        while True:
            chunk = [line.rstrip("\n") for _, line in zip(range(_TEXT_LINES), lines)]
            if not chunk:
                return
            yield pa.record_batch([pa.array(chunk, pa.string())], names=[columns.text]), [columns.text]


def _check_columns(file: InputFile, names: list[str], columns: Columns) -> None:
    present = ", ".join(names) or "none"
    if columns.text not in names:
        raise InputError(f"{file.path} has no text column {columns.text!r} (its columns: {present}); "
                         "name it with --text-column")
    if columns.id and columns.id_required and columns.id not in names:
        raise InputError(f"{file.path} has no id column {columns.id!r} (its columns: {present}); "
                         "name it with --id-column, or leave it out to use row positions as ids")


def _texts(file: InputFile, batch: pa.RecordBatch, names: list[str], columns: Columns, row: int) -> pa.Array:
    texts = batch.column(columns.text)
    if pa.types.is_large_string(texts.type) or pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.string())
    if not pa.types.is_string(texts.type):
        bad = next((i for i, v in enumerate(texts) if v.is_valid), 0)
        raise InputError(f"{file.path} row {row + bad + 1}: text column {columns.text!r} holds "
                         f"{texts[bad].as_py()!r} ({texts.type}), not a string")
    if texts.null_count:
        bad = next(i for i, v in enumerate(texts) if not v.is_valid)
        raise InputError(f"{file.path} row {row + bad + 1}: text column {columns.text!r} is empty (null), "
                         "not a string")
    return texts


def _ids(file: InputFile, batch: pa.RecordBatch, names: list[str], columns: Columns, row: int) -> pa.Array | None:
    if not columns.id or columns.id not in batch.schema.names:
        return None
    ids = batch.column(columns.id)
    if pa.types.is_integer(ids.type):
        ids = ids.cast(pa.int64())
    elif pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_string_view(ids.type):
        ids = ids.cast(pa.string())
    else:
        raise InputError(f"{file.path}: id column {columns.id!r} holds {ids.type}; ids must be strings or integers")
    if ids.null_count:
        bad = next(i for i, v in enumerate(ids) if not v.is_valid)
        raise InputError(f"{file.path} row {row + bad + 1}: id column {columns.id!r} is empty (null)")
    return ids


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
