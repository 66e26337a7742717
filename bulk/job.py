"""One bulk job from start to end: check the inputs, open the output, run an engine over what is left.

The order is what keeps promises: every input is read and checked (columns,
text types, unique ids) before the output folder is touched, and the output
folder is checked against the job before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .assembly import ShardAssembler
from .encoding import Encoding
from .errors import BulkError, EngineError
from .inputs import Columns, resolve_inputs
from .output import OutputDir, ShardPlan, shard_schema
from .progress import Progress, Summary
from .rows import todo_ranges
from .scan import Corpus, scan

DEFAULT_ROWS_PER_SHARD = 10_000


class Engine(Protocol):
    """What runs the model: :class:`~zeroembed.bulk.embedded.EmbeddedEngine` or ``RayEngine``."""

    name: str
    device: str

    def run(self, corpus: Corpus, ranges: list[tuple[int, int]], assembler: ShardAssembler,
            progress: Progress, encoding: Encoding) -> None: ...


@dataclass(frozen=True)
class JobSpec:
    """What to embed, and where the vectors go."""

    inputs: Sequence[str]
    out: Path
    columns: Columns = field(default_factory=Columns)
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD
    overwrite: bool = False
    quiet: bool = False
    prompt_name: str | None = None  # one of the model's prompts (--prompt-name), or
    prompt: str | None = None  # a literal one (--prompt); neither: the model's default prompt, if any
    dimensions: int | None = None  # Matryoshka: the first N of each vector (--dimensions)


def model_identity(artifact) -> dict[str, Any]:
    """The model fields a job's manifest records and a resumed job must match."""
    manifest = artifact.manifest
    checksum = artifact.raw_manifest.get("model_sha256") or _sha256(artifact.model_path)
    return {"name": artifact.name, "source": manifest.source, "path": str(artifact.path.resolve()),
            "sha256": checksum, "dim": manifest.hidden_size, "precision": manifest.precision,
            "pooling": manifest.pooling, "normalize": manifest.normalize,
            "max_seq_length": manifest.max_seq_length}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_inputs(spec: JobSpec) -> Corpus:
    """Read and check every input (before anything is written); raises :class:`~.errors.InputError`."""
    if spec.rows_per_shard < 1:
        raise BulkError("--rows-per-shard must be at least 1")
    return scan(resolve_inputs(spec.inputs), spec.columns)


def run_job(spec: JobSpec, artifact, engine: Engine, *, corpus: Corpus | None = None,
            progress: Progress | None = None, encoding: Encoding | None = None) -> Summary:
    """Embed what is left of the job into ``spec.out``; the run's summary. Raises :class:`BulkError`.

    The spec's prompt and dimensions are resolved against the model before the output folder is
    touched (``encoding`` gives them resolved already, for a stand-in model).
    """
    corpus = corpus or check_inputs(spec)
    encoding = encoding or Encoding.resolve(artifact, prompt_name=spec.prompt_name, prompt=spec.prompt,
                                            dimensions=spec.dimensions)
    plan = ShardPlan(corpus.total_rows, spec.rows_per_shard)
    identity = json.loads(json.dumps({"model": _identity_of(model_identity(artifact)),
                                      "embedding": encoding.identity(), "inputs": corpus.describe(),
                                      "rows_per_shard": spec.rows_per_shard}))
    out = OutputDir(spec.out, identity, plan, shard_schema(encoding.dim, corpus.id_kind))
    done = out.open(overwrite=spec.overwrite)
    ranges = todo_ranges(plan, done)
    done_rows = sum(plan.size(k) for k in done)
    progress = progress or Progress(corpus.total_rows, done_rows, quiet=spec.quiet)
    assembler = ShardAssembler(plan, out, encoding.dim, corpus.id_kind)
    started, wall = time.monotonic(), time.time()
    error: BaseException | None = None
    try:
        if ranges:
            engine.run(corpus, ranges, assembler, progress, encoding)
            if assembler.pending:
                raise EngineError(f"the engine ended with shards {assembler.pending} unfinished; "
                                  "run the same command again to resume")
    except BaseException as exc:  # recorded in the manifest's runs, then raised
        error = exc
        raise
    finally:
        progress.close()
        seconds = time.monotonic() - started
        out.record_run({"engine": engine.name, "device": engine.device, "prompt_name": encoding.prompt_name,
                        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall)),
                        "seconds": round(seconds, 3), "rows": assembler.rows_written,
                        "tokens": assembler.tokens_written, "shards_written": assembler.shards_written,
                        "texts_per_s": round(assembler.rows_written / seconds, 2) if seconds else 0.0,
                        "tokens_per_s": round(assembler.tokens_written / seconds, 1) if seconds else 0.0,
                        "error": None if error is None else (str(error) or type(error).__name__)})
    return Summary(out=str(spec.out), rows=assembler.rows_written, tokens=assembler.tokens_written,
                   seconds=seconds, shards_written=assembler.shards_written, shards_skipped=len(done),
                   shards_total=plan.count, engine=engine.name)


def _identity_of(model: dict[str, Any]) -> dict[str, Any]:
    """The model fields that decide the vectors (not where the artifact lies)."""
    return {k: v for k, v in model.items() if k != "path"}
