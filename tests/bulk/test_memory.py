"""Streaming end to end: the job's memory does not grow with the corpus (a stand-in model, no ONNX Runtime)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from zeroembed.bulk.embedded import _windows  # noqa: E402
from zeroembed.bulk.encoding import Encoding  # noqa: E402
from zeroembed.bulk.inputs import Columns  # noqa: E402
from zeroembed.bulk.job import JobSpec, run_job  # noqa: E402
from zeroembed.bulk.progress import Progress  # noqa: E402

DIM = 8


class StandInEngine:
    """Reads rows the way the embedded engine does (its windows), and returns a vector made from each text."""

    name, device = "stand-in", "cpu"

    def run(self, corpus, ranges, assembler, progress: Progress, encoding: Encoding) -> None:
        for positions, texts in _windows(corpus, ranges, assembler, 2048):
            lengths = np.fromiter(map(len, texts), dtype=np.int32, count=len(texts))
            vectors = np.repeat(lengths[:, None].astype(np.float32), DIM, axis=1)
            assembler.add(positions, vectors, lengths)
            progress.update(len(texts), int(lengths.sum()))


def _artifact() -> SimpleNamespace:
    manifest = SimpleNamespace(hidden_size=DIM, source="stand-in", precision="fp32", pooling="mean", normalize=False,
                               max_seq_length=256)
    return SimpleNamespace(manifest=manifest, raw_manifest={"model_sha256": "0" * 64}, name="stand-in",
                           path=Path("/stand-in"), model_path=Path("/stand-in/model.onnx"))


def _peak_bytes(tmp_path: Path, rows: int) -> tuple[int, int]:
    """Peak Python-heap bytes while embedding ``rows`` texts of ~400 characters, and the input's size."""
    path = tmp_path / f"corpus-{rows}.txt"
    line = "the quick brown fox jumps over the lazy dog and keeps running through the long grass " * 5
    with open(path, "w") as handle:
        for i in range(rows):
            handle.write(f"{i} {line}\n")
    spec = JobSpec([str(path)], tmp_path / f"out-{rows}", Columns(), rows_per_shard=5000, quiet=True)
    tracemalloc.start()
    try:
        summary = run_job(spec, _artifact(), StandInEngine(), encoding=Encoding(dim=DIM))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.rows == rows
    return peak, path.stat().st_size


def test_memory_stays_flat_as_the_corpus_grows(tmp_path: Path) -> None:
    _peak_bytes(tmp_path, 1_000)  # first use imports modules (pyarrow's readers, tqdm): not the job's memory
    small_peak, _ = _peak_bytes(tmp_path, 10_000)
    large_peak, large_size = _peak_bytes(tmp_path, 80_000)
    # Eight times the rows: the peak may grow only by the id check's 8 bytes a row, not with the texts.
    assert large_peak < small_peak + 8 * 80_000 + 2**20, (small_peak, large_peak)
    assert large_peak < large_size / 4, (large_peak, large_size)
