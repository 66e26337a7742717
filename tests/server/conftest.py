"""Fixtures: one real server on the default model per test module, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..dependencies import require
from .servers import RunningServer, start_server


@pytest.fixture(scope="module")
def server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server on the default model for a module's tests: 2 workers, small batches."""
    running = start_server(default_artifact, tmp_path_factory.mktemp("server"), "--workers", "2",
                           "--threads-per-worker", "1", "--max-batch-size", "8")
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="session")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random-weight BERT cross-encoder (64 positions) and its rerank artifact: ``(model dir, artifact)``.

    Its weights are wider than BERT's usual init, so the scores of different documents differ by more
    than the 1e-4 the server's scores are checked to.
    """
    require("sentence_transformers", "export")  # exporting a reranker needs its reference
    from zeroembed.benchmarks.randommodel import make_random_cross_encoder
    from zeroembed.export import export_model

    root = tmp_path_factory.mktemp("reranker")
    model = make_random_cross_encoder(root / "model", model_type="bert", layers=2, hidden=32, heads=2,
                                      max_positions=64, init_range=0.2)
    export_model(model, root / "artifact")
    return model, root / "artifact"
