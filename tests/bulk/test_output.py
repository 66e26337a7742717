"""The output folder: shards written whole and recorded, resumed, and another job's folder refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import pyarrow.parquet as pq  # noqa: E402

from zeroembed.bulk.assembly import ShardAssembler  # noqa: E402
from zeroembed.bulk.errors import OutputError  # noqa: E402
from zeroembed.bulk.output import OutputDir, ShardPlan, shard_schema  # noqa: E402
from zeroembed.bulk.rows import todo_ranges  # noqa: E402

DIM = 4
IDENTITY = {"model": {"sha256": "abc", "dim": DIM}, "inputs": {"files": ["a"]}, "rows_per_shard": 3}


def _out(path: Path, identity=IDENTITY, rows: int = 8, id_kind: str = "position") -> OutputDir:
    return OutputDir(path, identity, ShardPlan(rows, identity["rows_per_shard"]), shard_schema(DIM, id_kind))


def test_plan_cuts_positions_into_shards() -> None:
    plan = ShardPlan(8, 3)
    assert plan.count == 3 and [plan.bounds(k) for k in range(3)] == [(0, 3), (3, 6), (6, 8)]
    assert todo_ranges(plan, {1}) == [(0, 3), (6, 8)]
    assert todo_ranges(plan, set()) == [(0, 8)]


def test_rows_in_any_order_make_whole_shards_written_once(tmp_path: Path) -> None:
    out = _out(tmp_path / "o")
    assert out.open(overwrite=False) == set()
    assembler = ShardAssembler(out.plan, out, DIM, "position")
    vectors = np.arange(8 * DIM, dtype=np.float32).reshape(8, DIM)
    order = np.array([7, 0, 4, 2, 1])
    assembler.add(order, vectors[order], np.full(5, 3, np.int32))
    assert sorted(json.loads((tmp_path / "o" / "manifest.json").read_text())["shards"]) == ["0"]
    assert assembler.pending == [1, 2]
    rest = np.array([3, 5, 6, 6])  # 6 twice: a retried batch; counted once
    assembler.add(rest, vectors[rest], np.full(4, 3, np.int32))
    assert assembler.pending == [] and assembler.rows_written == 8
    table = pq.read_table(tmp_path / "o" / "shards")
    assert table.schema == shard_schema(DIM, "position")
    assert sorted(table.column("id").to_pylist()) == list(range(8))
    got = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()))
    assert all(np.array_equal(got[i], vectors[i]) for i in range(8))


def test_string_ids_given_before_vectors(tmp_path: Path) -> None:
    import pyarrow as pa

    out = _out(tmp_path / "o", rows=4, id_kind="string")
    out.open(overwrite=False)
    assembler = ShardAssembler(out.plan, out, DIM, "string")
    assembler.add_ids(0, pa.array(["a", "b", "c", "d"]))
    assembler.add(np.array([3, 2, 1, 0]), np.zeros((4, DIM), np.float32), np.ones(4, np.int32))
    assert pq.read_table(tmp_path / "o" / "shards").column("id").to_pylist() == ["a", "b", "c", "d"]


def test_reopened_folder_keeps_recorded_shards_and_drops_the_rest(tmp_path: Path) -> None:
    out = _out(tmp_path / "o")
    out.open(overwrite=False)
    ShardAssembler(out.plan, out, DIM, "position").add(np.arange(3), np.zeros((3, DIM), np.float32),
                                                       np.ones(3, np.int32))
    shards = tmp_path / "o" / "shards"
    (shards / ".part-00001.parquet.tmp").write_bytes(b"half")  # a crash mid-write
    (shards / "part-00002.parquet").write_bytes(b"renamed, never recorded")  # a crash before the manifest
    assert _out(tmp_path / "o").open(overwrite=False) == {0}
    assert sorted(p.name for p in shards.iterdir()) == ["part-00000.parquet"]


def test_another_jobs_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    _out(tmp_path / "o").open(overwrite=False)
    other = dict(IDENTITY, model={"sha256": "other", "dim": DIM})
    with pytest.raises(OutputError, match=r"another job \(different model\).*--overwrite"):
        _out(tmp_path / "o", other).open(overwrite=False)
    other_inputs = dict(IDENTITY, inputs={"files": ["b"]})
    with pytest.raises(OutputError, match=r"different inputs"):
        _out(tmp_path / "o", other_inputs).open(overwrite=False)
    assert _out(tmp_path / "o", other).open(overwrite=True) == set()
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["model"]["sha256"] == "other"


def test_a_folder_that_is_no_jobs_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not empty"):
            _out(tmp_path / "o").open(overwrite=overwrite)
    assert (tmp_path / "o" / "precious.txt").read_text() == "keep me"
