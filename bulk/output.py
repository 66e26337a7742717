"""The output folder: Parquet shards of vectors and the ``manifest.json`` that says which are complete.

Shard ``k`` holds the rows at positions ``[k × rows_per_shard, (k + 1) × rows_per_shard)``,
so which rows belong to which shard never depends on the engine or on the
order results arrive in. A shard is written under a temporary name and renamed
when whole; only then is it recorded in the manifest, itself replaced
atomically. A shard file the manifest does not list is not done: a resumed job
deletes it and writes it again. That is what makes a job exactly once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError

MANIFEST = "manifest.json"
FORMAT = "zeroembed-embed/1"
SHARDS = "shards"  # their own folder, so `pandas.read_parquet(out / "shards")` reads exactly the vectors
_PART = "part-{:05d}.parquet"


def shard_schema(dim: int, id_kind: str) -> pa.Schema:
    """The shards' columns: ``id``, ``embedding`` (fixed-size list of float32) and ``num_tokens``."""
    id_type = pa.string() if id_kind == "string" else pa.int64()
    return pa.schema([("id", id_type), ("embedding", pa.list_(pa.float32(), dim)), ("num_tokens", pa.int32())])


@dataclass(frozen=True)
class ShardPlan:
    """How ``total_rows`` rows are cut into shards of ``rows_per_shard``."""

    total_rows: int
    rows_per_shard: int

    @property
    def count(self) -> int:
        return -(-self.total_rows // self.rows_per_shard)

    def bounds(self, shard: int) -> tuple[int, int]:
        """The positions ``[start, stop)`` of a shard's rows."""
        start = shard * self.rows_per_shard
        return start, min(start + self.rows_per_shard, self.total_rows)

    def size(self, shard: int) -> int:
        start, stop = self.bounds(shard)
        return stop - start


class OutputDir:
    """An output folder of one job: its manifest, and the shards it lists as complete."""

    def __init__(self, path: Path, identity: dict[str, Any], plan: ShardPlan, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.identity = identity  # what makes two runs the same job: model, inputs, columns, shard size
        self.plan = plan
        self.schema = schema
        self.manifest: dict[str, Any] = {}

    # -- opening ---------------------------------------------------------------------------------------------

    def open(self, *, overwrite: bool) -> set[int]:
        """Make or reopen the folder for this job; the shards already complete.

        Refuses a folder of another job unless ``overwrite`` (then starts it
        afresh), and a non-empty folder that is no job's at all.
        """
        existing = self._read_manifest()
        if existing is None:
            if self.path.exists() and any(self.path.iterdir()):
                raise OutputError(f"output folder {self.path} is not empty and holds no {MANIFEST} of "
                                  "`zeroembed embed`; choose a new or empty folder")
        elif {key: existing.get(key) for key in self.identity} != self.identity:
            if not overwrite:
                raise OutputError(f"output folder {self.path} holds vectors of {self._differs(existing)}; "
                                  "pass --overwrite to replace them, or choose another folder")
            self._clear(existing)
            existing = None
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SHARDS).mkdir(exist_ok=True)
        done = {int(k) for k, v in (existing or {}).get("shards", {}).items()
                if (self.path / v["file"]).is_file()}
        self.manifest = existing or {"format": FORMAT, **self.identity, "shards": {}, "runs": []}
        self.manifest["shards"] = {str(k): self.manifest["shards"][str(k)] for k in sorted(done)}
        self._remove_strays(done)
        self.save()
        return done

    def _read_manifest(self) -> dict | None:
        try:
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise OutputError(f"{self.path / MANIFEST} cannot be read ({exc}); remove the folder to start afresh") \
                from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise OutputError(f"{self.path / MANIFEST} is not a manifest of `zeroembed embed`; choose another folder")
        return manifest

    def _differs(self, existing: dict) -> str:
        what = [name for name in self.identity if existing.get(name) != self.identity[name]]
        return "another job (different " + (", ".join(what) or "settings") + ")"

    def _clear(self, existing: dict) -> None:
        for shard in existing.get("shards", {}).values():
            (self.path / shard["file"]).unlink(missing_ok=True)
        self._remove_strays(set())
        (self.path / MANIFEST).unlink(missing_ok=True)

    def _remove_strays(self, done: set[int]) -> None:
        """Delete shard files that are not complete: temporaries, and renamed ones never recorded."""
        keep = {_PART.format(k) for k in done}
        for path in (self.path / SHARDS).glob("*part-*.parquet*"):
            if path.name not in keep:
                path.unlink()

    # -- writing ---------------------------------------------------------------------------------------------

    def write_shard(self, shard: int, ids: pa.Array, vectors: np.ndarray, num_tokens: np.ndarray) -> None:
        """Write one whole shard (rows in position order) and record it as complete."""
        dim = vectors.shape[1]
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        table = pa.Table.from_arrays([ids, embedding, pa.array(num_tokens, pa.int32())], schema=self.schema)
        name = f"{SHARDS}/{_PART.format(shard)}"
        # A dot name until whole: readers of the folder (pyarrow, pandas, Ray) skip it.
        temporary = self.path / SHARDS / f".{_PART.format(shard)}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, self.path / name)
        self.manifest["shards"][str(shard)] = {"file": name, "rows": len(table), "tokens": int(num_tokens.sum())}
        self.save()

    def record_run(self, run: dict[str, Any]) -> None:
        """Add one run's counts and timings; on the last shard, the job's totals."""
        self.manifest["runs"].append(run)
        shards = self.manifest["shards"]
        complete = len(shards) == self.plan.count
        self.manifest["complete"] = complete
        self.manifest["counts"] = {"rows": sum(s["rows"] for s in shards.values()),
                                   "tokens": sum(s["tokens"] for s in shards.values()),
                                   "shards": len(shards), "shards_planned": self.plan.count}
        self.save()

    def save(self) -> None:
        self.manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        temporary = self.path / f"{MANIFEST}.tmp"
        temporary.write_text(json.dumps(self.manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path / MANIFEST)

    def shard_files(self) -> list[Path]:
        """The complete shards' files, in shard order."""
        return [self.path / v["file"] for _, v in sorted(self.manifest["shards"].items(), key=lambda kv: int(kv[0]))]
